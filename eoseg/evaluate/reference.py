"""Reference maps from vector labels: GeoJSON polygons burnt onto a label map's pixel grid.

Some labelled scenes ship polygons rather than a raster (SpaceNet's building footprints). Evaluating
against them means rasterising them onto exactly the grid of the map being scored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eoseg.errors import CorruptSceneError, MissingCRSError, SceneNotFoundError

VECTOR_SUFFIXES = (".geojson", ".json")


def is_vector_reference(path: str) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def _geojson_crs(collection: dict) -> str:
    """The collection's CRS: its legacy ``crs`` member if present, else RFC 7946's WGS 84."""
    name = collection.get("crs", {}).get("properties", {}).get("name")
    if not name:
        return "EPSG:4326"
    if "CRS84" in name:
        return "OGC:CRS84"
    if "EPSG::" in name:
        return "EPSG:" + name.rsplit("::", 1)[-1]
    return name


def rasterize_reference(vector_path: str, like_path: str, out_path: str, *, burn_value: int = 255,
                        background: int = 0) -> str:
    """Burn the polygons of a GeoJSON file onto the grid of ``like_path`` as a uint8 GeoTIFF.

    Pixels whose centre falls inside a polygon get ``burn_value``, all others ``background``.
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom

    if not Path(vector_path).exists():
        raise SceneNotFoundError(f"{vector_path}: reference not found")
    try:
        collection = json.loads(Path(vector_path).read_text())
        features = collection["features"]
    except (ValueError, KeyError, TypeError) as error:
        raise CorruptSceneError(f"{vector_path}: not a GeoJSON FeatureCollection ({error})") from error
    with rasterio.open(like_path) as like:
        if like.crs is None:
            raise MissingCRSError(f"{like_path}: has no CRS, so {vector_path} cannot be placed on its grid")
        source_crs = _geojson_crs(collection)
        shapes = []
        for feature in features:
            geometry = feature.get("geometry")
            if not geometry:
                continue
            if rasterio.crs.CRS.from_user_input(source_crs) != like.crs:
                geometry = transform_geom(source_crs, like.crs, geometry)
            shapes.append((geometry, burn_value))
        burnt = rasterize(shapes, out_shape=(like.height, like.width), transform=like.transform, fill=background,
                          dtype="uint8") if shapes else np.full((like.height, like.width), background, np.uint8)
        profile = {"driver": "GTiff", "width": like.width, "height": like.height, "count": 1, "dtype": "uint8",
                   "crs": like.crs, "transform": like.transform, "compress": "DEFLATE", "tiled": True}
    with rasterio.open(out_path, "w", **profile) as out:
        out.write(burnt, 1)
    return out_path
