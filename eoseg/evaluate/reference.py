"""Reference maps from vector labels: GeoJSON polygons burnt onto a label map's pixel grid.

RFC 7946 GeoJSON is WGS 84 with longitudes in [-180, 180] (a polygon across the antimeridian is split
into parts). A grid in geographic coordinates may run past 180 degrees (0..360, or 170..190): each part
is then shifted by a whole turn (360 degrees) onto the grid where that makes it overlap, so every polygon
lands where it lies. A polygon that still misses the grid is reported (a warning naming the features),
never dropped silently.

Some labelled scenes ship polygons rather than a raster (SpaceNet's building footprints). Evaluating
against them means rasterising them onto exactly the grid of the map being scored: that grid is a
:class:`~odc.geo.geobox.GeoBox`, taken from a raster or given directly (a store's ``StoreInfo.geobox``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from eoseg.errors import CorruptSceneError, EmptySceneError, MissingCRSError, SceneNotFoundError
from eoseg.geometry import GeoBox, geobox_of, rasterio_grid_profile

VECTOR_SUFFIXES = (".geojson", ".json")
logger = logging.getLogger("eoseg.evaluate.reference")


def is_vector_reference(path: str) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def check_reference(reference: str, class_names: str | None = None, *, crs_wkt: str | None = None) -> None:
    """Refuse a reference a run could not score, before the run does any work (headers only).

    Args:
        reference: The reference raster or GeoJSON (local path).
        class_names: The ``--class-names`` value (a built-in table's name or a JSON file), or None.
        crs_wkt: The CRS of the map the run will write (WKT), or None to skip the CRS check; a raster
            reference must be on the map's grid, so on its CRS (a GeoJSON one is reprojected).

    Raises:
        SceneNotFoundError: There is no file at ``reference``.
        CorruptSceneError: GDAL cannot read the raster's header.
        ConfigurationError: ``class_names`` is neither a built-in table nor a JSON object of names.
        GridMismatchError: The raster reference's CRS is not the map's.
    """
    from rasterio.crs import CRS

    from eoseg.evaluate.class_names import reference_class_names
    from eoseg.evaluate.scores import GridMismatchError
    from eoseg.io.rasters import open_raster

    reference_crs = None
    if is_vector_reference(reference):
        if not Path(reference).exists():
            raise SceneNotFoundError(f"{reference}: reference not found; check the path")
    else:
        with open_raster(reference, role="reference raster") as dataset:
            reference_crs = dataset.crs
    reference_class_names(reference, class_names)
    if crs_wkt is not None and reference_crs is not None and reference_crs != CRS.from_wkt(crs_wkt):
        raise GridMismatchError(
            f"{reference}: reference raster is on {reference_crs.to_string()}, the map will be on "
            f"{CRS.from_wkt(crs_wkt).to_string()}; reproject the reference onto the scene's grid "
            "(e.g. gdalwarp -t_srs) or give it as GeoJSON polygons"
        )


def _geojson_crs(collection: dict[str, Any]) -> str:
    """The collection's CRS: its legacy ``crs`` member if present, else RFC 7946's WGS 84."""
    name = str(collection.get("crs", {}).get("properties", {}).get("name") or "")
    if not name:
        return "EPSG:4326"
    if "CRS84" in name:
        return "OGC:CRS84"
    if "EPSG::" in name:
        return "EPSG:" + name.rsplit("::", 1)[-1]
    return name


def _placed_on_grid(
    geometry: dict[str, Any], bounds: tuple[float, float, float, float], geographic: bool
) -> Any:
    """The geometry (GeoJSON-like, in the grid's CRS) as a shapely geometry; on a geographic grid each
    polygon part is shifted by -360, 0 or +360 degrees of longitude to the one that overlaps the grid."""
    from shapely import affinity
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    placed = shape(geometry)
    if not geographic:
        return placed
    grid = box(*bounds)
    parts = list(getattr(placed, "geoms", [placed]))
    moved = []
    for part in parts:
        shifted = [affinity.translate(part, xoff=turn) for turn in (0.0, 360.0, -360.0)]
        moved.append(next((s for s in shifted if s.intersects(grid)), part))
    return unary_union(moved) if len(moved) > 1 else moved[0]


def _grid_of(like: str | GeoBox) -> tuple[GeoBox, str]:
    """The GeoBox to burn onto, and how to name it in messages."""
    if isinstance(like, GeoBox):
        return like, "the grid"
    import rasterio

    with rasterio.open(like) as dataset:
        return geobox_of(dataset), like


def rasterize_reference(
    vector_path: str, like: str | GeoBox, out_path: str, *, burn_value: int = 255, background: int = 0
) -> str:
    """Burn the polygons of a GeoJSON file onto a grid, written as a uint8 GeoTIFF at ``out_path``.

    Pixels whose centre falls inside a polygon get ``burn_value``, all others ``background``. Polygons
    in another CRS than the grid's are reprojected first (GeoJSON without a ``crs`` member is WGS 84).

    Args:
        vector_path: a GeoJSON FeatureCollection.
        like: the grid: a raster whose grid to use (path), or its GeoBox (shape, affine, CRS).
        out_path: where to write the ``(height, width)`` uint8 GeoTIFF (DEFLATE, tiled) on that grid.
        burn_value: value inside polygons.
        background: value elsewhere.

    Returns:
        ``out_path``.

    Raises:
        SceneNotFoundError: ``vector_path`` does not exist.
        CorruptSceneError: it is not a GeoJSON FeatureCollection.
        MissingCRSError: the grid has no CRS, so the polygons cannot be placed on it.
        EmptySceneError: no polygon lies on the grid (the reference does not overlap the map).
    """
    import rasterio
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    if not Path(vector_path).exists():
        raise SceneNotFoundError(f"{vector_path}: reference not found")
    try:
        collection = json.loads(Path(vector_path).read_text())
        features = collection["features"]
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptSceneError(f"{vector_path}: not a GeoJSON FeatureCollection ({error})") from error
    geobox, grid_name = _grid_of(like)
    grid = rasterio_grid_profile(geobox)
    if grid["crs"] is None:
        raise MissingCRSError(f"{grid_name}: has no CRS, so {vector_path} cannot be placed on its grid")
    grid_crs = CRS.from_user_input(grid["crs"])
    source_crs = _geojson_crs(collection)
    extent = geobox.boundingbox
    bounds = (extent.left, extent.bottom, extent.right, extent.top)
    from shapely.geometry import box

    grid_box = box(*bounds)
    shapes, outside = [], []
    for number, feature in enumerate(features):
        geometry = feature.get("geometry")
        if not geometry:
            continue
        if CRS.from_user_input(source_crs) != grid_crs:
            geometry = transform_geom(source_crs, grid_crs, geometry)
        placed = _placed_on_grid(geometry, bounds, grid_crs.is_geographic)
        if not placed.intersects(grid_box):
            outside.append(str(feature.get("id", number)))
        shapes.append((placed, burn_value))
    if len(outside) == len(shapes):  # no polygon on the map: the reference would be all background
        raise EmptySceneError(
            f"{vector_path}: the reference does not overlap the map {grid_name} (none of its "
            f"{len(features)} feature(s) lies on it); check that both cover the same place and CRS"
        )
    if outside:
        logger.warning(
            "%s: %d of %d polygon(s) lie outside %s and are not on the reference map (features %s)",
            vector_path, len(outside), len(features), grid_name, ", ".join(outside[:10]),
        )  # fmt: skip
    shape = (geobox.height, geobox.width)
    burnt = (
        rasterize(shapes, out_shape=shape, transform=geobox.affine, fill=background, dtype="uint8")
        if shapes
        else np.full(shape, background, np.uint8)
    )
    profile = {"driver": "GTiff", **grid, "count": 1, "dtype": "uint8", "compress": "DEFLATE", "tiled": True}
    with rasterio.open(out_path, "w", **profile) as out:
        out.write(burnt, 1)
    return out_path
