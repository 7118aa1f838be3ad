"""The Zarr v3 store layout that every stage reads and writes (documented in docs/store-layout.md).

A store is a Zarr group holding one data variable on a pixel grid, following the CF/GeoZarr conventions
that are settled: ``image`` (band, y, x) or ``labels`` (y, x); 1-D ``x``/``y`` pixel-centre coordinates for
axis-aligned grids (none for rotated ones, whose ``GeoTransform`` alone places them); a scalar
``spatial_ref`` grid-mapping variable carrying ``crs_wkt`` and GDAL's ``GeoTransform``; and
``chunk_done`` (chunk_row, chunk_col), one flag per data chunk, written after that chunk. Image stores
also hold ``valid`` (y, x; uint8, 1 = data, 0 = nodata), chunked like the image, which is where validity
lives (:mod:`eoseg.scene.validity`): the image's ``nodata`` is only written where the scene has one.
The group's
``eoseg`` attribute holds everything a later stage needs without reading pixels, and its ``complete`` flag
is set last: a store without it is an interrupted write, refused by readers and resumed by writers.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import os
import struct
import uuid
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from eoseg.errors import IncompleteStoreError, SceneNotFoundError
from eoseg.geometry import ChunkGrid, GeoBox, GeoBoxProperties, make_geobox, xy_coordinates
from eoseg.io import storage
from eoseg.scene.validity import valid_pixel_mask
from eoseg.store.versions import LAYOUT_VERSION, check_layout_version

if TYPE_CHECKING:
    import zarr

StoreKind = Literal["image", "labels"]
StoreMode = Literal["r", "r+"]  # readers, and chunk writers of an existing store
DATA_VARIABLE: dict[str, str] = {"image": "image", "labels": "labels"}
VALID_VARIABLE = "valid"
"""The image store's (y, x) uint8 validity variable: 1 where every model band holds data (layout >= 2)."""
FIRST_LAYOUT_WITH_VALID = 2


@dataclass(frozen=True)
class StoreInfo(GeoBoxProperties):
    """The ``eoseg`` attribute of a store: its grid, georeferencing and provenance.

    The grid is one value, ``geobox`` (shape, affine, CRS); in the attribute it is written as the keys
    ``height``, ``width``, ``transform`` and ``crs_wkt`` (docs/store-layout.md), which the properties of the
    same names give back.
    """

    # The scene's fields again (SceneInfo), in the order of the store's attribute; the grid's properties
    # are shared through GeoBoxProperties. A common base class would reorder the fields.
    kind: StoreKind
    geobox: GeoBox
    band_count: int
    dtype: str
    chunk_rows: int
    chunk_cols: int
    nodata: float | int | None
    band_names: tuple[str, ...]
    band_descriptions: tuple[str, ...]
    source_uri: str
    acquired: str | None = None
    band_stats: dict[str, list[float]] | None = None  # per band: count, mean, std, min, max (valid pixels)
    # per model band: scale, offset, unit, colorinterp, source_band (1-based index in the scene file)
    band_metadata: dict[str, list[Any]] | None = None
    alpha_band: int | None = None  # the scene's alpha band (1-based; a mask, not a model band)
    num_classes: int | None = None  # label stores
    model: dict[str, Any] | None = None  # label stores: family, checkpoint URI, halo, blending
    created: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    complete: bool = False
    layout_version: int = LAYOUT_VERSION

    @property
    def grid(self) -> ChunkGrid:
        return ChunkGrid.for_geobox(self.geobox, chunk_rows=self.chunk_rows, chunk_cols=self.chunk_cols)

    @property
    def variable(self) -> str:
        return DATA_VARIABLE[self.kind]

    @property
    def records_validity(self) -> bool:
        """Whether the store has the ``valid`` variable (image stores of layout version 2 on)."""
        return self.kind == "image" and self.layout_version >= FIRST_LAYOUT_WITH_VALID

    def to_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {item.name: getattr(self, item.name) for item in fields(self)}
        del attrs["geobox"]
        attrs.update(height=self.height, width=self.width, crs_wkt=self.crs_wkt)
        attrs["transform"] = list(self.transform)
        attrs["band_names"] = list(self.band_names)
        attrs["band_descriptions"] = list(self.band_descriptions)
        if isinstance(self.nodata, float) and np.isnan(self.nodata):
            attrs["nodata"] = "nan"  # JSON has no NaN
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> StoreInfo:
        values = dict(attrs)
        shape = (int(values.pop("height")), int(values.pop("width")))
        values["geobox"] = make_geobox(shape, values.pop("transform"), values.pop("crs_wkt"))
        values["band_names"] = tuple(values["band_names"])
        values["band_descriptions"] = tuple(values["band_descriptions"])
        if values.get("nodata") == "nan":
            values["nodata"] = float("nan")
        return cls(**values)


def _coordinates(info: StoreInfo) -> dict[str, np.ndarray]:
    """Pixel-centre ``x``/``y`` (axis-aligned grid); none for a rotated one (the GeoTransform places it)."""
    return xy_coordinates(info.geobox)


def create_store(uri: str, info: StoreInfo, *, compression_level: int = 1) -> None:
    """Write the store's metadata, coordinates and empty chunk flags; pixel chunks are written later.

    Written with zarr-python alone, as the same metadata that ``xarray.Dataset.to_zarr`` with rioxarray's
    ``write_crs``/``write_transform`` writes (docs/store-layout.md): ``dimension_names``, the CF
    ``coordinates``/``grid_mapping`` attributes, the ``spatial_ref`` grid mapping, xarray's base64
    ``_FillValue`` for float coordinates. So the store opens with ``xarray.open_zarr`` and rioxarray/odc-geo
    read its georeferencing, while a command does not import dask.array, xarray and rioxarray (~1 s)
    to write a few kilobytes of metadata.

    Args:
        uri: the store (local path or ``s3://bucket/prefix``); anything already there is replaced.
        info: the store's record (grid, bands, dtype, chunks, nodata); written as the ``eoseg`` attribute.
        compression_level: zstd level of the pixel chunks (blosc, bit-shuffled).
    """
    import zarr
    from zarr.codecs import BloscCodec

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    if info.kind == "image":
        dims, shape = ("band", "y", "x"), (info.band_count, info.height, info.width)
        chunks = (info.band_count, info.chunk_rows, info.chunk_cols)
    else:
        dims, shape = ("y", "x"), (info.height, info.width)
        chunks = (info.chunk_rows, info.chunk_cols)
    # zstd level 1: the benchmarks measured 17 ms less per 1024^2 x 4 chunk than level 3 for a 0.4 %
    # larger store.
    compressors = (BloscCodec(cname="zstd", clevel=compression_level, shuffle="bitshuffle"),)
    group = zarr.open_group(
        uri, mode="w", storage_options=storage.storage_options_for(uri), zarr_format=3,
        attributes={"eoseg": info.to_attrs()},
    )  # fmt: skip

    def array(name: str, values: np.ndarray | None, **options: Any) -> None:
        created = group.create_array(name, overwrite=True, **options)
        if values is not None:
            created[...] = values

    coordinates = _coordinates(info)
    for axis, values in coordinates.items():  # xarray's CF default for float variables: _FillValue NaN
        array(axis, values, shape=values.shape, dtype=values.dtype, chunks=values.shape, fill_value=np.nan,
              attributes={"_FillValue": _FILL_VALUE_NAN}, dimension_names=(axis,))  # fmt: skip
    if info.kind == "image":
        band = np.arange(1, info.band_count + 1)
        array("band", band, shape=band.shape, dtype=band.dtype, chunks=band.shape, dimension_names=("band",))
    array("spatial_ref", None, shape=(), dtype="int64", chunks=(), attributes=_grid_mapping_attrs(info))
    attrs: dict[str, Any] = {"long_name": info.variable}
    if info.nodata is not None:
        attrs["nodata"] = info.nodata  # what rioxarray's .rio.nodata and odc-geo's .odc.nodata read
    if info.kind == "image":
        attrs["band_names"] = list(info.band_names)
        attrs["band_descriptions"] = list(info.band_descriptions)
        for key, per_band in (info.band_metadata or {}).items():
            attrs[f"band_{key}"] = per_band
    attrs.update(grid_mapping="spatial_ref", coordinates="spatial_ref")
    fill_value, cf_fill_value = _fill_value_encoding(info.nodata)
    if cf_fill_value is not None:  # (xarray writes the CF attribute after the others)
        attrs["_FillValue"] = _FILL_VALUE_NAN
    array(info.variable, None, shape=shape, dtype=info.dtype, chunks=chunks, fill_value=fill_value,
          compressors=compressors, attributes=attrs, dimension_names=dims)  # fmt: skip
    rows_in_chunks, cols_in_chunks = info.grid.shape_in_chunks
    done_attrs = {"description": "1 once the data chunk at (chunk_row, chunk_col) is fully written"}
    array("chunk_done", None, shape=(rows_in_chunks, cols_in_chunks), dtype="uint8", chunks=(1, 1),
          fill_value=0, attributes={**done_attrs, "coordinates": "spatial_ref"},
          dimension_names=("chunk_row", "chunk_col"))  # fmt: skip
    if info.records_validity:
        valid_attrs = {"description": "1 where every band of image holds data, 0 where it is nodata"}
        array(VALID_VARIABLE, None, shape=shape[-2:], dtype="uint8", chunks=chunks[-2:], fill_value=0,
              compressors=compressors, attributes={**valid_attrs, "coordinates": "spatial_ref"},
              dimension_names=("y", "x"))  # fmt: skip


_FILL_VALUE_NAN = base64.standard_b64encode(struct.pack("<d", float("nan"))).decode()
"""A NaN ``_FillValue`` attribute as xarray encodes float fill values in Zarr v3 (base64 of a double)."""


def _grid_mapping_attrs(info: StoreInfo) -> dict[str, Any]:
    """The ``spatial_ref`` attributes rioxarray's ``write_crs`` + ``write_transform`` write: pyproj's CF
    grid-mapping parameters, ``spatial_ref`` and ``crs_wkt`` (the CRS as rasterio writes it) and GDAL's
    ``GeoTransform``; only the ``GeoTransform`` for an ungeoreferenced store."""
    attrs: dict[str, Any] = {}
    if info.crs_wkt:
        import pyproj
        from rasterio.crs import CRS

        crs = CRS.from_user_input(info.crs_wkt)
        with contextlib.suppress(KeyError):
            attrs = pyproj.CRS.from_user_input(crs).to_cf()
        attrs["spatial_ref"] = attrs["crs_wkt"] = crs.to_wkt()
    attrs["GeoTransform"] = " ".join(str(item) for item in info.geobox.affine.to_gdal())
    return attrs


def _fill_value_encoding(nodata: float | int | None) -> tuple[float | int, float | None]:
    """Zarr's fill value and the CF ``_FillValue`` (or None) of the data variable for a scene's ``nodata``.

    A finite nodata is zarr's fill value and the ``nodata`` attribute, with no CF ``_FillValue`` (xarray
    would otherwise decode it to NaN, and rioxarray/odc-geo would report NaN instead of the scene's value);
    NaN nodata is the CF ``_FillValue`` as well; without nodata, xarray gets no fill value (not its NaN
    default for floats), so every value, zeros included, stays data.
    """
    if nodata is None:
        return 0, None
    if isinstance(nodata, float) and np.isnan(nodata):
        return nodata, nodata
    return nodata, None


def _open_group(uri: str, mode: StoreMode = "r") -> zarr.Group:
    import zarr

    return zarr.open_group(uri, mode=mode, storage_options=storage.storage_options_for(uri), zarr_format=3)


def read_store_info(uri: str, *, require_complete: bool = True) -> StoreInfo:
    """The ``eoseg`` attribute of the store at ``uri``.

    Raises:
        SceneNotFoundError: no store at ``uri``.
        IncompleteStoreError: not an eoseg store, or (with ``require_complete``) an unfinished one.
        StoreLayoutError: a layout this eoseg does not read (the message says how to re-tile).
    """
    uri = storage.normalise_uri(uri)
    if not storage.exists(uri):
        raise SceneNotFoundError(f"{uri}: store not found. Create it with `eoseg tile` (or check the URI).")
    try:
        group = _open_group(uri)
        attrs = cast("dict[str, Any]", dict(group.attrs)["eoseg"])
    except Exception as error:
        raise IncompleteStoreError(f"{uri}: not an eoseg Zarr store ({error}).") from error
    info = StoreInfo.from_attrs(check_layout_version(uri, attrs))
    if require_complete and not info.complete:
        raise IncompleteStoreError(
            f"{uri}: the store was not finished (an interrupted run?). Run the stage again with the same "
            "output to resume it, or with --overwrite to start over."
        )
    return info


def update_store_info(uri: str, info: StoreInfo) -> None:
    """Replace the ``eoseg`` attribute (e.g. to add statistics or set ``complete``)."""
    group = _open_group(uri, mode="r+")
    group.attrs["eoseg"] = info.to_attrs()


def open_data_array(uri: str, info: StoreInfo | str, *, mode: StoreMode = "r") -> zarr.Array[Any]:
    """The zarr array of the store's data variable (``info`` or the variable's name) for chunk I/O."""
    import zarr

    variable = info if isinstance(info, str) else info.variable
    return zarr.open_array(
        f"{uri}/{variable}", mode=mode, storage_options=storage.storage_options_for(uri), zarr_format=3
    )


def write_chunk(uri: str, variable: str, chunk_index: tuple[int, ...], block: np.ndarray) -> None:
    """Write ``block`` as the whole chunk ``chunk_index`` of the store's ``variable`` (an edge chunk's block
    may be smaller than the chunk shape).

    The bytes are those zarr writes (the edge chunk padded with the fill value, the ``bytes`` codec then
    the array's ``blosc`` or ``zstd`` codec with its own settings, the chunk key of its metadata), encoded
    by numcodecs directly and stored in one write: zarr-python's own write path took twice as long as that
    encoding for a 4 x 1024 x 1024 uint8 chunk (0.115-0.148 s against 0.061-0.064 s, same bytes), and
    opening the array for each chunk (reading and parsing its ``zarr.json``) cost ~4 ms per write, so a
    local array's encoding is kept between writes while its ``zarr.json`` is unchanged
    (benchmarks/results/tile_mosaic.md). Other codecs, non-integer pixels and chunks holding only the
    fill value (which zarr does not store) go through zarr itself. A local chunk file is written under
    a temporary name and renamed, as zarr does: a killed write leaves no partial chunk.
    """
    encoding = _chunk_encoding(uri, variable)
    chunks, fill_value = encoding.chunks, encoding.fill_value
    only_fill = block.flat[0] == fill_value and bool(np.all(block == fill_value))
    if encoding.codec is None or only_fill:
        selection = tuple(
            slice(index * size, index * size + extent)
            for index, size, extent in zip(chunk_index, chunks, block.shape, strict=True)
        )
        open_data_array(uri, variable, mode="r+")[selection] = block
        return
    padded = block
    if block.shape != chunks:
        padded = np.full(chunks, fill_value, dtype=encoding.dtype)
        padded[tuple(slice(0, extent) for extent in block.shape)] = block
    ordered = np.ascontiguousarray(padded, dtype=encoding.dtype.newbyteorder("<"))
    data = encoding.codec.encode(ordered.view(np.uint8).reshape(-1))
    key = f"{uri.rstrip('/')}/{variable}/{encoding.metadata.encode_chunk_key(chunk_index)}"
    if storage.is_s3(key):
        storage.s3_filesystem().pipe_file(key, bytes(data))
        return
    os.makedirs(os.path.dirname(key), exist_ok=True)
    temporary = f"{key}.{uuid.uuid4().hex}.partial"  # written whole, then renamed: as zarr's LocalStore
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, key)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@dataclass(frozen=True)
class _ChunkEncoding:
    """How :func:`write_chunk` encodes an array's chunks: its metadata, and the numcodecs codec equal to
    its ``bytes`` + ``blosc``/``zstd`` codecs for integer pixels (None: written through zarr)."""

    metadata: Any
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    codec: Any


def _chunk_encoding(uri: str, variable: str) -> _ChunkEncoding:
    """The array's :class:`_ChunkEncoding`; for a local store, kept while its ``zarr.json`` holds the same
    bytes (read each time: a few kilobytes, ~100 times faster than opening the array)."""
    if storage.is_s3(uri):
        return _read_chunk_encoding(uri, variable)
    with open(os.path.join(uri, variable, "zarr.json"), "rb") as handle:
        return _cached_chunk_encoding(uri, variable, handle.read())


@functools.lru_cache(maxsize=64)
def _cached_chunk_encoding(uri: str, variable: str, _document: bytes) -> _ChunkEncoding:
    return _read_chunk_encoding(uri, variable)


def _read_chunk_encoding(uri: str, variable: str) -> _ChunkEncoding:
    from numcodecs import Blosc, Zstd  # type: ignore[import-untyped]  # numcodecs ships no type information
    from zarr.codecs import BloscCodec, BytesCodec, ZstdCodec
    from zarr.core.metadata import ArrayV3Metadata

    array = open_data_array(uri, variable)
    metadata = array.metadata
    codecs = metadata.codecs if isinstance(metadata, ArrayV3Metadata) else ()
    last = codecs[1] if len(codecs) == 2 and isinstance(codecs[0], BytesCodec) else None
    codec: Any = None
    if array.dtype.kind in "iu" and isinstance(last, BloscCodec):
        codec = Blosc.from_config({
            "cname": last.cname.name, "clevel": last.clevel, "blocksize": last.blocksize,
            "shuffle": ("noshuffle", "shuffle", "bitshuffle").index(last.shuffle.name),
            "typesize": last.typesize,
        })  # fmt: skip
    elif array.dtype.kind in "iu" and isinstance(last, ZstdCodec):
        codec = Zstd.from_config({"level": last.level, "checksum": last.checksum})
    return _ChunkEncoding(metadata, tuple(array.chunks), np.dtype(array.dtype), array.fill_value, codec)


def read_image_window(uri: str, info: StoreInfo, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(bands, h, w)`` of an image store's window and its ``(h, w)`` bool validity.

    Validity comes from the ``valid`` variable; stores of layout version 1 (without it) fall back to their
    nodata value (:func:`eoseg.scene.validity.valid_pixel_mask`).
    """
    block = np.asarray(open_data_array(uri, info)[(slice(None), rows, cols)])
    if info.records_validity:
        return block, np.asarray(open_data_array(uri, VALID_VARIABLE)[rows, cols]).astype(bool)
    return block, valid_pixel_mask(block, info.nodata)
