"""Inspect and validate an input scene (a raster GDAL reads) before any output is written.

:func:`inspect_scene` opens the header, checks everything that can be checked cheaply, and returns a
:class:`SceneInfo` value object with the georeferencing that travels with the data to the final COG:
one odc-geo ``GeoBox`` (shape, affine, CRS), read from the file once and passed on whole.
Checks that need the pixels (all-nodata, truncation in the middle of the file) happen while tiling,
which writes to a temporary location and removes it on failure.

Bands: an alpha band is a mask (:mod:`eoseg.scene.validity`), not a model band, so ``band_count`` counts
the model bands only. A scene georeferenced only by ground control points is refused, or, with
``warp_gcps``, read through a GDAL warped VRT (:func:`open_scene`) onto the regular grid the GCPs define.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from eoseg.errors import (
    CorruptSceneError,
    EmptySceneError,
    MissingCRSError,
    SceneNotFoundError,
    UnsupportedDtypeError,
    reason,
)
from eoseg.geometry import GeoBox, GeoBoxProperties, make_geobox
from eoseg.io import storage
from eoseg.scene.validity import alpha_band_index, model_band_indexes

if TYPE_CHECKING:
    from rasterio.io import DatasetReaderBase

SUPPORTED_DTYPES = (
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float32", "float64",
)  # fmt: skip


@dataclass(frozen=True)
class SceneInfo(GeoBoxProperties):
    """What eoseg needs to know about a scene; small, immutable, picklable.

    Attributes:
        uri: the scene's normalised location.
        geobox: the pixel grid: shape ``(height, width)``, affine transform and CRS (``None`` for
            ungeoreferenced input).
        band_count: number of model bands (the alpha band, if any, is not one).
        dtype: NumPy name of the (single) pixel type of the model bands.
        nodata: the file's nodata value (an ``int`` for integer types), or ``None``.
        band_names: one unique name per band.
        band_descriptions: the file's band descriptions (``""`` where none).
        acquired: the ``TIFFTAG_DATETIME`` or ``ACQUISITIONDATE`` tag, if any.
        band_indexes: the 1-based indexes of the model bands in the file.
        alpha_band: the 1-based index of the alpha band, or ``None``.
        band_metadata: per model band: ``scale``, ``offset`` (physical = DN * scale + offset), ``unit``,
            ``colorinterp`` and ``source_band``; pixels are stored and modelled as the file's raw DN.
        warp_gcps: the scene is read through a warped VRT built from its GCPs (:func:`open_scene`).
    """

    uri: str
    geobox: GeoBox
    band_count: int
    dtype: str
    nodata: float | int | None
    band_names: tuple[str, ...]
    band_descriptions: tuple[str, ...]
    acquired: str | None
    band_indexes: tuple[int, ...] = ()
    alpha_band: int | None = None
    band_metadata: dict[str, list[Any]] = field(default_factory=dict)
    warp_gcps: bool = False

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (what a task passes on): the grid as ``height``, ``width``,
        ``crs_wkt`` and ``transform`` (``[a, b, c, d, e, f]``) beside the other fields."""
        return {
            "uri": self.uri,
            "height": self.height,
            "width": self.width,
            "band_count": self.band_count,
            "dtype": self.dtype,
            "crs_wkt": self.crs_wkt,
            "transform": list(self.transform),
            "nodata": self.nodata,
            "band_names": list(self.band_names),
            "band_descriptions": list(self.band_descriptions),
            "acquired": self.acquired,
            "band_indexes": list(self.band_indexes),
            "alpha_band": self.alpha_band,
            "band_metadata": self.band_metadata,
            "warp_gcps": self.warp_gcps,
        }


def _band_names(descriptions: tuple[str | None, ...], colorinterp: tuple[str, ...]) -> tuple[str, ...]:
    names = []
    for index, (description, interp) in enumerate(zip(descriptions, colorinterp, strict=True), start=1):
        if description:
            names.append(description)
        elif interp not in ("undefined", "gray", "grey", "alpha", "palette") or len(colorinterp) == 1:
            names.append(interp if interp not in ("undefined",) else f"band_{index}")
        else:
            names.append(f"band_{index}")
    if len(set(names)) != len(names):  # e.g. two 'undefined' bands: fall back to positional names
        names = [f"band_{i}" for i in range(1, len(names) + 1)]
    return tuple(names)


def open_scene_dataset(uri: str, *, warp_gcps: bool = False) -> DatasetReaderBase:
    """The scene opened with rasterio (call it inside :func:`eoseg.io.storage.gdal_env`); caller closes it.

    With ``warp_gcps`` and a GCP-georeferenced scene, the dataset is a ``WarpedVRT`` onto the regular grid
    GDAL derives from the GCPs (a polynomial fit, as ``gdalwarp`` does; nearest neighbour), with an alpha
    band marking the area outside the scene when the scene has no nodata value.
    """
    import rasterio
    from rasterio.vrt import WarpedVRT

    dataset = rasterio.open(storage.gdal_path(uri))
    gcps, gcp_crs = dataset.gcps
    if not (warp_gcps and gcps and dataset.crs is None):
        return dataset
    return WarpedVRT(dataset, src_crs=gcp_crs, crs=gcp_crs, add_alpha=dataset.nodata is None)


@contextlib.contextmanager
def open_scene(uri: str, *, warp_gcps: bool = False) -> Iterator[DatasetReaderBase]:
    """:func:`open_scene_dataset` in eoseg's GDAL environment, closed (with its source) on exit."""
    with storage.gdal_env(uri):
        dataset = open_scene_dataset(uri, warp_gcps=warp_gcps)
        try:
            yield dataset
        finally:
            source = getattr(dataset, "src_dataset", None)
            dataset.close()
            if source is not None:
                source.close()


def _band_metadata(dataset: DatasetReaderBase, indexes: tuple[int, ...]) -> dict[str, list[Any]]:
    """Scale, offset, unit, colour interpretation and file index of each model band."""
    return {
        "scale": [float(dataset.scales[i - 1]) for i in indexes],
        "offset": [float(dataset.offsets[i - 1]) for i in indexes],
        "unit": [dataset.units[i - 1] or "" for i in indexes],
        "colorinterp": [dataset.colorinterp[i - 1].name for i in indexes],
        "source_band": list(indexes),
    }


def _check_georeferenced(dataset: DatasetReaderBase, uri: str, allow_ungeoreferenced: bool) -> str | None:
    """The CRS as WKT; refuses GCP-only and CRS-less scenes unless allowed."""
    if dataset.crs is not None:
        return str(dataset.crs.to_wkt())
    if dataset.gcps[0]:
        raise MissingCRSError(
            f"{uri}: the raster is georeferenced only by {len(dataset.gcps[0])} ground control points "
            "(GCPs), not by a regular grid; pass --warp-gcps to warp it onto one, or warp it first "
            "(gdalwarp -r near SCENE WARPED.tif)."
        )
    if not allow_ungeoreferenced:
        raise MissingCRSError(
            f"{uri}: the raster has no coordinate reference system, so outputs could not be placed "
            "on a map. Assign one (gdal_edit.py -a_srs EPSG:XXXX) or pass --allow-ungeoreferenced "
            "to produce pixel-grid outputs without a CRS."
        )
    return None


def _check_readable_edges(dataset: DatasetReaderBase, uri: str) -> None:
    """Read the first and last internal block of each band: a cheap probe for truncated files."""
    block_rows, block_cols = dataset.block_shapes[0]
    last_row = max(0, dataset.height - block_rows)
    last_col = max(0, dataset.width - block_cols)
    from rasterio.windows import Window as RioWindow

    for row_off, col_off in ((0, 0), (last_row, last_col)):
        window = RioWindow(col_off, row_off, min(block_cols, dataset.width), min(block_rows, dataset.height))
        try:
            dataset.read(window=window)
        except Exception as error:  # rasterio raises RasterioIOError or CPLE_* errors
            raise CorruptSceneError(
                f"{uri}: the file is truncated or corrupt: reading pixels at row {row_off}, column "
                f"{col_off} failed ({reason(error)}). Re-download or re-export the scene and try again."
            ) from error


def inspect_scene(
    uri: str, *, allow_ungeoreferenced: bool = False, probe_pixels: bool = True, warp_gcps: bool = False
) -> SceneInfo:
    """Open ``uri`` (local path or ``s3://``), validate it, and describe it.

    Args:
        uri: the scene's location.
        allow_ungeoreferenced: accept a raster without a CRS (outputs are then pixel grids without CRS).
        probe_pixels: read the first and last block to catch truncated files early.
        warp_gcps: read a GCP-georeferenced scene warped onto a regular grid (else it is refused).

    Raises:
        SceneNotFoundError: nothing exists at ``uri``.
        EmptySceneError: the file has 0 bytes or the raster has no pixels.
        CorruptSceneError: GDAL cannot read it.
        MissingCRSError: no CRS and ``allow_ungeoreferenced`` is False, or GCPs only and no ``warp_gcps``.
        UnsupportedDtypeError: e.g. complex pixels.
    """
    from rasterio.errors import RasterioIOError

    uri = storage.normalise_uri(uri)
    try:
        found = storage.exists(uri)
    except Exception as error:  # credentials/endpoint problems surface here for s3://
        raise SceneNotFoundError(
            f"{uri}: cannot check whether the scene exists ({error}). For s3:// URIs check "
            "AWS_ENDPOINT_URL and your AWS credentials."
        ) from error
    if not found:
        raise SceneNotFoundError(f"{uri}: scene not found. Check the path (or bucket and key for s3://).")
    if storage.size_of(uri) == 0:
        raise EmptySceneError(
            f"{uri}: the file is empty (0 bytes); an upload or copy probably failed. Copy the scene again."
        )
    try:
        with open_scene(uri, warp_gcps=warp_gcps) as dataset:
            if dataset.width == 0 or dataset.height == 0 or dataset.count == 0:
                raise EmptySceneError(
                    f"{uri}: the raster has no pixels ({dataset.width} x {dataset.height} "
                    f"x {dataset.count} bands)."
                )
            indexes = model_band_indexes(dataset)
            dtypes = {dataset.dtypes[i - 1] for i in indexes}
            if len(dtypes) != 1:
                raise UnsupportedDtypeError(
                    f"{uri}: bands have different data types {sorted(dtypes)}; "
                    "convert them to one type (e.g. gdal_translate -ot)."
                )
            dtype = dataset.dtypes[indexes[0] - 1]
            if dtype not in SUPPORTED_DTYPES:
                raise UnsupportedDtypeError(
                    f"{uri}: pixel type {dtype} is not supported (supported: {', '.join(SUPPORTED_DTYPES)}). "
                    "Convert it first, e.g. take the magnitude of complex data."
                )
            crs_wkt = _check_georeferenced(dataset, uri, allow_ungeoreferenced)
            if probe_pixels:
                _check_readable_edges(dataset, uri)
            nodata = dataset.nodata
            if (
                isinstance(nodata, float)
                and not math.isnan(nodata)
                and np.issubdtype(np.dtype(dtype), np.integer)
                and nodata.is_integer()
            ):
                nodata = int(nodata)
            tags = dataset.tags()
            descriptions = tuple(dataset.descriptions[i - 1] for i in indexes)
            return SceneInfo(
                uri=uri,
                geobox=make_geobox((dataset.height, dataset.width), dataset.transform, crs_wkt),
                band_count=len(indexes),
                dtype=dtype,
                nodata=nodata,
                band_names=_band_names(descriptions, tuple(dataset.colorinterp[i - 1].name for i in indexes)),
                band_descriptions=tuple(d or "" for d in descriptions),
                acquired=tags.get("TIFFTAG_DATETIME") or tags.get("ACQUISITIONDATE"),
                band_indexes=indexes,
                alpha_band=alpha_band_index(dataset),
                band_metadata=_band_metadata(dataset, indexes),
                warp_gcps=warp_gcps,
            )
    except RasterioIOError as error:
        raise CorruptSceneError(
            f"{uri}: GDAL cannot read this file as a raster ({error}). It may be corrupt, truncated or not "
            "a raster; re-download or re-export it."
        ) from error
