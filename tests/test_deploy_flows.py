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
from flows.deploy_flows import city_run_flow, train_model_flow
from flows.deployment_parameters import DEPLOYMENT_VARIABLES, configured, s3_credentials, weights_choice
from flows.run_summary import _summary_markdown, _titled
from flows.scene_mapping import _for_deployment_users

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
    # A small local quick-look is embedded in the artifact, so a browser shows it.
    assert result["scenes"][0]["quicklook_link"].startswith("data:image/png;base64,iVBORw0KGgo")
    # The same scenes again into the same prefix: refused before any work, naming the parameter.
    with pytest.raises(ConfigurationError, match=r"2 of 2 map\(s\) already exist.*-p overwrite=true"):
        city_run_flow(str(maps), scenes_prefix=str(two_scenes), weights_uri=str(model_uri), cluster=THREADS)


def test_unresolved_deploy_time_variables_are_refused():
    assert configured("  s3://bucket/x ", "scenes_prefix") == "s3://bucket/x"
    assert configured("", "work_prefix") is None
    with pytest.raises(ConfigurationError, match="EOSEG_SCENES_PREFIX was not set"):
        configured("{{ $EOSEG_SCENES_PREFIX }}", "scenes_prefix")
    # `prefect deploy` turns an unset {{ $EOSEG_OUTPUT_PREFIX }} into "": the error names the variable.
    with pytest.raises(ConfigurationError, match=r"output_prefix is empty.*set EOSEG_OUTPUT_PREFIX"):
        configured("", "output_prefix", required=True)
    with pytest.raises(ConfigurationError, match=r"model_uri is empty.*-p model_uri="):
        configured(None, "model_uri", required=True)


def test_training_per_scene_is_an_explicit_choice_never_an_empty_value():
    assert weights_choice("train") is None
    assert weights_choice(" s3://bucket/models/v1.pt ") == "s3://bucket/models/v1.pt"
    for empty in ("", "  ", None):
        with pytest.raises(ConfigurationError, match=r"weights_uri is empty.*EOSEG_WEIGHTS_URI.*'train'"):
            weights_choice(empty)


def test_every_deploy_time_variable_of_prefect_yaml_is_named_by_the_flows():
    """Each `{{ $NAME }}` parameter in prefect.yaml is one the flows name when it arrives empty."""
    import re

    import yaml
    from conftest import REPO_ROOT

    spec = yaml.safe_load((REPO_ROOT / "deployments" / "prefect.yaml").read_text())
    seen = set()
    for deployment in spec["deployments"]:
        for name, value in (deployment.get("parameters") or {}).items():
            match = re.fullmatch(r"\{\{\s*\$(\w+)\s*\}\}", str(value))
            if match:
                assert DEPLOYMENT_VARIABLES[name] == match[1], (deployment["name"], name)
                seen.add(name)
    assert seen == set(DEPLOYMENT_VARIABLES)


def test_artifact_title_and_body_say_when_scenes_failed():
    rows = [
        {
            "scene": "s3://b/in/a.tif",
            "status": "mapped",
            "was": "new",
            "pixels": 10,
            "seconds": 1.0,
            "map": "s3://b/maps/a.tif",
            "item": "s3://b/maps/a.item.json",
            "quicklook": "s3://b/maps/a.png",
            "quicklook_link": "http://127.0.0.1:9/b/maps/a.png?X-Amz-Signature=x",
            "scores": None,
        },
        {
            "scene": "s3://b/in/b.tif",
            "status": "failed",
            "was": "new",
            "error": "corrupt upload",
            "seconds": 0.5,
        },
    ]
    title = _titled("city-run: 1 of 2 scene(s) mapped", rows)
    assert title.startswith("FAILED 1 of 2 scene(s): ")
    body = _summary_markdown(title, [], rows)
    assert "**1 of 2 scene(s) failed:**" in body and "`s3://b/in/b.tif`: corrupt upload" in body
    assert "![quick-look of a.tif](http://127.0.0.1:9/b/maps/a.png?X-Amz-Signature=x)" in body
    assert _titled("all good", rows[:1]) == "all good"


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
    with (
        pytest.raises(ConfigurationError, match="aws_secret_access_key"),
        s3_credentials("eoseg-test-not-s3"),
    ):
        pass


def test_eoseg_lines_reach_the_run_logs_once_whatever_the_environment(monkeypatch):
    """configure_logging gives the eoseg logger Prefect's run-log handler, once, and the INFO level."""
    import logging
    import time
    import uuid

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.context import get_run_context
    from prefect.logging.handlers import APILogHandler

    from flows.logs import configure_logging

    eoseg = logging.getLogger("eoseg")
    # As in a worker's flow-run process without PREFECT_LOGGING_EXTRA_LOGGERS: no handler, no level.
    monkeypatch.setattr(eoseg, "handlers", [h for h in eoseg.handlers if not isinstance(h, APILogHandler)])
    monkeypatch.setattr(eoseg, "level", logging.NOTSET)
    marker = f"progress line {uuid.uuid4().hex}"

    @flow(name="eoseg-logging-check")
    def logging_check() -> str:
        configure_logging()
        configure_logging()  # idempotent: no second handler
        logging.getLogger("eoseg.compute").info("tile: 1/1 chunks (100%%) %s", marker)
        return str(get_run_context().flow_run.id)

    run_id = logging_check()
    assert sum(isinstance(h, APILogHandler) for h in eoseg.handlers) == 1
    for handler in eoseg.handlers:
        if isinstance(handler, APILogHandler):
            handler.flush()
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:  # logs reach the server in batches
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            lines = [log.message for log in logs if marker in log.message]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert lines == [f"tile: 1/1 chunks (100%) {marker}"]


def test_errors_met_by_deployment_users_name_parameters_and_deployments_not_cli_commands():
    message = _for_deployment_users("s3://b/a.tif: output already exists; pass --overwrite to replace it")
    assert "--overwrite" not in message and "`-p overwrite=true`" in message
    message = _for_deployment_users("s3://b/m.pt: model checkpoint not found. Train one with `eoseg train`.")
    assert "eoseg train" not in message and "train-model deployment" in message


def test_reprocess_maps_each_acquisition_folder_as_one_mosaic_with_the_published_model_and_legend(tmp_path):
    """``group_by=folder``: SCENES/2023/ and SCENES/2024/ (two tiles each, one grid) give one map each on
    the union grid, made with the published checkpoint and legend (so both dates share names and colours);
    a tile added to 2024/ later remaps 2024 only."""
    import rasterio
    from affine import Affine
    from conftest import train_tiny_clusterer

    from eoseg.mosaic.legend import CLASS_NAMES_TAG
    from eoseg.tile.stage import tile_scene
    from flows.deploy_flows import reprocess_new_acquisitions_flow

    scenes, rng = tmp_path / "scenes", np.random.default_rng(3)
    origin = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)
    for year in ("2023", "2024"):  # the same two 70 x 45 tiles (west, east) of a 70 x 90 area each year
        (scenes / year).mkdir(parents=True)
        for col, side in ((0, "w"), (45, "e")):
            pixels = rng.integers(1, 255, size=(3, 70, 45), dtype=np.uint8)
            write_geotiff(
                scenes / year / f"tile_{side}.tif", pixels, transform=origin @ Affine.translation(col, 0)
            )
    store, model_uri = tmp_path / "train.zarr", tmp_path / "models" / "area-v1.pt"
    tile_scene(str(scenes / "2023" / "tile_w.tif"), str(store), chunk_size=64)
    train_tiny_clusterer(store, model_uri)  # the area's published model
    legend = tmp_path / "models" / "area-v1.legend.yaml"
    legend.write_text('clusters:\n  0: {name: water, colour: "#1f78b4"}\n  1: field\n')
    maps = tmp_path / "maps"

    def reprocess():
        return reprocess_new_acquisitions_flow(
            str(scenes), str(maps), weights_uri=str(model_uri), legend_uri=str(legend), group_by="folder",
            tile=TileOptions(chunk_size=64), cluster=THREADS,
        )  # fmt: skip

    first = reprocess()
    assert [(row["name"], row["tiles"], row["status"]) for row in first["scenes"]] == [
        ("2023", 2, "mapped"),
        ("2024", 2, "mapped"),
    ]
    names = []
    for year in ("2023", "2024"):
        with rasterio.open(maps / f"{year}.tif") as out:  # one map of the whole area per acquisition
            assert (out.shape, out.transform) == ((70, 90), origin)
            names.append(json.loads(out.tags()[CLASS_NAMES_TAG]))
            colours = out.colormap(1)
            assert colours[0][:3] == (0x1F, 0x78, 0xB4)
    assert names[0] == names[1] and (names[0]["0"], names[0]["1"]) == ("water", "field")
    items = {item.id: item for item in pystac.Catalog.from_file(str(maps / "catalog.json")).get_items()}
    assert sorted(items) == ["2023", "2024"] and items["2024"].assets["model"].href == str(model_uri)
    assert "water" in {c["name"] for c in items["2024"].assets["map"].extra_fields["classification:classes"]}
    tile_maps = maps / "2023.tile-maps"  # and, as for a city, one map per input tile on its own grid
    assert sorted(p.name for p in tile_maps.glob("*.tif")) == ["tile_e.tif", "tile_w.tif"]
    assert (tile_maps / "2023.vrt").exists() and (tile_maps / "collection.json").exists()
    with rasterio.open(maps / "2023.tif") as whole, rasterio.open(tile_maps / "tile_e.tif") as east:
        assert east.transform == origin @ Affine.translation(45, 0) and east.shape == (70, 45)
        np.testing.assert_array_equal(east.read(1), whole.read(1)[:, 45:])
        assert json.loads(east.tags()[CLASS_NAMES_TAG]) == names[0]

    assert reprocess()["processed"] == []  # nothing new
    later = rasterio.open(scenes / "2024" / "tile_e.tif").read()  # a tile below the others arrives late
    write_geotiff(scenes / "2024" / "tile_s.tif", later, transform=origin @ Affine.translation(45, 70))
    again = reprocess()
    assert [(row["name"], row["tiles"], row["was"]) for row in again["scenes"]] == [("2024", 3, "stale")]
    with rasterio.open(maps / "2024.tif") as out:
        assert out.shape == (140, 90) and json.loads(out.tags()[CLASS_NAMES_TAG]) == names[0]
    assert sorted(p.name for p in (maps / "2024.tile-maps").glob("*.tif")) == [
        "tile_e.tif",
        "tile_s.tif",
        "tile_w.tif",
    ]
