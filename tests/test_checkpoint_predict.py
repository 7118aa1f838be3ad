"""Checkpoint round trip (weights_only) and the prediction contract of docs/interfaces.md."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eo_models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from eo_models.clusterer.train import ArrayPatchSource, ClustererTrainingParams, train_clusterer
from eo_models.family import get_family
from eo_models.predict import Predictor, load_predictor

BAND_MEAN = [100.0, 50.0, 20.0]
BAND_STD = [10.0, 5.0, 2.0]


def to_raw(normalised: np.ndarray) -> np.ndarray:
    """Undo the normalisation: the pixel values a scene would hold."""
    return (
        normalised * np.array(BAND_STD, dtype=np.float32)[:, None, None]
        + np.array(BAND_MEAN, dtype=np.float32)[:, None, None]
    )


@pytest.fixture(scope="module")
def trained_checkpoint() -> dict[str, Any]:
    scene = np.random.default_rng(42).standard_normal((3, 32, 32)).astype(np.float32)
    params = ClustererTrainingParams(epochs=1, iterations=3, patch_size=16, batch_size=2, device="cpu")
    return train_clusterer(
        ArrayPatchSource(scene, patch_size=16),
        in_channels=3,
        params=params,
        band_mean=BAND_MEAN,
        band_std=BAND_STD,
    )


@pytest.fixture(scope="module")
def predictor(trained_checkpoint: dict[str, Any]) -> Predictor:
    return load_predictor(trained_checkpoint, device="cpu")


def test_saved_checkpoint_loads_with_weights_only(trained_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "models" / "clusterer.pt"
    save_checkpoint(path, trained_checkpoint)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    loaded = load_checkpoint(path)
    for ckpt in (raw, loaded):
        assert {key: value for key, value in ckpt.items() if key != "state_dict"} == {
            key: value for key, value in trained_checkpoint.items() if key != "state_dict"
        }
        for name, tensor in trained_checkpoint["state_dict"].items():
            assert torch.equal(ckpt["state_dict"][name], tensor)
    assert [entry.name for entry in path.parent.iterdir()] == ["clusterer.pt"]  # no temporary file left


def test_save_replaces_an_existing_checkpoint(trained_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "clusterer.pt"
    path.write_bytes(b"old")
    save_checkpoint(path, trained_checkpoint)
    assert load_checkpoint(path)["family"] == "clusterer"


def test_predictor_reproduces_the_model_argmax(trained_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "clusterer.pt"
    save_checkpoint(path, trained_checkpoint)
    predictor = load_predictor(path, device="cpu")
    normalised = np.random.default_rng(0).standard_normal((3, 20, 24)).astype(np.float32)

    model = get_family("clusterer").build(trained_checkpoint["model_config"])
    model.load_state_dict(trained_checkpoint["state_dict"])
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(normalised)[None]).argmax(dim=1)[0].numpy()

    labels = predictor.predict(to_raw(normalised))
    assert labels.dtype == np.uint8
    assert labels.shape == (20, 24)
    np.testing.assert_array_equal(labels, expected)


def test_predictor_exposes_the_contract_attributes(predictor: Predictor) -> None:
    assert predictor.family == "clusterer"
    assert predictor.num_classes == 8
    assert predictor.in_channels == 3
    assert predictor.halo == get_family("clusterer").halo >= 5  # at least the 5 px radius of 5 3x3 convs


def test_predictor_accepts_integer_pixels(predictor: Predictor) -> None:
    block = np.random.default_rng(1).integers(0, 255, size=(3, 16, 16), dtype=np.uint16)
    labels = predictor.predict(block)
    np.testing.assert_array_equal(labels, predictor.predict(block.astype(np.float64)))
    assert labels.max() < predictor.num_classes


def test_predictor_refuses_the_wrong_band_count(predictor: Predictor) -> None:
    with pytest.raises(ValueError, match=r"expects 3 bands.*got a block with 4 bands"):
        predictor.predict(np.zeros((4, 16, 16), dtype=np.float32))


def test_invalid_pixels_are_treated_as_the_band_mean(predictor: Predictor) -> None:
    block = to_raw(np.random.default_rng(2).standard_normal((3, 16, 16)).astype(np.float32))
    valid = np.ones((16, 16), dtype=bool)
    valid[:4, :] = False
    with_nodata = block.copy()
    with_nodata[:, :4, :] = np.nan  # garbage where the mask says nodata
    with_nodata[1, 10, 10] = np.inf  # and a non-finite value the mask missed
    filled = block.copy()
    filled[:, :4, :] = np.array(BAND_MEAN, dtype=np.float32)[:, None, None]
    filled[1, 10, 10] = BAND_MEAN[1]
    labels = predictor.predict(with_nodata, valid)
    np.testing.assert_array_equal(labels, predictor.predict(filled))


def test_predict_batch_matches_block_by_block(predictor: Predictor) -> None:
    blocks = to_raw(np.random.default_rng(3).standard_normal((3, 3, 12, 12)).astype(np.float32))
    labels = predictor.predict_batch(blocks)
    assert labels.shape == (3, 12, 12)
    for block, block_labels in zip(blocks, labels, strict=True):
        np.testing.assert_array_equal(block_labels, predictor.predict(block))


def test_loading_a_file_that_is_not_a_checkpoint_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape("broken.pt")):
        load_checkpoint(path)


def test_loading_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("missing.pt")):
        load_checkpoint(tmp_path / "missing.pt")


def test_loading_refuses_another_format_version(trained_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "future.pt"
    torch.save({**trained_checkpoint, "format_version": 2}, path)
    with pytest.raises(CheckpointError, match="format_version"):
        load_checkpoint(path)


def test_saving_refuses_missing_keys(trained_checkpoint: dict[str, Any], tmp_path: Path) -> None:
    incomplete = {key: value for key, value in trained_checkpoint.items() if key != "band_std"}
    with pytest.raises(CheckpointError, match="band_std"):
        save_checkpoint(tmp_path / "incomplete.pt", incomplete)


def test_saving_refuses_values_weights_only_cannot_load(
    trained_checkpoint: dict[str, Any], tmp_path: Path
) -> None:
    with_numpy = {**trained_checkpoint, "extra": {"scale": np.float32(1.0)}}
    with pytest.raises(CheckpointError, match=r"\['extra'\]\['scale'\]"):
        save_checkpoint(tmp_path / "numpy.pt", with_numpy)
    assert list(tmp_path.iterdir()) == []


def test_unknown_family_is_refused(trained_checkpoint: dict[str, Any]) -> None:
    with pytest.raises(CheckpointError, match="unknown model family"):
        load_predictor({**trained_checkpoint, "family": "no-such-model"}, device="cpu")


def test_the_stages_loader_raises_one_line_eoseg_errors(
    trained_checkpoint: dict[str, Any], tmp_path: Path
) -> None:
    """What a stage, flow or direct call reads: a torn copy (no zip central directory), a GeoTIFF and a
    zip archive torch cannot load all raise CorruptCheckpointError (an EosegError), naming the file."""
    from eoseg.errors import CorruptCheckpointError
    from eoseg.train.checkpoints import load_checkpoint_from

    whole = tmp_path / "model.pt"
    save_checkpoint(whole, trained_checkpoint)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    not_torch = tmp_path / "other.pt"
    with zipfile.ZipFile(not_torch, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")
    tiff = tmp_path / "scene.tif"
    tiff.write_bytes(b"II*\x00" + bytes(64))
    for path in (torn, not_torch, tiff):
        with pytest.raises(CorruptCheckpointError, match=re.escape(f"{path}: not a")):
            load_checkpoint_from(str(path))
    assert load_checkpoint_from(str(whole))["family"] == trained_checkpoint["family"]
