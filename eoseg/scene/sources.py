"""A scene made of many files: list the input tiles, check they share one pixel grid, place them on it.

A scene may be one GeoTIFF, a list of GeoTIFFs, a local folder or ``s3://`` prefix of GeoTIFFs, or a
GDAL VRT that places GeoTIFFs side by side. :func:`open_scene_sources` lists the files, reads their
headers (rasterio, no pixels), checks that every tile has the first tile's CRS, band count, pixel type,
nodata and resolution and that its origin lies on the first tile's pixel lattice (within
:data:`eoseg.geometry.GRID_TOLERANCE_PIXELS` of a pixel), and returns :class:`SceneSources`: the union
grid (one odc-geo ``GeoBox``) and every tile's window on it. The first tile that differs is refused,
naming the file and what differs; with ``resample`` (``--resample METHOD``) such a tile is instead
warped onto the first tile's grid (rasterio ``WarpedVRT``, GDAL's warper) over the lattice window that
covers its footprint. Bands, pixel type and nodata must still match.

Overlapping tiles: the **first** tile in the listing wins (a list in the order given, a folder or prefix
in name order). A VRT is read in GDAL's drawing order, where the *last* source wins, so its sources are
taken last first and eoseg's mosaic equals what GDAL shows for the VRT. Pixels of the union grid that no
tile covers are gaps: nodata.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from affine import Affine

from eoseg.errors import ConfigurationError, SceneNotFoundError, TileGridMismatchError
from eoseg.geometry import GRID_TOLERANCE_PIXELS, GeoBox, Window, make_geobox
from eoseg.io import storage
from eoseg.scene.inspect import SceneInfo, inspect_scene

RASTER_SUFFIXES = (".tif", ".tiff")
"""File names (case-insensitive) taken from a folder or an ``s3://`` prefix."""

_HEADER_THREADS = 16  # header reads are I/O-bound (S3 round trips): a few in flight at once


@dataclass(frozen=True)
class SourceTile:
    """One input file of a scene and where it lies on the scene's (union) grid.

    Attributes:
        uri: the file (local path or ``s3://``).
        window: its pixels on the union grid (row/column offset, height, width).
        resampling: None when the file is on the union grid; else the GDAL resampling method by which it
            is warped onto ``window`` of the union grid (``nearest``, ``bilinear``, ``cubic``...).
    """

    uri: str
    window: Window
    resampling: str | None = None


@dataclass(frozen=True)
class SceneSources:
    """The input files of one scene, placed on one grid; small, immutable, picklable.

    Attributes:
        scene: the scene as a whole: the union ``GeoBox`` and the first tile's bands, pixel type and
            nodata; ``uri`` describes the input (:func:`describe_inputs`).
        tiles: every input tile with its window on ``scene.geobox``, in priority order (first wins).
    """

    scene: SceneInfo
    tiles: tuple[SourceTile, ...]

    @property
    def single_file(self) -> bool:
        """True when the scene is one file covering the whole grid (the one-GeoTIFF case)."""
        return len(self.tiles) == 1 and self.tiles[0].uri == self.scene.uri

    def overlapping(self, window: Window) -> list[tuple[SourceTile, Window]]:
        """The tiles that ``window`` (union pixels) touches, each with the shared part in union pixels."""
        found = []
        for tile in self.tiles:
            row_off = max(window.row_off, tile.window.row_off)
            col_off = max(window.col_off, tile.window.col_off)
            row_stop = min(window.row_stop, tile.window.row_stop)
            col_stop = min(window.col_stop, tile.window.col_stop)
            if row_stop > row_off and col_stop > col_off:
                found.append((tile, Window(row_off, col_off, row_stop - row_off, col_stop - col_off)))
        return found


def _is_vrt(uri: str) -> bool:
    return uri.lower().endswith(".vrt")


def _is_raster_name(uri: str) -> bool:
    return uri.lower().endswith(RASTER_SUFFIXES)


def _list_folder(uri: str) -> list[str]:
    """The GeoTIFFs directly in a local folder or under an ``s3://`` prefix, in name order."""
    if storage.is_s3(uri):
        fs = storage.s3_filesystem()
        fs.invalidate_cache(uri)
        names = [f"s3://{key}" for key in fs.find(uri) if _is_raster_name(key)]
    else:
        names = [str(path) for path in Path(uri).iterdir() if path.is_file() and _is_raster_name(path.name)]
    if not names:
        raise SceneNotFoundError(
            f"{uri}: no GeoTIFF (*.tif, *.tiff) found in this folder or prefix. Check the path, or list "
            "the files explicitly."
        )
    return sorted(names)


def _is_folder(uri: str) -> bool:
    if storage.is_s3(uri):
        fs = storage.s3_filesystem()
        fs.invalidate_cache(uri)
        return bool(fs.isdir(uri))
    return Path(uri).is_dir()


def vrt_source_files(vrt_uri: str) -> list[str] | None:
    """The files a VRT places side by side, last drawn first; ``None`` if it does more than place them.

    A VRT of ``SimpleSource`` / ``ComplexSource`` elements whose source and destination rectangles have
    the same size (what ``gdalbuildvrt`` writes for tiles on one grid) is a list of tiles; anything else
    (resampling, warping, pixel functions) is read as one raster by GDAL.
    """
    with storage.gdal_env(vrt_uri):
        text = _read_text(vrt_uri)
    root = ElementTree.fromstring(text)
    base = vrt_uri.rsplit("/", 1)[0] if storage.is_s3(vrt_uri) else os.path.dirname(vrt_uri)
    files: list[str] = []
    for band in root.iter("VRTRasterBand"):
        if band.get("subClass"):
            return None
        for source in band:
            if source.tag not in ("SimpleSource", "ComplexSource"):
                continue
            name_element = source.find("SourceFilename")
            src, dst = source.find("SrcRect"), source.find("DstRect")
            if name_element is None or name_element.text is None:
                return None
            if (
                src is not None
                and dst is not None
                and (src.get("xSize"), src.get("ySize")) != (dst.get("xSize"), dst.get("ySize"))
            ):
                return None
            name = name_element.text.strip()
            if name_element.get("relativeToVRT") == "1":
                name = f"{base}/{name}" if storage.is_s3(vrt_uri) else os.path.join(base, name)
            elif name.startswith("/vsis3/"):
                name = storage.S3_SCHEME + name[len("/vsis3/") :]
            if name not in files:
                files.append(name)
    return list(reversed(files)) if files else None


def _read_text(uri: str) -> str:
    if storage.is_s3(uri):
        with storage.s3_filesystem().open(uri, "r") as handle:
            return str(handle.read())
    return Path(uri).read_text(encoding="utf-8")


def list_scene_files(scene: str | Sequence[str]) -> tuple[str, list[str]]:
    """``(description, files)``: the input files of ``scene`` in priority order (first wins).

    Args:
        scene: a GeoTIFF, a list of GeoTIFFs, a local folder, an ``s3://`` prefix, or a VRT of tiles.

    Raises:
        SceneNotFoundError: an empty list, a folder or prefix without GeoTIFFs, or a missing file.
        ConfigurationError: a file is listed twice (e.g. given and in a folder also given).
    """
    items = [scene] if isinstance(scene, (str, os.PathLike)) else list(scene)
    if not items:
        raise SceneNotFoundError(
            "no input scene given; pass a GeoTIFF, several, a folder or an s3:// prefix."
        )
    uris = [storage.normalise_uri(item) for item in items]
    files: list[str] = []
    for uri in uris:
        if _is_vrt(uri) and storage.exists(uri):
            files += vrt_source_files(uri) or [uri]
        elif not _is_raster_name(uri) and storage.exists(uri) and _is_folder(uri):
            files += _list_folder(uri)
        else:
            files.append(uri)
    repeated = sorted({uri for uri in files if files.count(uri) > 1})
    if repeated:
        raise ConfigurationError(
            f"{repeated[0]}: given twice (as a file, in a folder or a VRT); list each tile once"
        )
    return describe_inputs(uris), files


def describe_inputs(uris: Sequence[str]) -> str:
    """One line naming the input (recorded as the store's ``source_uri``; a resumed run must match it).

    One item is its URI; a short list is the URIs joined by ``" + "``; a longer one names the first and
    last files, their count and a digest of the whole list.
    """
    if len(uris) <= 4:
        return " + ".join(uris)
    digest = hashlib.sha256("\n".join(uris).encode()).hexdigest()[:12]
    return f"{uris[0]} + ... + {uris[-1]} ({len(uris)} files, list sha256 {digest})"


def _lattice_offset(reference: GeoBox, tile: GeoBox) -> tuple[float, float]:
    """The tile's first pixel corner in the reference's pixel coordinates ``(col, row)``."""
    col, row = ~reference.affine @ (tile.affine.c, tile.affine.f)
    return float(col), float(row)


def _footprint_window(first: SceneInfo, tile: SceneInfo) -> Window:
    """The first tile's lattice window (may be negative) that covers the tile's footprint in its CRS."""
    import math

    from rasterio.warp import transform_bounds

    left, bottom, right, top = tile.geobox.boundingbox
    if tile.geobox.crs is not None and first.geobox.crs is not None and tile.geobox.crs != first.geobox.crs:
        left, bottom, right, top = transform_bounds(tile.crs_wkt, first.crs_wkt, left, bottom, right, top)
    corners = [~first.geobox.affine @ (x, y) for x in (left, right) for y in (bottom, top)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    col0, row0 = math.floor(min(cols) + 1e-6), math.floor(min(rows) + 1e-6)
    col1, row1 = math.ceil(max(cols) - 1e-6), math.ceil(max(rows) - 1e-6)
    return Window(row0, col0, row1 - row0, col1 - col0)


def _crs_name(scene: SceneInfo) -> str:
    """A CRS as a person reads it: ``EPSG:26914 (NAD83 / UTM zone 14N)``, not its WKT; "none" without."""
    crs = scene.geobox.crs
    if crs is None or scene.crs_wkt is None:
        return "none"
    name = crs.proj.name
    return f"EPSG:{crs.epsg} ({name})" if crs.epsg is not None else repr(name)


def _check_same_grid(
    first: SceneInfo, tile: SceneInfo, tolerance: float, resample: str | None = None
) -> tuple[Window, bool]:
    """The tile's window in the first tile's pixel coordinates (may be negative), and whether it is warped
    onto that window (only with ``resample``, when its CRS, pixel size or lattice differ).

    Raises:
        TileGridMismatchError: bands, pixel type or nodata differ, or (without ``resample``) CRS,
            resolution or lattice; the message names ``--resample`` where it would help.
    """
    problems = []  # every difference, so that one run of the command names them all
    if (first.crs_wkt is None) != (tile.crs_wkt is None) or (
        first.geobox.crs is not None and tile.geobox.crs is not None and first.geobox.crs != tile.geobox.crs
    ):
        problems.append(f"its CRS {_crs_name(tile)} differs from the first tile's {_crs_name(first)}")
    grid_only = True  # a CRS or pixel grid that differs can be warped (--resample); the rest cannot
    if (tile.band_count, tile.band_indexes) != (first.band_count, first.band_indexes):
        grid_only = False
        problems.append(
            f"it has bands {list(tile.band_indexes)} (alpha left out), the first tile "
            f"{list(first.band_indexes)}"
        )
    if tile.dtype != first.dtype:
        grid_only = False
        problems.append(f"its pixel type {tile.dtype} differs from the first tile's {first.dtype}")
    if tile.nodata != first.nodata and not (tile.nodata != tile.nodata and first.nodata != first.nodata):
        grid_only = False
        problems.append(f"its nodata {tile.nodata!r} differs from the first tile's {first.nodata!r}")
    what = "; ".join(problems) or None
    if not problems:
        a, b, _, d, e, _ = first.transform
        ta, tb, _, td, te, _ = tile.transform
        # Resolution: the tile's pixel size in the first tile's pixels must be 1 across the whole tile.
        scale = max(
            abs(ta - a) * tile.width / abs(a or 1), abs(te - e) * tile.height / abs(e or 1),
            abs(tb - b) * tile.height / abs(a or 1), abs(td - d) * tile.width / abs(e or 1),
        )  # fmt: skip
        if scale > tolerance:
            what = (
                f"its pixel size ({ta:g}, {te:g}) differs from the first tile's ({a:g}, {e:g}); resample it "
                "onto the first tile's grid (gdalwarp -tr ... -tap) first"
            )
        else:
            col, row = _lattice_offset(first.geobox, tile.geobox)
            off = max(abs(col - round(col)), abs(row - round(row)))
            if off > tolerance:
                what = (
                    f"its origin is {off:.3f} px off the first tile's pixel lattice; resample it onto the "
                    "first tile's grid (gdalwarp -tap) first"
                )
            else:
                return Window(round(row), round(col), tile.height, tile.width), False
    if grid_only and resample is not None and first.crs_wkt is not None and tile.crs_wkt is not None:
        return _footprint_window(first, tile), True
    how = (
        " (or pass --resample METHOD to warp such tiles onto the first tile's grid)"
        if grid_only and first.crs_wkt is not None
        else ""
    )
    raise TileGridMismatchError(
        f"{tile.uri}: this tile is not on the grid of the first tile {first.uri}: {what}{how}. All tiles "
        "of a scene must share CRS, bands, pixel type, nodata and pixel grid."
    )


def open_scene_sources(
    scene: str | Sequence[str],
    *,
    allow_ungeoreferenced: bool = False,
    warp_gcps: bool = False,
    tolerance: float = GRID_TOLERANCE_PIXELS,
    resample: str | None = None,
) -> SceneSources:
    """List, inspect (headers only) and place the input tiles of ``scene`` on their union grid.

    One GeoTIFF is inspected exactly as :func:`eoseg.scene.inspect.inspect_scene` does (its first and
    last blocks are probed) and becomes a one-tile source; several are inspected from their headers (in
    parallel threads when they are remote, in a loop when local).

    Args:
        scene: a GeoTIFF, a list of GeoTIFFs, a local folder, an ``s3://`` prefix, or a VRT of tiles.
        allow_ungeoreferenced: accept rasters without CRS (they must then share the pixel grid all the same).
        warp_gcps: read GCP-georeferenced files warped onto a regular grid (:func:`inspect_scene`).
        tolerance: largest misalignment, in pixels, still counted as the same lattice.
        resample: warp tiles on another grid (CRS, pixel size, lattice) onto the first tile's grid with this
            GDAL resampling method (``nearest``, ``bilinear``, ``cubic``, ...); None: refuse them.

    Returns:
        :class:`SceneSources`: the union grid (``scene.geobox``, the first tile's CRS and resolution) and
        each tile's window on it.

    Raises:
        SceneNotFoundError, CorruptSceneError, EmptySceneError, MissingCRSError, UnsupportedDtypeError:
            as :func:`inspect_scene`, for the first file at fault.
        TileGridMismatchError: a tile is not on the first tile's grid (the message names it and says how),
            or, with ``resample``, differs in bands, pixel type or nodata.
    """
    description, files = list_scene_files(scene)
    if len(files) == 1 and files[0] == description:
        info = inspect_scene(files[0], allow_ungeoreferenced=allow_ungeoreferenced, warp_gcps=warp_gcps)
        return SceneSources(info, (SourceTile(info.uri, Window(0, 0, info.height, info.width)),))

    def header(uri: str) -> SceneInfo:
        return inspect_scene(
            uri, allow_ungeoreferenced=allow_ungeoreferenced, probe_pixels=False, warp_gcps=warp_gcps
        )

    # Threads only pay for remote files: a local header is ~2 ms of GIL-bound work, and 16 threads on
    # 2 cores took 0.3-0.7 s for 64 local files against 0.16 s in a loop (benchmarks/results/city.md).
    remote = any(storage.gdal_path(uri).startswith("/vsi") for uri in files)
    if not remote:
        infos = [header(uri) for uri in files]
    else:
        with ThreadPoolExecutor(max_workers=min(_HEADER_THREADS, len(files))) as pool:
            infos = list(pool.map(header, files))
    first = infos[0]
    placed = [_check_same_grid(first, info, tolerance, resample) for info in infos]
    offsets = [window for window, _ in placed]
    row_min = min(w.row_off for w in offsets)
    col_min = min(w.col_off for w in offsets)
    height = max(w.row_stop for w in offsets) - row_min
    width = max(w.col_stop for w in offsets) - col_min
    affine = first.geobox.affine @ Affine.translation(col_min, row_min)
    union = make_geobox((height, width), tuple(affine)[:6], first.crs_wkt)
    tiles = tuple(
        SourceTile(
            info.uri,
            Window(w.row_off - row_min, w.col_off - col_min, w.height, w.width),
            resample if warped else None,
        )
        for info, (w, warped) in zip(infos, placed, strict=True)
    )
    acquired = {info.acquired for info in infos}
    scene_info = replace(
        first, uri=description, geobox=union, acquired=first.acquired if len(acquired) == 1 else None
    )
    return SceneSources(scene_info, tiles)
