"""Shared CLI options: accepted before or after the command name; settings come from ``EOSEG_*``."""

from __future__ import annotations

import pytest
import rasterio
from test_cli_flows import _flow_runs, _logs_of, _plain, run_eoseg

from cli.global_options import hoist_global_options
from eoseg.settings import load_settings


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "a.tif", "--cluster", "tcp://h:1"], ["--cluster", "tcp://h:1", "run", "a.tif"]),
        (["--cluster", "tcp://h:1", "run", "a.tif"], ["--cluster", "tcp://h:1", "run", "a.tif"]),
        (
            ["train", "clusterer", "s.zarr", "--workers=3", "-v"],
            ["--workers=3", "-v", "train", "clusterer", "s.zarr"],
        ),
        (
            ["tile", "a.tif", "--out", "x.zarr", "--chunk-size", "256"],
            ["tile", "a.tif", "--out", "x.zarr", "--chunk-size", "256"],
        ),
        (["run", "--", "--cluster"], ["run", "--", "--cluster"]),
        (["--help"], ["--help"]),
    ],
)
def test_shared_options_move_before_the_command(argv, expected):
    assert hoist_global_options(argv) == expected


def test_settings_come_from_the_environment_and_options_win(monkeypatch):
    monkeypatch.setenv("EOSEG_WORKERS", "3")
    monkeypatch.setenv("EOSEG_CLUSTER", "")  # empty counts as unset
    settings = load_settings()
    assert settings.workers == 3 and settings.cluster is None
    assert load_settings(workers=1, cluster="tcp://127.0.0.1:8786").workers == 1


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("env", "options", "start"),
    [
        ({"EOSEG_WORKERS": "zero"}, [], "error: --workers (EOSEG_WORKERS): "),
        (
            {},
            ["--memory-limit", "lots"],
            "error: --memory-limit (EOSEG_MEMORY_LIMIT): 'lots' is not a memory size",
        ),
    ],
)
def test_bad_setting_is_one_line_and_exit_2(tmp_path, tiny_scene, monkeypatch, env, options, start):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_eoseg(*options, "tile", str(tiny_scene), "--out", str(tmp_path / "x.zarr"))
    assert result.returncode == 2
    lines = [line for line in _plain(result.stderr).splitlines() if line.strip()]
    assert lines == [lines[-1]] and lines[-1].startswith(start), result.stderr
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.usefixtures("prefect_server")
def test_run_accepts_cluster_after_the_command(tmp_path, tiny_scene, dask_address):
    out = tmp_path / "map.tif"
    before = len(_flow_runs("segment-scene"))
    result = run_eoseg(
        "run",
        str(tiny_scene),
        "--cluster",
        dask_address,
        "--out",
        str(out),
        "--chunk-size",
        "32",
        "--epochs",
        "1",
        "--iterations",
        "1",
        "--batch-size",
        "4",
        "--patch-size",
        "16",
        "--max-patches",
        "8",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    with rasterio.open(out) as cog, rasterio.open(tiny_scene) as scene:
        assert cog.shape == scene.shape and cog.transform == scene.transform
    runs = _flow_runs("segment-scene")
    assert len(runs) == before + 1
    latest = max(runs, key=lambda run: run.created)
    messages = _logs_of(latest.id)
    assert any(f"using the Dask cluster at {dask_address}" in message for message in messages), [
        m for m in messages if "cluster" in m.lower()
    ] + [result.stderr[-3000:]]
