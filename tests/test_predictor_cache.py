"""A long-lived worker serves the weights of the checkpoint as it is now, not as it was first loaded.

The predictor cache is keyed by the checkpoint's fingerprint (size, mtime and inode locally, the ETag
on S3): a model retrained to the same URI with ``--overwrite`` is loaded again.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_geotiff

from eo_models.predict import load_predictor
from eoseg.predict.predictors import cached_predictor, checkpoint_fingerprint
from eoseg.predict.stage import model_load_counts, predict_store
from eoseg.store.layout import open_data_array, read_store_info
from eoseg.tile.stage import tile_scene
from eoseg.train.checkpoints import save_checkpoint_to
from eoseg.train.stage import train_on_stores

TINY = {"epochs": 1, "iterations": 2, "batch_size": 4, "patch_size": 32, "num_classes": 4, "device": "cpu"}


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(5)
    tif = write_geotiff(
        tmp_path / "scene.tif", rng.integers(1, 255, size=(3, 96, 96), dtype=np.uint8), nodata=0
    )
    uri = tmp_path / "scene.zarr"
    tile_scene(str(tif), str(uri), chunk_size=128, show_progress=False)  # one chunk: whole-scene inference
    return uri


def _labels(uri) -> np.ndarray:
    return np.asarray(open_data_array(str(uri), read_store_info(str(uri)))[...])


def _expected(store, model) -> np.ndarray:
    scene = np.asarray(open_data_array(str(store), read_store_info(str(store)))[...])
    return load_predictor(str(model), device="cpu").predict(scene, (scene != 0).any(axis=0))


def test_a_checkpoint_rewritten_in_place_is_loaded_again(store, tmp_path):
    model = tmp_path / "model.pt"
    train_on_stores("clusterer", [str(store)], str(model), params={**TINY, "seed": 0})
    first = cached_predictor(str(model), "cpu")
    assert cached_predictor(str(model), "cpu") is first  # same bytes: served from the cache
    fingerprint = checkpoint_fingerprint(str(model))
    train_on_stores("clusterer", [str(store)], str(model), params={**TINY, "seed": 1}, overwrite=True)
    assert checkpoint_fingerprint(str(model)) != fingerprint
    second = cached_predictor(str(model), "cpu")
    assert second is not first
    retrained = load_predictor(str(model), device="cpu").model.state_dict()
    for name, tensor in second.model.state_dict().items():
        assert np.array_equal(tensor.cpu().numpy(), retrained[name].cpu().numpy()), name


def test_long_lived_workers_predict_with_the_retrained_weights(store, tmp_path, dask_client):
    model = tmp_path / "model.pt"
    train_on_stores("clusterer", [str(store)], str(model), params={**TINY, "seed": 0})
    predict_store(str(store), str(model), str(tmp_path / "a.zarr"), client=dask_client, show_progress=False)
    np.testing.assert_array_equal(_labels(tmp_path / "a.zarr")[3:], _expected(store, model)[3:])
    loads_before = sum(counts.get(str(model), 0) for counts in dask_client.run(model_load_counts).values())

    train_on_stores("clusterer", [str(store)], str(model), params={**TINY, "seed": 1}, overwrite=True)
    predict_store(str(store), str(model), str(tmp_path / "b.zarr"), client=dask_client, show_progress=False)
    expected = _expected(store, model)
    assert not np.array_equal(_labels(tmp_path / "a.zarr"), _labels(tmp_path / "b.zarr"))
    valid = _labels(tmp_path / "b.zarr") != 255
    np.testing.assert_array_equal(_labels(tmp_path / "b.zarr")[valid], expected[valid])
    loads_after = sum(counts.get(str(model), 0) for counts in dask_client.run(model_load_counts).values())
    assert loads_after > loads_before  # the new checkpoint was loaded, not served from the cache


@pytest.mark.s3
def test_s3_fingerprint_is_the_etag_and_changes_with_the_bytes(s3_bucket, tmp_path):
    from eo_models.checkpoint import load_checkpoint

    model = tmp_path / "model.pt"
    rng = np.random.default_rng(0)
    tif = write_geotiff(tmp_path / "s.tif", rng.integers(1, 255, size=(3, 64, 64), dtype=np.uint8))
    tile_scene(str(tif), str(tmp_path / "s.zarr"), show_progress=False)
    train_on_stores("clusterer", [str(tmp_path / "s.zarr")], str(model), params={**TINY, "seed": 0})
    checkpoint = load_checkpoint(model)
    uri = f"{s3_bucket}/models/model.pt"
    save_checkpoint_to(uri, checkpoint, overwrite=False)
    first = checkpoint_fingerprint(uri)
    assert first.startswith("etag:") and checkpoint_fingerprint(uri) == first
    checkpoint["train_params"]["note"] = "retrained"
    save_checkpoint_to(uri, checkpoint, overwrite=True)
    assert checkpoint_fingerprint(uri) != first


def test_second_pass_reuses_first_pass_features_with_the_same_labels(tmp_path, monkeypatch):
    """Scene pooling over 4 chunks: the second pass starts from the features the first pass kept (none
    left behind), and the labels equal those of a run that recomputes every chunk (cache budget 0)."""
    from eoseg.predict import predictors

    rng = np.random.default_rng(7)
    pixels = rng.integers(1, 255, size=(3, 96, 96), dtype=np.uint8)
    pixels[:, :20, :20] = 0  # a nodata corner
    store = tmp_path / "scene.zarr"
    tile_scene(str(write_geotiff(tmp_path / "s.tif", pixels, nodata=0)), str(store), chunk_size=48)
    model = tmp_path / "model.pt"
    train_on_stores("clusterer", [str(store)], str(model), params={**TINY, "seed": 0})
    taken: list[bool] = []

    def spy(run_id: str, index: tuple[int, int]):
        kept = predictors.take_features(run_id, index)
        taken.append(kept is not None)
        return kept

    monkeypatch.setattr("eoseg.predict.stage.take_features", spy)
    predict_store(str(store), str(model), str(tmp_path / "reused.zarr"), show_progress=False)
    assert taken == [True] * 4  # every chunk started from the features its first pass kept
    assert not predictors._features  # all taken, nothing left behind
    monkeypatch.setattr(predictors, "FEATURE_CACHE_BYTES", 0)
    predict_store(str(store), str(model), str(tmp_path / "recomputed.zarr"), show_progress=False)
    assert taken[4:] == [False] * 4
    reused, recomputed = _labels(tmp_path / "reused.zarr"), _labels(tmp_path / "recomputed.zarr")
    np.testing.assert_array_equal(reused, recomputed)
    assert (reused == 255).sum() == 400 and len(np.unique(reused[reused != 255])) > 1
