"""Pixel grids and georeferencing as small immutable values, kept apart from any I/O.

A scene's georeferencing is one value from the first read to the last write: an odc-geo
:class:`~odc.geo.geobox.GeoBox` (shape ``(rows, cols)``, affine pixel -> CRS transform, CRS or ``None``).
The scene description, the store attributes, the COG profile, the STAC footprint and rasterised
references all take it; nothing copies its fields one by one.

The scene is cut into a :class:`ChunkGrid` of :class:`Window` s that match the Zarr chunks one to one, so
that parallel writers never touch the same chunk. Inference reads each window grown by a halo
(:meth:`Window.grown`) and keeps only the inner part. ``Window`` and ``ChunkGrid`` stay thin pixel-index
values rather than one GeoBox per chunk: the stages index NumPy and Zarr arrays by pixel slices, a Dask
task must stay small and cheap to pickle, and a halo window is clipped at the scene edge, which
``GeoBox.pad`` does not do. They are derived from the GeoBox (:meth:`ChunkGrid.for_geobox`), cut exactly
the tiles odc-geo's :class:`~odc.geo.geobox.GeoboxTiles` cuts (``tests/test_georeferencing.py``), and
:meth:`Window.geobox_in` gives a window's own GeoBox when one is needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

if TYPE_CHECKING:
    from rasterio.windows import Window as RioWindow

#: Largest displacement, in pixels, at which two grids still count as the same grid.
GRID_TOLERANCE_PIXELS = 0.01

__all__ = [
    "GRID_TOLERANCE_PIXELS",
    "ChunkGrid",
    "GeoBox",
    "GeoBoxProperties",
    "Window",
    "crs_wkt_of",
    "footprint_wgs84",
    "geobox_of",
    "grid_offset_pixels",
    "grids_match",
    "make_geobox",
    "rasterio_grid_profile",
    "transform_of",
    "xy_coordinates",
]


def make_geobox(shape: tuple[int, int], transform: Sequence[float], crs: Any = None) -> GeoBox:
    """The GeoBox of a ``shape`` = ``(rows, cols)`` grid.

    Args:
        shape: ``(height, width)`` in pixels.
        transform: the affine ``(a, b, c, d, e, f)`` mapping pixel ``(col, row)`` corners to CRS ``(x, y)``
            (rasterio/affine order; GDAL's GeoTransform is ``(c, a, b, f, d, e)``). A 9-element affine is
            accepted; its last row is ignored.
        crs: WKT, ``EPSG:n``, a rasterio/pyproj/odc CRS, or ``None`` for a pixel grid without CRS. A WKT
            string is kept verbatim (:func:`crs_wkt_of` gives it back unchanged).

    Raises:
        ValueError: a negative shape or a transform with fewer than 6 elements.
    """
    if len(transform) < 6:
        raise ValueError(f"an affine transform has 6 elements (a, b, c, d, e, f), got {tuple(transform)}")
    if crs is not None and not isinstance(crs, str) and hasattr(crs, "to_wkt"):
        crs = crs.to_wkt()  # rasterio CRS: keep the WKT the file holds
    return GeoBox((int(shape[0]), int(shape[1])), Affine(*(float(v) for v in transform[:6])), crs)


def geobox_of(dataset: Any) -> GeoBox:
    """The GeoBox of an open rasterio dataset (anything with ``height``, ``width``, ``transform``, ``crs``).

    Georeferencing is read once here, at the first read of a file, and travels as this one value.
    """
    return make_geobox((dataset.height, dataset.width), dataset.transform, dataset.crs or None)


def crs_wkt_of(geobox: GeoBox) -> str | None:
    """The GeoBox's CRS as WKT (verbatim when it was given as WKT), or ``None`` without CRS."""
    if geobox.crs is None:
        return None
    text = str(geobox.crs)
    return text if "[" in text else geobox.crs.to_wkt()


def transform_of(geobox: GeoBox) -> tuple[float, float, float, float, float, float]:
    """The affine ``(a, b, c, d, e, f)`` of the GeoBox (rasterio/affine order)."""
    a, b, c, d, e, f = tuple(geobox.affine)[:6]
    return (a, b, c, d, e, f)


class GeoBoxProperties:
    """Mixin of the value objects that carry a ``geobox``: its shape, CRS and transform as properties.

    The grid is stored once, as the GeoBox; these give back the plain fields that files, attributes
    and JSON descriptions spell out.
    """

    geobox: GeoBox

    @property
    def height(self) -> int:
        return int(self.geobox.height)

    @property
    def width(self) -> int:
        return int(self.geobox.width)

    @property
    def crs_wkt(self) -> str | None:
        """The CRS as WKT (verbatim when it was read as WKT), or ``None`` for an ungeoreferenced grid."""
        return crs_wkt_of(self.geobox)

    @property
    def transform(self) -> tuple[float, float, float, float, float, float]:
        """The affine ``(a, b, c, d, e, f)`` (GDAL's GeoTransform is ``(c, a, b, f, d, e)``)."""
        return transform_of(self.geobox)


def rasterio_grid_profile(geobox: GeoBox) -> dict[str, Any]:
    """The grid part of a rasterio profile: ``width``, ``height``, ``crs`` (WKT/``None``), ``transform``."""
    return {
        "width": geobox.width,
        "height": geobox.height,
        "crs": crs_wkt_of(geobox),
        "transform": geobox.affine,
    }


def xy_coordinates(geobox: GeoBox) -> dict[str, np.ndarray]:
    """1-D float64 pixel-centre coordinates ``x`` (cols) and ``y`` (rows), or none for a rotated grid.

    ``x = c + a * (col + 0.5)``, ``y = f + e * (row + 0.5)`` describe a grid only when it is axis-aligned
    (``b == d == 0`` exactly). A rotated or sheared grid has no 1-D coordinates: its stores carry the
    GeoTransform alone, as rioxarray itself does when it opens a rotated GeoTIFF, and both rioxarray and
    odc-geo then take the transform from the grid mapping (writing 1-D coordinates for it made odc-geo
    place the grid thousands of kilometres off).
    """
    a, b, c, d, e, f = transform_of(geobox)
    if b != 0.0 or d != 0.0:
        return {}
    cols = np.arange(geobox.width, dtype=np.float64) + 0.5
    rows = np.arange(geobox.height, dtype=np.float64) + 0.5
    return {"x": c + a * cols, "y": f + e * rows}


def grid_offset_pixels(reference: GeoBox, other: GeoBox) -> float:
    """Largest distance, in pixels of ``reference``, between the corners of ``other`` and its own.

    Each corner of ``other``'s pixel grid (the four image corners) is mapped to the CRS by ``other``'s
    transform and back to pixel coordinates by ``reference``'s, so the result does not depend on the CRS
    units (metres, feet, degrees). Shapes and CRSs are not compared here: see :func:`grids_match`.
    """
    back = ~reference.affine @ other.affine
    height, width = other.shape.yx
    offsets = []
    for col, row in ((0, 0), (width, 0), (0, height), (width, height)):
        x, y = back @ (col, row)
        offsets.append(max(abs(x - col), abs(y - row)))
    return float(max(offsets))


def grids_match(a: GeoBox, b: GeoBox, *, tolerance: float = GRID_TOLERANCE_PIXELS) -> bool:
    """True when ``a`` and ``b`` are the same pixel grid: same shape, same CRS, corners within ``tolerance``.

    Args:
        a: one grid.
        b: the other.
        tolerance: largest corner displacement in pixels of ``a`` (:func:`grid_offset_pixels`); the
            default, a hundredth of a pixel, absorbs rounding in stored transforms whatever the CRS units.

    A grid without CRS matches another only if neither has one (compare shapes alone otherwise, as the
    evaluation does for masks without georeferencing).
    """
    if a.shape != b.shape:
        return False
    if (a.crs is None) != (b.crs is None):
        return False
    if (
        a.crs is not None
        and b.crs is not None
        and a.crs != b.crs
        and not a.crs.proj.equals(b.crs.proj, ignore_axis_order=True)
    ):
        return False
    return grid_offset_pixels(a, b) <= tolerance


def footprint_wgs84(geobox: GeoBox, *, points_per_side: int = 8) -> tuple[dict[str, Any], list[float]] | None:
    """The grid's outline in WGS 84 as a GeoJSON Polygon and its ``[west, south, east, north]`` bbox.

    The outline is the four edges of the (possibly rotated) pixel grid, densified to
    ``points_per_side`` points per edge so that curved edges after reprojection stay honest, with a
    counter-clockwise exterior ring (RFC 7946, section 3.1.6). ``None`` for a grid without CRS.
    """
    if geobox.crs is None:
        return None
    from shapely.geometry import mapping
    from shapely.geometry.polygon import orient

    footprint = geobox.footprint("epsg:4326", npoints=points_per_side)
    polygon = orient(footprint.geom, sign=1.0)
    geometry = mapping(polygon)
    ring = [[float(x), float(y)] for x, y in geometry["coordinates"][0]]
    west, south, east, north = (float(v) for v in polygon.bounds)
    return {"type": "Polygon", "coordinates": [ring]}, [west, south, east, north]


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: rows ``[row_off, row_off + height)``, columns ``[col_off, col_off + width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row_off + self.height

    @property
    def col_stop(self) -> int:
        return self.col_off + self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing a 2-D array (or the last two axes of a 3-D one)."""
        return slice(self.row_off, self.row_stop), slice(self.col_off, self.col_stop)

    @property
    def size(self) -> int:
        return self.height * self.width

    def grown(self, halo: int, *, height_limit: int, width_limit: int) -> Window:
        """This window grown by ``halo`` pixels on every side, clipped to ``[0, limit)``."""
        row_off = max(0, self.row_off - halo)
        col_off = max(0, self.col_off - halo)
        row_stop = min(height_limit, self.row_stop + halo)
        col_stop = min(width_limit, self.col_stop + halo)
        return Window(row_off, col_off, row_stop - row_off, col_stop - col_off)

    def relative_to(self, outer: Window) -> Window:
        """This window in the pixel coordinates of ``outer`` (which must contain it)."""
        if not (
            outer.row_off <= self.row_off
            and outer.col_off <= self.col_off
            and self.row_stop <= outer.row_stop
            and self.col_stop <= outer.col_stop
        ):
            raise ValueError(f"{self} is not inside {outer}")
        return Window(self.row_off - outer.row_off, self.col_off - outer.col_off, self.height, self.width)

    def geobox_in(self, geobox: GeoBox) -> GeoBox:
        """The GeoBox of this window of ``geobox`` (same CRS; the transform shifted to its first pixel)."""
        return geobox[self.slices]

    def to_rasterio(self) -> RioWindow:
        """The same window as a ``rasterio.windows.Window`` (imported here to keep this module I/O-free)."""
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    """A ``height x width`` raster cut into ``chunk_rows x chunk_cols`` chunks (edge chunks are smaller)."""

    height: int
    width: int
    chunk_rows: int
    chunk_cols: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"grid must have pixels, got {self.height} x {self.width}")
        if self.chunk_rows <= 0 or self.chunk_cols <= 0:
            raise ValueError(f"chunk size must be positive, got {self.chunk_rows} x {self.chunk_cols}")

    @classmethod
    def for_geobox(cls, geobox: GeoBox, *, chunk_rows: int, chunk_cols: int) -> ChunkGrid:
        """``geobox`` cut into ``chunk_rows x chunk_cols`` tiles: the cut of odc-geo's ``GeoboxTiles``."""
        return cls(geobox.height, geobox.width, chunk_rows, chunk_cols)

    @property
    def shape_in_chunks(self) -> tuple[int, int]:
        return -(-self.height // self.chunk_rows), -(-self.width // self.chunk_cols)

    def __len__(self) -> int:
        rows, cols = self.shape_in_chunks
        return rows * cols

    def window(self, chunk_row: int, chunk_col: int) -> Window:
        """The window of chunk ``(chunk_row, chunk_col)``."""
        row_off = chunk_row * self.chunk_rows
        col_off = chunk_col * self.chunk_cols
        return Window(
            row_off,
            col_off,
            min(self.chunk_rows, self.height - row_off),
            min(self.chunk_cols, self.width - col_off),
        )

    def windows(self) -> Iterator[tuple[tuple[int, int], Window]]:
        """Every ``((chunk_row, chunk_col), window)`` in row-major order."""
        rows, cols = self.shape_in_chunks
        for chunk_row in range(rows):
            for chunk_col in range(cols):
                yield (chunk_row, chunk_col), self.window(chunk_row, chunk_col)
