"""Commands without a configured Prefect API call their stages directly (no temporary Prefect server), and a
one-chunk stage runs without starting a Dask cluster; with an API configured the flows still run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from conftest import REAL_SCENES
from test_cli_flows import _flow_runs, run_eoseg

from eoseg.store.layout import read_store_info
from eoseg.train.stage import train_on_stores

EOSEG = str(Path(sys.executable).parent / "eoseg")


def _env_without_prefect_api(tmp_path: Path) -> dict[str, str]:
    """The environment of a user who has configured no Prefect server: no PREFECT_API_URL, no profile."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    return dict(env, PREFECT_HOME=str(tmp_path / "prefect-home"), COLUMNS="200")


def test_tile_predict_mosaic_without_prefect_api_run_directly(tmp_path, shared_data):
    env = _env_without_prefect_api(tmp_path)
    store, cog = tmp_path / "landsat.zarr", tmp_path / "map.tif"
    tile = subprocess.run(
        [EOSEG, "tile", str(REAL_SCENES["landsat"]), "--out", str(store)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert tile.returncode == 0, tile.stderr
    assert "Starting temporary server" not in tile.stderr  # no Prefect server started
    assert "no Dask cluster started" in tile.stderr  # one 1024 px chunk: threads in the process
    assert "tiling" in tile.stderr and "tile store:" in tile.stdout  # eoseg's log lines still shown
    assert read_store_info(str(store)).complete
    model, labels = tmp_path / "model.pt", tmp_path / "labels.zarr"
    tiny = {"epochs": 1, "iterations": 1, "batch_size": 4, "patch_size": 32, "num_classes": 4}
    train_on_stores("clusterer", [str(store)], str(model), params=tiny, max_patches=8)
    predict = subprocess.run(
        [EOSEG, "predict", str(store), "--model", str(model), "--out", str(labels), "--precision", "fp32",
         "--refine", "slic", "--refine-segment-size", "8"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr
    assert "Starting temporary server" not in predict.stderr
    recorded = read_store_info(str(labels)).model
    assert recorded["precision"] == "fp32"
    assert recorded["refine"] == {"refine": "slic", "refine_segment_size": 8, "refine_compactness": 0.5}
    mosaic = subprocess.run(
        [EOSEG, "mosaic", str(labels), "--out", str(cog)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert mosaic.returncode == 0, mosaic.stderr
    with rasterio.open(cog) as out, rasterio.open(REAL_SCENES["landsat"]) as scene:
        assert (out.width, out.height, out.crs) == (scene.width, scene.height, scene.crs)
    again = subprocess.run(
        [EOSEG, "tile", str(REAL_SCENES["landsat"]), "--out", str(store)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in again.stderr


def _configured(env: dict[str, str], cwd: Path) -> str:
    probe = "from cli.runs import prefect_api_configured as c; print(c())"
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=cwd, check=True
    )
    return result.stdout.strip()


def test_a_prefect_api_is_found_in_the_environment_a_profile_or_prefect_toml(tmp_path):
    env = _env_without_prefect_api(tmp_path)
    assert _configured(env, tmp_path) == "False"
    assert _configured(dict(env, PREFECT_API_URL="http://127.0.0.1:4200/api"), tmp_path) == "True"
    home = Path(env["PREFECT_HOME"])
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "server"\n[profiles.server]\nPREFECT_API_URL = "http://127.0.0.1:4200/api"\n'
    )
    assert _configured(env, tmp_path) == "True"
    assert _configured(dict(env, PREFECT_PROFILE="ephemeral"), tmp_path) == "False"
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "prefect.toml").write_text('[api]\nurl = "http://127.0.0.1:4200/api"\n')
    assert _configured(dict(env, PREFECT_PROFILE="ephemeral"), tmp_path / "project") == "True"


@pytest.mark.usefixtures("prefect_server")
def test_no_prefect_flag_skips_the_flow_even_with_a_server(tmp_path, shared_data):
    before = len(_flow_runs("tile-scene"))
    result = run_eoseg("tile", str(REAL_SCENES["landsat"]), "--out", str(tmp_path / "a.zarr"), "--no-prefect")
    assert result.returncode == 0, result.stderr
    assert len(_flow_runs("tile-scene")) == before
    result = run_eoseg("tile", str(REAL_SCENES["landsat"]), "--out", str(tmp_path / "b.zarr"))
    assert result.returncode == 0, result.stderr
    assert len(_flow_runs("tile-scene")) == before + 1  # the configured server records the run


def test_tile_scene_given_opened_sources_reads_no_header_again(tmp_path, shared_data, monkeypatch):
    """The CLI hands the sources its preflight opened to the stage: on S3, one header request per file."""
    import eoseg.tile.stage as tile_stage
    from eoseg.scene.sources import open_scene_sources

    scene = str(REAL_SCENES["landsat"])
    sources = open_scene_sources(scene)
    reference = tile_stage.tile_scene(scene, str(tmp_path / "a.zarr"), show_progress=False)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scene's headers were read again")

    monkeypatch.setattr(tile_stage, "open_scene_sources", refuse)
    given = tile_stage.tile_scene(scene, str(tmp_path / "b.zarr"), show_progress=False, sources=sources)
    assert given.band_stats == reference.band_stats and given.geobox == reference.geobox
