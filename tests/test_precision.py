"""--precision: the choice is recorded (checkpoint, label store, COG tags); bf16 maps agree with fp32 maps
on a real scene; bf16 labels do not depend on how many worker processes or threads computed them."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import rasterio
import torch
from conftest import REAL_SCENES

from eo_models.checkpoint import load_checkpoint
from eo_models.precision import cpu_has_native_bf16, resolve_precision
from eoseg.predict.stage import predict_store
from eoseg.store.layout import open_data_array, read_store_info
from eoseg.tile.stage import tile_scene, valid_pixel_mask
from eoseg.train.stage import train_on_stores

TINY_TRAINING = {"epochs": 1, "iterations": 3, "batch_size": 4, "patch_size": 32, "num_classes": 6, "seed": 5}


@pytest.fixture(scope="module")
def landsat(tmp_path_factory, shared_data):
    """A 320 x 320 crop of the real Landsat scene (with some nodata corner) in 4 chunks of 160 px, and a
    clusterer trained on it in fp32."""
    from rasterio.windows import Window

    folder = tmp_path_factory.mktemp("precision")
    crop = folder / "landsat_crop.tif"
    with rasterio.open(REAL_SCENES["landsat"]) as scene:
        window = Window(40, 300, 320, 320)
        profile = dict(scene.profile, width=320, height=320, transform=scene.window_transform(window))
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(crop, "w", **profile) as out:
            out.write(scene.read(window=window))
    store = folder / "landsat.zarr"
    tile_scene(str(crop), str(store), chunk_size=160, show_progress=False)
    model = folder / "fp32.pt"
    train_on_stores(
        "clusterer", [str(store)], str(model), params={**TINY_TRAINING, "precision": "fp32"}, max_patches=16
    )
    return store, model


def _labels(store, model, out, **kwargs) -> np.ndarray:
    info = predict_store(str(store), str(model), str(out), show_progress=False, **kwargs)
    assert info.model["precision"] == kwargs.get("precision", info.model["precision"])
    return np.asarray(open_data_array(str(out), info)[...])


def test_auto_picks_bf16_exactly_where_the_cpu_has_native_bf16(caplog):
    with caplog.at_level(logging.INFO, logger="eoseg.precision"):
        chosen = resolve_precision("auto", torch.device("cpu"))
    assert chosen == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert f"precision auto -> {chosen}" in caplog.text
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    with caplog.at_level(logging.INFO, logger="eoseg.precision"):
        trained = resolve_precision("auto", torch.device("cpu"), training=True)
    assert trained == chosen  # training picks bf16 on the same CPUs as inference
    assert f"precision auto -> {chosen} for training" in caplog.text
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", torch.device("cpu"))


def test_precision_is_recorded_in_checkpoint_label_store_and_cog(landsat, tmp_path):
    from eoseg.mosaic.cog import mosaic_to_cog

    store, fp32_model = landsat
    assert load_checkpoint(fp32_model)["train_params"]["resolved_precision"] == "fp32"
    bf16_model = tmp_path / "bf16.pt"
    train_on_stores(
        "clusterer",
        [str(store)],
        str(bf16_model),
        params={**TINY_TRAINING, "precision": "bf16"},
        max_patches=16,
    )
    assert load_checkpoint(bf16_model)["train_params"]["resolved_precision"] == "bf16"
    labels = tmp_path / "labels.zarr"
    predict_store(str(store), str(bf16_model), str(labels), precision="bf16", show_progress=False)
    assert read_store_info(str(labels)).model["precision"] == "bf16"
    mosaic_to_cog(str(labels), str(tmp_path / "map.tif"), show_progress=False)
    with rasterio.open(tmp_path / "map.tif") as cog:
        assert json.loads(cog.tags()["EOSEG_MODEL"])["precision"] == "bf16"
    auto = predict_store(str(store), str(bf16_model), str(tmp_path / "auto.zarr"), show_progress=False)
    assert auto.model["precision"] == resolve_precision("auto", torch.device("cpu"))


def test_bf16_map_agrees_with_fp32_map_on_a_real_scene(landsat, tmp_path):
    store, model = landsat
    fp32 = _labels(store, model, tmp_path / "fp32.zarr", precision="fp32")
    bf16 = _labels(store, model, tmp_path / "bf16.zarr", precision="bf16")
    info = read_store_info(str(store))
    valid = valid_pixel_mask(np.asarray(open_data_array(str(store), info)[...]), info.nodata)
    agreement = float((fp32[valid] == bf16[valid]).mean())
    print(f"\nbf16 vs fp32 labels on a Landsat crop: {100 * agreement:.4f} % of valid pixels agree")
    assert valid.mean() > 0.5 and not valid.all()  # mostly real pixels, some nodata
    assert agreement >= 0.999
    np.testing.assert_array_equal(fp32[~valid], bf16[~valid])  # nodata stays nodata


@pytest.mark.slow  # starts a second cluster: ~80 s at load 14 here
def test_labels_identical_across_worker_processes_and_threads_in_bf16_as_in_fp32(
    landsat, tmp_path, dask_client
):
    """2 worker processes x 1 thread (the session cluster), 1 worker process x 2 threads, and this
    process's threads: the same labels, pixel for pixel, in bf16 and in fp32."""
    from eoseg.compute.cluster import ClusterSpec, connect, dask_cluster

    store, model = landsat
    precisions = ("bf16", "fp32")
    two = {
        p: _labels(store, model, tmp_path / f"two_{p}.zarr", precision=p, client=dask_client)
        for p in precisions
    }
    one_process = ClusterSpec(n_workers=1, threads_per_worker=2)  # waits up to 120 s for its worker
    with dask_cluster(one_process) as address, connect(address) as client:
        one = {
            p: _labels(store, model, tmp_path / f"one_{p}.zarr", precision=p, client=client)
            for p in precisions
        }
    for precision in precisions:
        local = _labels(store, model, tmp_path / f"local_{precision}.zarr", precision=precision)
        np.testing.assert_array_equal(two[precision], one[precision])
        np.testing.assert_array_equal(two[precision], local)


def test_mcl_lc_pretraining_and_fine_tuning_record_their_precision():
    """mCL-LC pre-training and fine-tuning run under --precision like the clusterer and record it."""
    from eo_models.clusterer.train import ArrayPatchSource
    from eo_models.mcl_lc.params import FinetuneParams, PretrainParams
    from eo_models.mcl_lc.train import finetune_mcl_lc, pretrain_mcl_lc

    rng = np.random.default_rng(0)
    patches = ArrayPatchSource(rng.normal(size=(3, 32, 64)).astype(np.float32), 32)  # 2 patches

    class Labelled:
        images = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
        labels = (images[:, 0] > 0).astype(np.int64)

        def __len__(self) -> int:
            return 2

        def read(self, indices):
            return self.images[list(indices)], self.labels[list(indices)]

    tiny = {"epochs": 1, "batch_size": 2, "patch_size": 32, "roi_size": 4, "device": "cpu"}
    pretrained = pretrain_mcl_lc(
        patches, in_channels=3, params=PretrainParams(**tiny, precision="bf16"), band_mean=[0.0] * 3,
        band_std=[1.0] * 3,
    )  # fmt: skip
    assert pretrained["train_params"]["resolved_precision"] == "bf16"
    assert np.isfinite(pretrained["history"]["loss"]).all()
    finetune = {"num_classes": 2, "epochs": 1, "batch_size": 2, "device": "cpu", "freeze_encoder": True}
    for precision in ("bf16", "auto"):
        tuned = finetune_mcl_lc(
            pretrained, Labelled(), params=FinetuneParams(**finetune, precision=precision)
        )
        expected = resolve_precision(precision, torch.device("cpu"), training=True)
        assert tuned["train_params"]["resolved_precision"] == expected
        assert np.isfinite(tuned["history"]["loss"]).all()
    with pytest.raises(ValueError, match="precision must be"):
        PretrainParams(precision="fp16")  # type: ignore[arg-type]
