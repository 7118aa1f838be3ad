"""The clusterer's fused bf16 CPU inference path (eo_models.clusterer.fused): the same layer stack as the
plain one up to bfloat16 rounding, also on the block's outer ring where BatchNorm folding needs the
zero-padding correction; each pixel independent of the block it sits in and of the thread count."""

from __future__ import annotations

import pytest
import torch

from eo_models.clusterer.fused import use_bf16_path
from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.precision import autocast, prepare_model, to_memory_format

CPU = torch.device("cpu")
pytestmark = pytest.mark.skipif(
    not hasattr(torch.ops.mkldnn, "_convolution_pointwise"), reason="torch without oneDNN fused convolution"
)


def _model() -> SingleSceneClusterer:
    """A clusterer in eval mode whose BatchNorms are far from identity (shifts, negative and small scales)."""
    torch.manual_seed(3)
    model = SingleSceneClusterer(ClustererConfig(in_channels=3, num_classes=6)).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(0.0, 1.0)
            module.running_var.uniform_(0.2, 2.0)
            module.weight.data.uniform_(-1.5, 1.5)
            module.bias.data.uniform_(-1.0, 1.0)
    return model


def _bf16(model: SingleSceneClusterer, x: torch.Tensor, *, fused: bool = True) -> torch.Tensor:
    with torch.inference_mode(), autocast("bf16", CPU):
        xi = to_memory_format(x, "bf16")
        assert use_bf16_path(model, xi)  # eval mode, CPU, bf16 autocast
        return (model.feature_maps(xi) if fused else model.features(xi)).float()


def test_fused_features_match_the_layer_stack_inside_and_on_the_ring():
    model = _model()
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode():
        reference = model.features(x)  # float32, the plain layers
    prepare_model(model, "bf16")
    fused, autocast_path = _bf16(model, x), _bf16(model, x, fused=False)
    scale = reference.abs().amax()
    fused_error, autocast_error = (fused - reference).abs(), (autocast_path - reference).abs()
    ring = torch.ones_like(reference, dtype=torch.bool)
    ring[..., 1:-1, 1:-1] = False
    print(
        f"\nmax error vs fp32: fused {fused_error.max():.4f}, autocast {autocast_error.max():.4f}, "
        f"scale {scale:.2f}"
    )
    # bfloat16 keeps 8 significant bits: errors of a few 2^-8 of the features' scale, on the ring as inside
    assert fused_error.max() <= 4 * 2**-8 * scale
    assert fused_error[ring].max() <= 4 * 2**-8 * scale
    assert fused_error.mean() <= 2 * autocast_error.mean()


def test_fused_pixels_do_not_depend_on_the_block_or_the_thread_count():
    model = prepare_model(_model(), "bf16")
    x = torch.randn(1, 3, 48, 48)
    whole = _bf16(model, x)
    # a pixel's features depend on its 11 x 11 neighbourhood only: a sub-block gives the same values
    # wherever that neighbourhood lies inside both blocks (here: the shared top and right scene edges too)
    part = _bf16(model, x[..., :30, 10:])
    torch.testing.assert_close(part[..., :24, 5:], whole[..., :24, 15:], rtol=0, atol=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = _bf16(model, x)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(single, whole, rtol=0, atol=0)
