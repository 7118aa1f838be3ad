"""eo_models on a CUDA device (marked ``gpu``): training, inference, precision. torch and numpy only.

Skipped by the suite where CUDA is missing (tests/conftest.py). ``benchmarks/gpu_check.py`` runs this
file on a GPU machine without eoseg's stack (``pytest --noconftest``, or by calling the functions), and
its ``--dry`` mode runs it on the CPU, so the tests themselves cannot rot.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.clusterer.train import ArrayPatchSource, ClustererTrainingParams, train_clusterer
from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter
from eo_models.precision import autocast, cpu_has_native_bf16, resolve_precision
from eo_models.predict import Predictor, load_predictor

pytestmark = pytest.mark.gpu

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _image(bands: int = 3, size: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / 11.0
    rng = np.random.default_rng(0)
    fields = np.stack([np.sin(x * (b + 1)) + np.cos(y * (b + 2)) for b in range(bands)])
    return (fields + 0.2 * rng.standard_normal((bands, size, size))).astype(np.float32)


def _predictor(model: torch.nn.Module, device: torch.device, precision: str) -> Predictor:
    return Predictor(
        model, family="clusterer", num_classes=6, in_channels=3, halo=16, band_mean=[0.0] * 3,
        band_std=[1.0] * 3, device=device, precision=precision,
    )  # fmt: skip


def test_auto_precision_follows_the_device():
    expected = torch.cuda.is_bf16_supported() if DEVICE.type == "cuda" else cpu_has_native_bf16()
    assert resolve_precision("auto", DEVICE) == ("bf16" if expected else "fp32")


def test_clusterer_trains_and_predicts_on_the_device():
    params = ClustererTrainingParams(
        num_classes=6, epochs=1, iterations=2, batch_size=4, patch_size=32, device=str(DEVICE)
    )
    ckpt = train_clusterer(
        ArrayPatchSource(_image(), 32), in_channels=3, params=params, band_mean=[0.0] * 3, band_std=[1.0] * 3
    )
    assert ckpt["train_params"]["resolved_device"].startswith(DEVICE.type)
    assert ckpt["train_params"]["resolved_precision"] == resolve_precision("auto", DEVICE, training=True)
    assert np.isfinite(ckpt["history"]["loss"]).all()
    labels = load_predictor(ckpt, device=DEVICE).predict(_image())
    assert labels.shape == (96, 96) and labels.dtype == np.uint8 and labels.max() < 6


def test_device_labels_agree_with_cpu_fp32_labels():
    torch.manual_seed(1)
    model = SingleSceneClusterer(ClustererConfig(in_channels=3, num_classes=6)).eval()
    image = _image(size=128)
    reference = _predictor(model, torch.device("cpu"), "fp32").predict(image)
    fp32 = _predictor(model, DEVICE, "fp32").predict(image)
    bf16 = _predictor(model, DEVICE, "bf16").predict(image)
    assert (fp32 == reference).mean() >= 0.999
    assert (bf16 == reference).mean() >= 0.99


def test_mcl_lc_segmenter_runs_in_both_precisions():
    model = build_mcl_lc_segmenter({"in_channels": 3, "num_classes": 2}).eval().to(DEVICE)
    batch = torch.from_numpy(_image(size=64)[None]).to(DEVICE)
    for precision in ("fp32", "bf16"):
        with torch.inference_mode(), autocast(precision, DEVICE):  # type: ignore[arg-type]
            logits = model(batch)
        assert logits.shape == (1, 2, 64, 64) and torch.isfinite(logits.float()).all()
