"""Georeferencing is one value (odc-geo GeoBox) from the first read to the last write, rotated grids included.

A rotated scene with a real CRS is tiled, read back with rioxarray and with odc-geo, mosaicked to a COG,
catalogued in STAC and used as the grid of a rasterised reference; each must give the scene's exact grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from conftest import write_geotiff
from odc.geo.geobox import GeoboxTiles
from rio_cogeo.cogeo import cog_validate
from shapely.geometry import LinearRing, Polygon, shape

from eoseg.catalog.stac import build_map_item
from eoseg.evaluate.reference import rasterize_reference
from eoseg.evaluate.scores import GridMismatchError, confusion_matrix_from_rasters
from eoseg.geometry import (
    ChunkGrid,
    footprint_wgs84,
    geobox_of,
    grid_offset_pixels,
    grids_match,
    make_geobox,
    xy_coordinates,
)
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.scene.inspect import inspect_scene
from eoseg.store.layout import StoreInfo, read_store_info
from eoseg.tile.stage import tile_scene

# 0.5 m pixels in UTM 16N, the grid turned 20 degrees: b and d are far from 0.
ROTATED = Affine.translation(500000.0, 4200000.0) @ Affine.rotation(-20.0) @ Affine.scale(0.5, -0.5)
NORTH_UP = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)
CRS = "EPSG:32616"


def _scene(path: Path, transform: Affine) -> Path:
    rng = np.random.default_rng(11)
    array = rng.integers(1, 255, size=(3, 70, 90), dtype=np.uint8)
    array[:, :4, :] = 0  # a nodata collar
    return write_geotiff(path, array, crs=CRS, nodata=0, transform=transform)


@pytest.fixture(scope="module")
def rotated_scene(tmp_path_factory) -> Path:
    return _scene(tmp_path_factory.mktemp("rotated") / "rotated.tif", ROTATED)


@pytest.fixture(scope="module")
def rotated_store(rotated_scene, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("rotated_store") / "rotated.zarr"
    tile_scene(str(rotated_scene), str(store), chunk_size=32, show_progress=False)
    return store


def _corners_wgs84(path: Path) -> list[tuple[float, float]]:
    from rasterio.warp import transform as warp

    with rasterio.open(path) as dataset:
        corners = [
            dataset.transform @ corner
            for corner in ((0, 0), (dataset.width, 0), (dataset.width, dataset.height), (0, dataset.height))
        ]
        xs, ys = warp(dataset.crs, "EPSG:4326", [x for x, _ in corners], [y for _, y in corners])
    return list(zip(xs, ys, strict=True))


def test_scene_and_store_info_carry_one_geobox(rotated_scene, rotated_store):
    scene = inspect_scene(str(rotated_scene))
    with rasterio.open(rotated_scene) as src:
        assert scene.geobox == geobox_of(src)
        assert scene.geobox.affine == ROTATED and not scene.geobox.axis_aligned
        assert scene.crs_wkt == src.crs.to_wkt()  # the file's WKT, verbatim
    info = read_store_info(str(rotated_store))
    assert info.geobox == scene.geobox
    # On disk the grid stays four keys of the eoseg attribute (docs/store-layout.md), exactly.
    attrs = info.to_attrs()
    assert "geobox" not in attrs
    assert (attrs["height"], attrs["width"], attrs["crs_wkt"]) == (70, 90, scene.crs_wkt)
    assert attrs["transform"] == list(ROTATED)[:6]
    assert StoreInfo.from_attrs(json.loads(json.dumps(attrs))) == info


def test_rotated_store_is_placed_exactly_by_rioxarray_and_odc_geo(rotated_scene, rotated_store):
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    dataset = xr.open_zarr(rotated_store, consolidated=False, mask_and_scale=False, decode_coords="all")
    image = dataset["image"]
    # No 1-D x/y for a rotated grid: the GeoTransform of the grid mapping places it.
    assert "x" not in dataset.coords and "y" not in dataset.coords
    assert dataset["spatial_ref"].attrs["GeoTransform"].split() == [repr(v) for v in ROTATED.to_gdal()]
    with rasterio.open(rotated_scene) as src:
        assert image.rio.transform() == src.transform == ROTATED
        assert image.rio.crs == src.crs
        geobox = image.odc.geobox
        assert geobox is not None
        assert geobox.affine == ROTATED
        assert geobox.crs == CRS and geobox.shape == (70, 90)
        assert geobox == geobox_of(src)
        np.testing.assert_array_equal(image.values, src.read())
    # The default decoding (grid mapping left in attrs) places it the same.
    plain = xr.open_zarr(rotated_store, consolidated=False)["image"]
    assert plain.rio.transform() == ROTATED and plain.odc.geobox.affine == ROTATED


def test_mosaic_of_rotated_store_has_the_scene_transform(rotated_scene, rotated_store, tmp_path):
    cog = tmp_path / "rotated_b2.tif"
    mosaic_to_cog(str(rotated_store), str(cog), band=2, show_progress=False)
    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(rotated_scene) as src, rasterio.open(cog) as out:
        assert out.transform == src.transform == ROTATED
        assert out.crs == src.crs and out.nodata == src.nodata
        np.testing.assert_array_equal(out.read(1), src.read(2))


def test_north_up_store_keeps_pixel_centre_coordinates(tmp_path):
    import odc.geo.xr  # noqa: F401

    scene = _scene(tmp_path / "north_up.tif", NORTH_UP)
    store = tmp_path / "north_up.zarr"
    tile_scene(str(scene), str(store), chunk_size=32, show_progress=False)
    dataset = xr.open_zarr(store, consolidated=False, decode_coords="all")
    np.testing.assert_array_equal(dataset["x"].values, 500000.0 + 0.5 * (np.arange(90) + 0.5))
    np.testing.assert_array_equal(dataset["y"].values, 4200000.0 - 0.5 * (np.arange(70) + 0.5))
    assert dataset["image"].rio.transform() == NORTH_UP
    assert dataset["image"].odc.geobox == make_geobox((70, 90), NORTH_UP, CRS)


def test_chunk_grid_cuts_the_tiles_geoboxtiles_cuts():
    geobox = make_geobox((70, 90), ROTATED, CRS)
    grid = ChunkGrid.for_geobox(geobox, chunk_rows=32, chunk_cols=40)
    tiles = GeoboxTiles(geobox, (32, 40))
    assert grid.shape_in_chunks == tiles.shape.yx
    for index, window in grid.windows():
        assert window.slices == tiles.roi[index]
        assert window.geobox_in(geobox) == tiles[index]
    # A halo window keeps its place on the map: its first pixel is where the scene has it.
    grown = grid.window(1, 1).grown(8, height_limit=70, width_limit=90)
    assert grown.geobox_in(geobox).affine @ (0, 0) == ROTATED @ (grown.col_off, grown.row_off)
    assert xy_coordinates(geobox) == {}


def test_grid_tolerance_is_a_fraction_of_a_pixel_whatever_the_units():
    # Degrees: half a pixel of 1e-5 degrees is 5e-6, below Affine.almost_equals' absolute 1e-5.
    degrees = make_geobox((100, 100), Affine(1e-5, 0, 10.0, 0, -1e-5, 50.0), "EPSG:4326")
    shifted = make_geobox((100, 100), Affine(1e-5, 0, 10.0 + 5e-6, 0, -1e-5, 50.0), "EPSG:4326")
    assert grid_offset_pixels(degrees, shifted) == pytest.approx(0.5)
    assert not grids_match(degrees, shifted)
    # Metres: a thousandth of a 0.5 m pixel is 5e-4 m, above almost_equals' 1e-5, yet the same grid.
    metres = make_geobox((100, 100), NORTH_UP, CRS)
    nudged = make_geobox((100, 100), Affine(0.5, 0, 500000.0005, 0, -0.5, 4200000.0), CRS)
    assert grids_match(metres, nudged)
    assert not grids_match(metres, make_geobox((100, 100), NORTH_UP, "EPSG:32617"))
    assert not grids_match(metres, make_geobox((100, 101), NORTH_UP, CRS))
    assert grids_match(make_geobox((100, 100), ROTATED, CRS), make_geobox((100, 100), ROTATED, CRS))
    assert not grids_match(make_geobox((100, 100), ROTATED, CRS), metres)


@pytest.mark.parametrize("transform", [ROTATED, NORTH_UP], ids=["rotated", "north-up"])
def test_stac_footprint_follows_the_grid(transform, tmp_path):
    scene = _scene(tmp_path / "scene.tif", transform)
    store = tmp_path / "scene.zarr"
    tile_scene(str(scene), str(store), chunk_size=64, show_progress=False)
    cog = tmp_path / "map.tif"
    mosaic_to_cog(str(store), str(cog), band=1, show_progress=False)
    item = build_map_item(
        str(cog), scene_uri=str(scene), acquired_tag=None, scene_modified=0.0, model_uri=None
    )
    ring = item.geometry["coordinates"][0]
    assert ring[0] == ring[-1] and LinearRing(ring).is_ccw  # RFC 7946: counter-clockwise exterior
    footprint = shape(item.geometry)
    corners = _corners_wgs84(cog)
    quadrilateral = Polygon(corners)
    # Every corner of the pixel grid is a vertex of the footprint, and the footprint is that quadrilateral.
    for corner in corners:
        assert min(np.hypot(x - corner[0], y - corner[1]) for x, y in ring) < 1e-9
    # the same up to the slight curvature of the edges in WGS 84
    assert footprint.symmetric_difference(quadrilateral).area < 1e-5 * quadrilateral.area
    assert item.bbox == pytest.approx(list(footprint.bounds), abs=1e-12)
    assert item.properties["proj:transform"] == list(transform)[:6]
    assert item.properties["proj:shape"] == [70, 90]
    assert item.properties["proj:code"] == CRS
    xs, ys = zip(*(transform @ c for c in ((0, 0), (90, 0), (90, 70), (0, 70))), strict=True)
    assert item.properties["proj:bbox"] == pytest.approx([min(xs), min(ys), max(xs), max(ys)])
    if transform is ROTATED:  # the rotated footprint is not its bounding box
        assert footprint.area < 0.9 * Polygon.from_bounds(*item.bbox).area


def _square_around_centre(scene: Path, path: Path) -> Path:
    """A GeoJSON (WGS 84) square of about 10 m around the scene's centre pixel."""
    from rasterio.warp import transform as warp

    with rasterio.open(scene) as src:
        x, y = src.transform @ (45, 35)
        (lon,), (lat,) = warp(src.crs, "EPSG:4326", [x], [y])
    half = 5e-5
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def test_reference_rasterised_on_a_geobox_equals_on_a_raster(rotated_scene, tmp_path):
    vectors = _square_around_centre(rotated_scene, tmp_path / "square.geojson")
    with rasterio.open(rotated_scene) as src:
        geobox = geobox_of(src)
    from_raster = rasterize_reference(str(vectors), str(rotated_scene), str(tmp_path / "a.tif"))
    from_geobox = rasterize_reference(str(vectors), geobox, str(tmp_path / "b.tif"))
    with rasterio.open(from_raster) as a, rasterio.open(from_geobox) as b:
        assert a.transform == b.transform == ROTATED and a.crs == b.crs
        burnt = b.read(1)
        np.testing.assert_array_equal(a.read(1), burnt)
    assert 100 < int((burnt == 255).sum()) < 70 * 90 // 2  # ~400 pixels of 0.25 m^2
    assert burnt[35, 45] == 255  # the centre pixel

    # Scoring against it checks the grid; one pixel of shift is refused, in any CRS unit.
    counts = confusion_matrix_from_rasters(from_geobox, from_raster)
    assert int(counts.counts.sum()) == 70 * 90
    one_right = ROTATED @ Affine.translation(1, 0)
    shifted = write_geotiff(tmp_path / "shifted.tif", burnt, crs=CRS, transform=one_right)
    with pytest.raises(GridMismatchError, match="1 pixels apart"):
        confusion_matrix_from_rasters(from_geobox, shifted)


def test_polygon_labels_burn_onto_the_store_geobox(rotated_scene, rotated_store, tmp_path):
    """Fine-tuning labels given as polygons use the store's GeoBox, no throw-away GeoTIFF of its grid."""
    from eoseg.train.labels import prepare_label_raster

    vectors = _square_around_centre(rotated_scene, tmp_path / "square.geojson")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    info = read_store_info(str(rotated_store))
    labels = prepare_label_raster(str(vectors), str(rotated_store), info, str(scratch))
    expected = rasterize_reference(str(vectors), str(rotated_scene), str(tmp_path / "expected.tif"))
    with rasterio.open(labels) as got, rasterio.open(expected) as want:
        assert got.transform == ROTATED and got.crs == want.crs
        np.testing.assert_array_equal(got.read(1), want.read(1))
    assert sorted(path.name for path in scratch.iterdir() if path.suffix == ".tif") == ["labels.tif"]


def test_ungeoreferenced_grid_has_no_footprint(tmp_path):
    grid = make_geobox((10, 20), NORTH_UP, None)
    assert footprint_wgs84(grid) is None
    assert grids_match(grid, make_geobox((10, 20), NORTH_UP, None))
    assert not grids_match(grid, make_geobox((10, 20), NORTH_UP, CRS))


def test_polygons_across_the_antimeridian_land_on_a_grid_past_180_degrees(tmp_path, caplog):
    """RFC 7946 longitudes in [-180, 180] burn onto a geographic grid from 170 to 190 degrees east;
    a polygon outside the grid is reported, not dropped silently."""
    from odc.geo.geobox import GeoBox as OdcGeoBox

    grid = OdcGeoBox((10, 20), Affine(1.0, 0.0, 170.0, 0.0, -1.0, 5.0), "EPSG:4326")

    def square(west: float, east: float, feature_id: str) -> dict:
        ring = [[west, 0.0], [east, 0.0], [east, 4.0], [west, 4.0], [west, 0.0]]
        return {"type": "Feature", "id": feature_id, "geometry": {"type": "Polygon", "coordinates": [ring]}}

    # One polygon split at the antimeridian (as RFC 7946 asks): 178..180 and -180..-176; one west of
    # 180 only (-175..-172 = 185..188 on the grid); one far away.
    split = {
        "type": "Feature",
        "id": "split",
        "geometry": {
            "type": "MultiPolygon",
            "coordinates": [
                [[[178.0, 0.0], [180.0, 0.0], [180.0, 4.0], [178.0, 4.0], [178.0, 0.0]]],
                [[[-180.0, 0.0], [-176.0, 0.0], [-176.0, 4.0], [-180.0, 4.0], [-180.0, 0.0]]],
            ],
        },
    }
    collection = {
        "type": "FeatureCollection",
        "features": [split, square(-175, -172, "east"), square(10, 12, "far")],
    }
    vector = tmp_path / "labels.geojson"
    vector.write_text(json.dumps(collection))
    with caplog.at_level("WARNING", logger="eoseg.evaluate.reference"):
        burnt_path = rasterize_reference(str(vector), grid, str(tmp_path / "ref.tif"))
    with rasterio.open(burnt_path) as burnt:
        values = burnt.read(1)
    expected = np.zeros((10, 20), np.uint8)
    expected[1:5, 8:14] = 255  # 178..184 (the split polygon, both parts)
    expected[1:5, 15:18] = 255  # 185..188
    assert np.array_equal(values, expected)
    assert "1 of 3 polygon(s) lie outside" in caplog.text and "far" in caplog.text
