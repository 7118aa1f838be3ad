"""The flows behind the deployments, called directly against the session's Prefect server.

`train-model` trains on a set of two scenes and publishes a checkpoint; `city-run` applies it to both
scenes and catalogues the maps. Small scenes and a thread-based local Dask cluster keep it short.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pystac
import pytest
import torch
from conftest import write_geotiff

from eoseg.compute.cluster import ClusterSpec
from eoseg.config import ClustererTrainingOptions, TileOptions
from eoseg.errors import ConfigurationError
from flows.deploy_flows import city_run_flow, configured, s3_credentials, train_model_flow

pytestmark = pytest.mark.usefixtures("prefect_server")

THREADS = ClusterSpec(n_workers=1, threads_per_worker=2, processes=False)
TINY_TRAINING = ClustererTrainingOptions(num_classes=3, epochs=1, iterations=1, batch_size=2, patch_size=32)


@pytest.fixture()
def two_scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    rng = np.random.default_rng(11)
    for date in ("20200101", "20200102"):
        write_geotiff(folder / f"area_{date}.tif", rng.integers(1, 255, size=(3, 70, 90), dtype=np.uint8))
    return folder


def test_train_model_on_a_set_then_city_run_with_the_published_checkpoint(tmp_path, two_scenes):
    model_uri = tmp_path / "models" / "area-v1.pt"
    published = train_model_flow(
        str(model_uri),
        scenes_prefix=str(two_scenes),
        tile=TileOptions(chunk_size=64),
        training=TINY_TRAINING,
        cluster=THREADS,
    )
    assert published["model_uri"] == str(model_uri) and len(published["stores"]) == 2
    checkpoint = torch.load(model_uri, weights_only=True)
    assert checkpoint["num_classes"] == 3 and len(checkpoint["train_params"]["store_uris"]) == 2
    assert published["training"]["patches"] == 8  # 2 scenes x 4 whole 32 px patches of 70 x 90 px
    with pytest.raises(ConfigurationError, match="already published"):
        train_model_flow(
            str(model_uri), scenes_prefix=str(two_scenes), training=TINY_TRAINING, cluster=THREADS
        )

    # A reference map beside a scene (NAME.reference.tif) is picked up: that scene gets scores.
    reference = np.random.default_rng(5).integers(0, 2, size=(70, 90), dtype=np.uint8)
    write_geotiff(two_scenes / "area_20200101.reference.tif", reference)
    maps = tmp_path / "maps"
    result = city_run_flow(
        str(maps),
        scenes_prefix=str(two_scenes),
        weights_uri=str(model_uri),
        tile=TileOptions(chunk_size=64),
        cluster=THREADS,
    )
    assert [row["status"] for row in result["scenes"]] == ["mapped", "mapped"]
    assert result["scenes"][0]["scores"]["majority"]["oa"] > 0 and result["scenes"][1]["scores"] is None
    assert (maps / "area_20200101.scores.json").exists()
    catalog = pystac.Catalog.from_file(str(maps / "catalog.json"))
    items = sorted(catalog.get_items(), key=lambda item: item.id)
    assert [item.id for item in items] == ["area_20200101", "area_20200102"]
    assert items[0].properties["eoseg:datetime_source"] == "file-name"
    assert items[0].assets["model"].href == str(model_uri)
    assert items[0].assets["scores"].href == str(maps / "area_20200101.scores.json")
    assert (maps / "area_20200101.png").exists() and not (maps / "area_20200101.model.pt").exists()


def test_unresolved_deploy_time_variables_are_refused():
    assert configured("  s3://bucket/x ", "scenes_prefix") == "s3://bucket/x"
    assert configured("", "weights_uri") is None
    with pytest.raises(ConfigurationError, match="EOSEG_SCENES_PREFIX was not set"):
        configured("{{ $EOSEG_SCENES_PREFIX }}", "scenes_prefix")
    with pytest.raises(ConfigurationError, match="output_prefix is required"):
        configured(None, "output_prefix", required=True)


def test_credentials_from_a_secret_block_last_only_for_the_run():
    from prefect.blocks.system import Secret

    Secret(value={"aws_access_key_id": "block-key-id", "aws_secret_access_key": "block-secret-value"}).save(
        "eoseg-test-s3-credentials", overwrite=True
    )
    before = {key: os.environ.get(key) for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    with s3_credentials("eoseg-test-s3-credentials"):
        assert os.environ["AWS_ACCESS_KEY_ID"] == "block-key-id"
        assert os.environ["AWS_SECRET_ACCESS_KEY"] == "block-secret-value"
    assert {key: os.environ.get(key) for key in before} == before
    Secret(value=json.dumps({"password": "x"})).save("eoseg-test-not-s3", overwrite=True)
    with pytest.raises(ConfigurationError, match="aws_secret_access_key"):
        with s3_credentials("eoseg-test-not-s3"):
            pass
