"""STAC items for maps and the catalogue at the output prefix, locally and on the loopback S3 endpoint."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from conftest import write_geotiff

from eoseg.catalog.stac import (
    StorageStacIO,
    acquisition_datetime,
    catalog_uri_for_prefix,
    catalogue_map,
    date_from_file_name,
    item_uri_for_map,
)

UTC = dt.UTC


def _label_map(path, *, num_classes=3):
    """A small label GeoTIFF as eoseg's mosaic writes it: nodata 255, colour table, class and model tags."""
    labels = (np.arange(70 * 90).reshape(70, 90) % num_classes).astype(np.uint8)
    labels[:5] = 255
    write_geotiff(path, labels, nodata=255)
    with rasterio.open(path, "r+") as dataset:
        dataset.update_tags(
            EOSEG_NUM_CLASSES=str(num_classes),
            EOSEG_MODEL=json.dumps({"family": "clusterer", "checkpoint": "/models/m.pt"}),
        )
        dataset.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255)})
    return path


def _scene(path, *, datetime_tag=None):
    array = np.random.default_rng(3).integers(1, 255, size=(3, 70, 90), dtype=np.uint8)
    write_geotiff(path, array)
    if datetime_tag:
        with rasterio.open(path, "r+") as dataset:
            dataset.update_tags(TIFFTAG_DATETIME=datetime_tag)
    return path


def test_datetime_from_tag_then_file_name_then_mtime():
    assert acquisition_datetime("x.tif", acquired_tag="2021:06:01 10:30:00", modified=0) == (
        dt.datetime(2021, 6, 1, 10, 30, tzinfo=UTC),
        "tiff-tag",
    )
    assert acquisition_datetime("/d/m_4709963_se_14_1_20090818.tif", acquired_tag=None, modified=0) == (
        dt.datetime(2009, 8, 18, tzinfo=UTC),
        "file-name",
    )
    assert acquisition_datetime("/d/m_4709963_se_14_1_20090818.tif", acquired_tag="not a date", modified=0)[
        1
    ] == ("file-name")
    assert acquisition_datetime("/d/scene_99.tif", acquired_tag=None, modified=86400.0) == (
        dt.datetime(1970, 1, 2, tzinfo=UTC),
        "file-mtime",
    )
    assert date_from_file_name("m_4709963_se_14_1_20090231.tif") is None  # no 31 February
    assert date_from_file_name("tile_4709963.tif") is None


def test_item_describes_the_map_and_the_catalogue_lists_it_once(tmp_path):
    (tmp_path / "in").mkdir()
    scene = _scene(tmp_path / "in" / "scene.tif", datetime_tag="2021:06:01 10:30:00")
    maps = tmp_path / "maps"
    maps.mkdir()
    map_path = _label_map(maps / "scene.tif")
    (maps / "scene.png").write_bytes(b"png")
    entry = catalogue_map(
        str(map_path), scene_uri=str(scene), model_uri="/models/m.pt", quicklook_uri=str(maps / "scene.png")
    )
    assert entry["item"] == str(maps / "scene.item.json") == item_uri_for_map(str(map_path))
    assert entry["catalog"] == str(maps / "catalog.json") == catalog_uri_for_prefix(str(maps))
    assert (entry["datetime_source"], entry["shape"]) == ("tiff-tag", [70, 90])

    item = pystac.Item.from_file(entry["item"])
    assert item.datetime == dt.datetime(2021, 6, 1, 10, 30, tzinfo=UTC)
    # Footprint: the grid's corners (UTM 16N, 500000 E / 4200000 N, 0.5 m pixels) in WGS84, counter-clockwise.
    lon, lat = -87.0, 37.9466
    west, south, east, north = item.bbox
    assert west == pytest.approx(lon, abs=1e-4) and north == pytest.approx(lat, abs=1e-3)
    assert 0 < east - west < 1e-3 and 0 < north - south < 1e-3
    ring = item.geometry["coordinates"][0]
    assert ring[0] == ring[-1]
    signed_area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))
    assert signed_area > 0
    props = item.properties
    assert props["proj:code"] == "EPSG:32616"
    assert props["proj:shape"] == [70, 90]
    assert props["proj:transform"] == list(Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0))[:6]
    classes = item.assets["map"].extra_fields["classification:classes"]
    assert [(c["value"], c["name"], c.get("title")) for c in classes[:3]] == [
        (0, "cluster_0", "cluster 0"),
        (1, "cluster_1", "cluster 1"),
        (2, "cluster_2", "cluster 2"),
    ]
    assert classes[0]["color_hint"] == "FF0000" and classes[-1] == {
        "value": 255,
        "name": "nodata",
        "title": "no data",
        "nodata": True,
    }
    assert item.assets["map"].media_type == pystac.MediaType.COG
    assert set(item.assets["thumbnail"].roles) == {"thumbnail", "overview"}
    assert item.assets["model"].href == "/models/m.pt" and item.assets["source"].href == str(scene)
    assert {link.href for link in item.links if link.rel == "derived_from"} == {str(scene), "/models/m.pt"}
    assert any("projection" in uri for uri in item.stac_extensions)
    assert any("classification" in uri for uri in item.stac_extensions)

    catalogue_map(
        str(map_path), scene_uri=str(scene), model_uri=None, quicklook_uri=None
    )  # again: no duplicate
    second = _label_map(maps / "other.tif")
    catalogue_map(str(second), scene_uri=str(scene), model_uri=None, quicklook_uri=None)
    catalog = pystac.Catalog.from_file(str(maps / "catalog.json"))
    assert sorted(item.id for item in catalog.get_items()) == ["other", "scene"]
    assert not [name for name in os.listdir(maps) if name.startswith(".")]  # atomic writes left nothing


@pytest.mark.s3
def test_catalogue_on_s3_through_the_storage_stac_io(s3_bucket, tmp_path):
    from eoseg.io.storage import s3_filesystem

    fs = s3_filesystem()
    scene = _scene(tmp_path / "m_4709963_se_14_1_20100629.tif")
    fs.put_file(str(scene), f"{s3_bucket}/incoming/{scene.name}")
    fs.put_file(str(_label_map(tmp_path / "map.tif")), f"{s3_bucket}/maps/{scene.stem}.tif")
    entry = catalogue_map(
        f"{s3_bucket}/maps/{scene.stem}.tif",
        scene_uri=f"{s3_bucket}/incoming/{scene.name}",
        model_uri=f"{s3_bucket}/models/m.pt",
        quicklook_uri=None,
    )
    assert entry["datetime_source"] == "file-name" and entry["datetime"].startswith("2010-06-29")
    catalog = pystac.Catalog.from_file(f"{s3_bucket}/maps/catalog.json", stac_io=StorageStacIO())
    (item,) = list(catalog.get_items())
    assert item.assets["map"].href == f"{s3_bucket}/maps/{scene.stem}.tif"
    assert item.get_self_href() == f"{s3_bucket}/maps/{scene.stem}.item.json"
