"""End to end inside the Prefect test harness: `segment-scene` on real scenes produces a valid COG."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from conftest import REAL_SCENES, SHARED_DATA, open_map_on_scene_grid
from PIL import Image
from rio_cogeo.cogeo import cog_validate

from cli.main import format_run_summary
from eoseg.compute.cluster import ClusterSpec
from eoseg.config import ClustererTrainingOptions, EvaluateOptions, TileOptions
from flows.segment_flows import segment_scene_flow

SMALL_TRAINING = ClustererTrainingOptions(epochs=1, iterations=3, batch_size=4, patch_size=32, max_patches=16)

# Every flow run in these tests goes to one real temporary Prefect server.
pytestmark = pytest.mark.usefixtures("prefect_server")


def test_segment_spacenet_end_to_end_with_scores(tmp_path, dask_address, shared_data):
    map_path = tmp_path / "spacenet_map.tif"
    result = segment_scene_flow(
        str(REAL_SCENES["spacenet"]), str(map_path),
        reference_uri=str(SHARED_DATA / "spacenet" / "geotiff_labels.geojson"),
        tile=TileOptions(chunk_size=512), training=SMALL_TRAINING, cluster=ClusterSpec(address=dask_address),
        evaluate=EvaluateOptions(class_names="spacenet", baseline="kmeans"),
    )  # fmt: skip
    with open_map_on_scene_grid(map_path, REAL_SCENES["spacenet"]) as out:
        labels = out.read(1)
        assert labels.dtype == np.uint8 and labels.max() < 8
    assert result["model"] == str(tmp_path / "spacenet_map.model.pt")
    assert (tmp_path / "spacenet_map.model.pt").exists()
    with Image.open(tmp_path / "spacenet_map.png") as png:
        assert png.width > 2 * 512
    scores = json.loads((tmp_path / "spacenet_map.scores.json").read_text())
    for method in ("majority", "hungarian"):
        assert set(scores[method]) >= {"f1", "iou", "oa", "kappa", "per_class", "mapping"}
        assert 0.0 <= scores[method]["oa"] <= 1.0
    assert result["scores"]["majority"]["oa"] == scores["majority"]["oa"]
    assert scores["majority"]["per_class"]["255"]["name"] == "building"
    # The k-means baseline: a map on the scene's grid, scored the same way, printed beside the model's.
    with (
        rasterio.open(tmp_path / "spacenet_map.kmeans.tif") as baseline,
        rasterio.open(REAL_SCENES["spacenet"]) as scene,
    ):
        assert (baseline.crs, baseline.transform, baseline.shape) == (scene.crs, scene.transform, scene.shape)
        values = set(np.unique(baseline.read(1)).tolist())
        assert values <= set(range(8)) | {255} and len(values - {255}) > 1
    baseline_scores = json.loads((tmp_path / "spacenet_map.kmeans.scores.json").read_text())
    assert baseline_scores["hungarian"] == result["baseline_scores"]["hungarian"]
    summary = format_run_summary(result)
    assert "k-means maj." in summary and "255 building" in summary


def test_second_scene_with_existing_weights_skips_training(tmp_path, dask_address, shared_data):
    """As in the paper: a model trained on one scene segments a disjoint but similar one."""
    first = tmp_path / "naip_2009.tif"
    segment_scene_flow(
        str(REAL_SCENES["naip"]),
        str(first),
        tile=TileOptions(chunk_size=512),
        training=SMALL_TRAINING,
        cluster=ClusterSpec(address=dask_address),
    )
    weights = tmp_path / "naip_2009.model.pt"
    second = tmp_path / "naip_2020.tif"
    result = segment_scene_flow(
        str(SHARED_DATA / "naip" / "m_4709963_se_14_1_20200831.tif"),
        str(second),
        weights_uri=str(weights),
        tile=TileOptions(chunk_size=512),
        cluster=ClusterSpec(address=dask_address),
    )
    assert result["training"] is None and result["model"] == str(weights)
    assert not (tmp_path / "naip_2020.model.pt").exists()
    assert cog_validate(str(second), quiet=True) == (True, [], [])
