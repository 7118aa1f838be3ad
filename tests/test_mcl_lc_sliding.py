"""mCL-LC's sliding-window inference: labels do not depend on the chunk size of the predict stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARED_DATA, write_geotiff

from eo_models.checkpoint import save_checkpoint
from eo_models.family import get_family
from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter
from eo_models.mcl_lc.sliding import SlidingWindow, SlidingWindowSegmenter, inference_window
from eo_models.predict import load_predictor
from eo_models.training import assemble_checkpoint
from eoseg.geometry import Window
from eoseg.predict.refine import RefineOptions, refine_labels
from eoseg.predict.stage import predict_store
from eoseg.store.layout import open_data_array, read_store_info
from eoseg.tile.stage import tile_scene

WINDOW = 64  # the fine-tuning patch size recorded in the checkpoint; stride 32, halo 32


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-class mCL-LC segmenter with seeded random weights (the labels' dependence is what is tested)."""
    torch.manual_seed(0)
    network = build_mcl_lc_segmenter({"in_channels": 3, "num_classes": 3})
    ckpt = assemble_checkpoint(
        family="mcl-lc", model_config={"in_channels": 3, "num_classes": 3}, band_mean=[75.0] * 3,
        band_std=[25.0] * 3, num_classes=3, train_params={"patch_size": WINDOW}, history={"loss": []},
        model=network, extra={"stage": "finetune"},
    )  # fmt: skip
    path = tmp_path_factory.mktemp("sliding") / "finetuned.pt"
    save_checkpoint(path, ckpt)
    return path


def test_window_and_halo_follow_from_the_checkpoint() -> None:
    assert inference_window({"train_params": {"patch_size": 64}}) == SlidingWindow(64, 32)
    assert inference_window({"train_params": {"pretrain": {"patch_size": 128}}}) == SlidingWindow(128, 64)
    configured = {
        "train_params": {"patch_size": 64},
        "extra": {"inference_window": 96, "inference_stride": 48},
    }
    assert inference_window(configured) == SlidingWindow(96, 48)
    assert get_family("mcl-lc").halo_for(configured) == 48
    assert inference_window({}) == SlidingWindow(256, 128)
    with pytest.raises(ValueError, match="stride"):
        SlidingWindow(64, 65)


# Superpixel refinement: a halo of 96 px keeps every window origin of the sliding pass on the stride.
SLIC = RefineOptions(refine="slic", refine_segment_size=32)


@pytest.mark.parametrize("refine", [None, SLIC], ids=["per-pixel", "slic-refined"])
def test_labels_do_not_depend_on_the_chunk_size(
    finetuned: Path, tmp_path: Path, refine: RefineOptions | None
) -> None:
    with rasterio.open(SHARED_DATA / "loveda" / "rural_1.tif") as source:
        pixels = source.read(window=((300, 588), (200, 296)))  # 288 x 96 px of real LoveDA
    scene = write_geotiff(tmp_path / "scene.tif", pixels)
    labels = {}
    for chunk_size in (64, 256, 1024):  # 5 x 2 chunks, 2 x 1 chunks, one chunk
        store, out = tmp_path / f"scene{chunk_size}.zarr", tmp_path / f"labels{chunk_size}.zarr"
        tile_scene(str(scene), str(store), chunk_size=chunk_size, show_progress=False)
        info = predict_store(str(store), str(finetuned), str(out), refine=refine, show_progress=False)
        assert info.model["halo"] == WINDOW // 2
        labels[chunk_size] = np.asarray(open_data_array(str(out), read_store_info(str(out)))[...]).squeeze()

    whole = load_predictor(finetuned, device="cpu").predict(pixels)  # one sliding pass over the array
    if refine is not None:  # superpixels over the whole array, block by block
        assert info.model["refine"] == refine.model_dump()
        unrefined, everything = whole, Window(0, 0, *whole.shape)
        stats = read_store_info(str(store)).band_stats or {}
        whole = refine_labels(
            pixels, whole, np.ones(whole.shape, bool), region=everything, window=everything,
            options=refine, height=whole.shape[0], width=whole.shape[1],
            band_mean=np.asarray(stats["mean"]), band_std=np.asarray(stats["std"]),
        )  # fmt: skip
        assert 0 < (whole != unrefined).mean() < 0.5  # refinement changes some labels, not the map
    np.testing.assert_array_equal(labels[256], labels[1024])
    np.testing.assert_array_equal(labels[64], labels[1024])
    np.testing.assert_array_equal(labels[256], whole)
    assert len(np.unique(whole)) > 1  # a map, not one class everywhere


def test_windows_average_the_logits_of_every_window_covering_a_pixel() -> None:
    """A network whose logit is its window's mean: the blended logit is the mean over covering windows."""

    class WindowMean(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])

    image = torch.arange(6 * 5, dtype=torch.float32).reshape(1, 1, 6, 5)
    out = SlidingWindowSegmenter(WindowMean(), SlidingWindow(4, 2), batch_size=3)(image)
    # Rows: windows at 0 and 2 (covering 0-3 and 2-5); columns at 0 and 2, the last padded to 6 wide.
    padded = torch.nn.functional.pad(image, (0, 1))[0, 0]
    means = {(r, c): float(padded[r : r + 4, c : c + 4].mean()) for r in (0, 2) for c in (0, 2)}
    expected_corner = means[(0, 0)]
    expected_centre = sum(means.values()) / 4
    assert out.shape == (1, 1, 6, 5) and out.dtype == torch.float64
    assert float(out[0, 0, 0, 0]) == pytest.approx(expected_corner)
    assert float(out[0, 0, 2, 2]) == pytest.approx(expected_centre)
