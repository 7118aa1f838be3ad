"""The CLI runs Prefect flows: runs land in Prefect's history (a real temporary server), errors exit 2."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import REAL_SCENES, SHARED_DATA
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()

# Every flow run in these tests goes to one real temporary Prefect server.
pytestmark = pytest.mark.usefixtures("prefect_server")


def run_eoseg(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed `eoseg` console script against the test session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), COLUMNS="200")
    executable = Path(sys.executable).parent / "eoseg"
    return subprocess.run([str(executable), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _option_names(command) -> list[str]:
    import typer.main

    click_command = typer.main.get_command(app)
    target = click_command if command is None else click_command.commands[command]
    return [name for param in target.params for name in param.opts if name.startswith("--")]


@pytest.mark.parametrize("command", [None, "tile", "mosaic", "evaluate"])
def test_help_explains_every_option(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = _plain(result.output)
    for name in _option_names(command):
        assert name in text, f"{name} missing from `eoseg {command or ''} --help`"
    assert len(text.splitlines()) > 8


@pytest.mark.parametrize("command", [["tile"], ["run"], ["train", "clusterer"], ["legend"]])
def test_every_command_help_names_the_shared_options(command):
    from cli.main import main_options

    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(_plain(result.output).split())
    assert "Shared options, before or after the command:" in text
    for parameter in inspect.signature(main_options).parameters.values():  # each shared option is named
        name = "--" + parameter.name.replace("_", "-")
        assert name in text, f"{name} missing from `eoseg {' '.join(command)} --help`"


def _flow_runs(flow_name: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def _logs_of(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_cli_tile_and_mosaic_run_as_prefect_flows(tmp_path, dask_address, shared_data):
    store, cog = tmp_path / "naip.zarr", tmp_path / "naip_nir.tif"
    before = len(_flow_runs("tile-scene"))
    result = run_eoseg(
        "--cluster",
        dask_address,
        "tile",
        str(REAL_SCENES["naip"]),
        "--out",
        str(store),
        "--chunk-size",
        "256",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tile store: {store}" in result.stdout
    result = run_eoseg("mosaic", str(store), "--out", str(cog), "--band", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"COG: {cog}" in result.stdout
    with rasterio.open(REAL_SCENES["naip"]) as src, rasterio.open(cog) as out:
        np.testing.assert_array_equal(out.read(1), src.read(4))

    runs = _flow_runs("tile-scene")
    assert len(runs) == before + 1
    latest = max(runs, key=lambda run: run.created)
    assert latest.state.is_completed()
    assert latest.parameters["options"]["chunk_size"] == 256
    messages = _logs_of(latest.id)
    assert any(message.startswith("tile: 12/12 chunks (100%)") for message in messages), messages
    assert any("using the Dask cluster at" in message for message in messages)


def test_cli_bad_input_exits_2_with_a_clear_message(tmp_path):
    result = run_eoseg("tile", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "x.zarr"))
    assert result.returncode == 2
    assert f"error: {tmp_path / 'missing.tif'}: scene not found" in _plain(result.stderr)
    assert list(tmp_path.iterdir()) == []


def test_flow_parameters_are_typed_for_the_ui():
    from flows.storage_flows import tile_scene_flow

    schema = tile_scene_flow.parameters.model_dump()
    options = schema["definitions"]["TileOptions"]["properties"]
    assert options["chunk_size"]["type"] == "integer" and options["chunk_size"]["description"]
    cluster = schema["definitions"]["ClusterSpec"]["properties"]
    assert all(field.get("description") for field in cluster.values())
    assert set(schema["required"]) == {"scene_uri", "store_uri"}


def test_cli_evaluate_json_against_geojson_footprints(tmp_path, shared_data):
    """`eoseg evaluate --json` on a map of the SpaceNet grid, reference given as GeoJSON polygons."""
    import json

    from eoseg.evaluate.reference import rasterize_reference

    scene = REAL_SCENES["spacenet"]
    footprints = SHARED_DATA / "spacenet" / "geotiff_labels.geojson"
    perfect = rasterize_reference(
        str(footprints), str(scene), str(tmp_path / "perfect.tif"), burn_value=7, background=3
    )  # a "map" whose clusters 3/7 are exactly rest/building
    result = runner.invoke(app, ["evaluate", perfect, str(footprints), "--json", "--matching", "hungarian"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report) >= {"f1", "iou", "oa", "kappa", "per_class", "mapping"}
    assert report["mapping"] == {"3": 0, "7": 255}
    assert report["f1"] == report["iou"] == report["oa"] == report["kappa"] == 1.0
    assert 0.03 < report["per_class"]["255"]["support"] / 810_000 < 0.06  # buildings are ~4 % of the scene
