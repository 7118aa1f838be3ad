"""Inspect and validate an input scene (a raster GDAL reads) before any output is written.

:func:`inspect_scene` opens the header, checks everything that can be checked cheaply, and returns a
:class:`SceneInfo` value object with the georeferencing that travels with the data to the final COG:
one odc-geo ``GeoBox`` (shape, affine, CRS), read from the file once and passed on whole.
Checks that need the pixels (all-nodata, truncation in the middle of the file) happen while tiling,
which writes to a temporary location and removes it on failure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from eoseg.errors import (
    CorruptSceneError,
    EmptySceneError,
    MissingCRSError,
    SceneNotFoundError,
    UnsupportedDtypeError,
)
from eoseg.geometry import GeoBox, GeoBoxProperties, make_geobox
from eoseg.io import storage

if TYPE_CHECKING:
    from rasterio.io import DatasetReader

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
        band_count: number of bands.
        dtype: NumPy name of the (single) pixel type.
        nodata: the file's nodata value (an ``int`` for integer types), or ``None``.
        band_names: one unique name per band.
        band_descriptions: the file's band descriptions (``""`` where none).
        acquired: the ``TIFFTAG_DATETIME`` or ``ACQUISITIONDATE`` tag, if any.
    """

    uri: str
    geobox: GeoBox
    band_count: int
    dtype: str
    nodata: float | int | None
    band_names: tuple[str, ...]
    band_descriptions: tuple[str, ...]
    acquired: str | None

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


def _check_readable_edges(dataset: DatasetReader, uri: str) -> None:
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
                f"{col_off} failed ({error}). Re-download or re-export the scene and try again."
            ) from error


def inspect_scene(uri: str, *, allow_ungeoreferenced: bool = False, probe_pixels: bool = True) -> SceneInfo:
    """Open ``uri`` (local path or ``s3://``), validate it, and describe it.

    Args:
        uri: the scene's location.
        allow_ungeoreferenced: accept a raster without a CRS (outputs are then pixel grids without CRS).
        probe_pixels: read the first and last block to catch truncated files early.

    Raises:
        SceneNotFoundError: nothing exists at ``uri``.
        EmptySceneError: the file has 0 bytes or the raster has no pixels.
        CorruptSceneError: GDAL cannot read it.
        MissingCRSError: no CRS and ``allow_ungeoreferenced`` is False.
        UnsupportedDtypeError: e.g. complex pixels.
    """
    import rasterio
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
        with storage.gdal_env(uri), rasterio.open(storage.gdal_path(uri)) as dataset:
            if dataset.width == 0 or dataset.height == 0 or dataset.count == 0:
                raise EmptySceneError(
                    f"{uri}: the raster has no pixels ({dataset.width} x {dataset.height} "
                    f"x {dataset.count} bands)."
                )
            dtypes = set(dataset.dtypes)
            if len(dtypes) != 1:
                raise UnsupportedDtypeError(
                    f"{uri}: bands have different data types {sorted(dtypes)}; "
                    "convert them to one type (e.g. gdal_translate -ot)."
                )
            dtype = dataset.dtypes[0]
            if dtype not in SUPPORTED_DTYPES:
                raise UnsupportedDtypeError(
                    f"{uri}: pixel type {dtype} is not supported (supported: {', '.join(SUPPORTED_DTYPES)}). "
                    "Convert it first, e.g. take the magnitude of complex data."
                )
            crs_wkt = dataset.crs.to_wkt() if dataset.crs else None
            if crs_wkt is None and not allow_ungeoreferenced:
                raise MissingCRSError(
                    f"{uri}: the raster has no coordinate reference system, so outputs could not be placed "
                    "on a map. Assign one (gdal_edit.py -a_srs EPSG:XXXX) or pass --allow-ungeoreferenced "
                    "to produce pixel-grid outputs without a CRS."
                )
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
            return SceneInfo(
                uri=uri,
                geobox=make_geobox((dataset.height, dataset.width), dataset.transform, crs_wkt),
                band_count=dataset.count,
                dtype=dtype,
                nodata=nodata,
                band_names=_band_names(dataset.descriptions, tuple(c.name for c in dataset.colorinterp)),
                band_descriptions=tuple(d or "" for d in dataset.descriptions),
                acquired=tags.get("TIFFTAG_DATETIME") or tags.get("ACQUISITIONDATE"),
            )
    except RasterioIOError as error:
        raise CorruptSceneError(
            f"{uri}: GDAL cannot read this file as a raster ({error}). It may be corrupt, truncated or not "
            "a raster; re-download or re-export it."
        ) from error
