"""`eoseg train <family>` and `eoseg run`: options generated from each family's params, declared once."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import write_geotiff
from typer.testing import CliRunner

from cli.main import app
from eo_models.family import family_names
from eoseg.tile.stage import tile_scene

pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.filterwarnings("ignore:Logger '.*' attempted to send logs to the API without a flow run id"),
]
runner = CliRunner()


def _plain(text: str) -> str:
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(3)
    tif = write_geotiff(tmp_path / "scene.tif", rng.integers(1, 255, size=(3, 64, 64), dtype=np.uint8))
    tile_scene(str(tif), str(tmp_path / "scene.zarr"), show_progress=False)
    return str(tmp_path / "scene.zarr")


def test_every_family_has_a_train_command_with_its_documented_options():
    for name in family_names():
        result = runner.invoke(app, ["train", name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "--epochs" in result.output and "--max-patches" in result.output
    text = _plain(runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output)
    for flag in (
        "--k",
        "--epochs",
        "--iterations",
        "--patch-size",
        "--batch-size",
        "--lr",
        "--optimizer",
        "--seed",
    ):
        assert flag in text


def test_train_clusterer_through_the_cli(store, tmp_path, dask_address):
    out = tmp_path / "model.pt"
    args = [
        "--cluster",
        dask_address,
        "train",
        "clusterer",
        store,
        "--out",
        str(out),
        "--k",
        "3",
        "--epochs",
        "1",
        "--iterations",
        "1",
        "--patch-size",
        "32",
        "--batch-size",
        "2",
        "--max-patches",
        "4",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "clusterer: trained 1/1 epochs on 4 patches" in _plain(result.output)
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["num_classes"] == 3 and checkpoint["train_params"]["iterations"] == 1
    assert checkpoint["train_params"]["store_uris"] == [store]


def test_out_of_range_options_are_refused_before_any_work(store, tmp_path):
    result = runner.invoke(app, ["train", "clusterer", store, "--out", str(tmp_path / "m.pt"), "--k", "1"])
    assert result.exit_code == 2
    result = runner.invoke(
        app,
        ["train", "mcl-lc", store, "--out", str(tmp_path / "m.pt"), "--roi-size", "64", "--patch-size", "32"],
    )
    assert result.exit_code == 2 and "roi_size 64 must not exceed patch_size 32" in _plain(result.output)
    assert not (tmp_path / "m.pt").exists()
