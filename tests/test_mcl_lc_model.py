"""Shapes, parameter counts and weight loading of the mCL-LC networks (ResNet-50, DeepLabv3+)."""

from __future__ import annotations

import pytest
import torch

from eo_models.mcl_lc.deeplabv3plus import DeepLabV3Plus, build_mcl_lc_segmenter
from eo_models.mcl_lc.resnet import ResNet50Backbone, adapt_first_conv_weight, load_resnet50_weights

# torchvision.models.resnet50(): 25,557,032 parameters, of which fc has 2048 * 1000 + 1000.
TORCHVISION_RESNET50_WITHOUT_FC = 25_557_032 - (2048 * 1000 + 1000)


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """Small-input ResNet-50 passes are many small ops: one thread avoids OpenMP overhead."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet50_parameter_count_matches_torchvision() -> None:
    assert count_parameters(ResNet50Backbone(in_channels=3)) == TORCHVISION_RESNET50_WITHOUT_FC == 23_508_032


def test_only_conv1_depends_on_band_count() -> None:
    extra = count_parameters(ResNet50Backbone(in_channels=4)) - TORCHVISION_RESNET50_WITHOUT_FC
    assert extra == 64 * 7 * 7


@pytest.mark.parametrize(("output_stride", "high_size"), [(16, 4), (32, 2)])
def test_backbone_feature_strides(output_stride: int, high_size: int) -> None:
    backbone = ResNet50Backbone(in_channels=3, output_stride=output_stride).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert features.low_level.shape == (1, 256, 16, 16)  # stride 4
    assert features.high_level.shape == (1, 2048, high_size, high_size)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_deeplab_logits_at_input_resolution(in_channels: int) -> None:
    network = DeepLabV3Plus(in_channels=in_channels, num_classes=5).eval()
    with torch.no_grad():
        logits = network(torch.randn(2, in_channels, 64, 64))
        encoded = network.encode(torch.randn(2, in_channels, 64, 64))
        decoded = network.decode(encoded)
    assert logits.shape == (2, 5, 64, 64)
    assert encoded.encoded.shape == (2, 256, 4, 4)  # E(p): ASPP output at stride 16
    assert decoded.shape == (2, 256, 16, 16)  # D(E(p)) before the classifier, stride 4


def test_deeplab_handles_sizes_not_divisible_by_16() -> None:
    network = DeepLabV3Plus(in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 3, 50, 70)).shape == (1, 2, 50, 70)


def test_deeplab_without_classes_refuses_to_segment() -> None:
    with pytest.raises(RuntimeError, match="fine-tune"):
        DeepLabV3Plus(in_channels=3, num_classes=0).eval()(torch.randn(1, 3, 32, 32))


def test_build_mcl_lc_segmenter() -> None:
    network = build_mcl_lc_segmenter({"in_channels": 4, "num_classes": 7, "aspp_rates": [6, 12, 18]}).eval()
    with torch.no_grad():
        assert network(torch.randn(1, 4, 32, 32)).shape == (1, 7, 32, 32)
    with pytest.raises(ValueError, match="pre-training checkpoint"):
        build_mcl_lc_segmenter({"in_channels": 4, "num_classes": 0})
    with pytest.raises(ValueError, match="unknown"):
        build_mcl_lc_segmenter({"in_channels": 4, "num_classes": 2, "backbone": "resnet101"})


def test_adapt_first_conv_weight() -> None:
    weight = torch.randn(64, 3, 7, 7)
    torch.testing.assert_close(adapt_first_conv_weight(weight, 1), weight.sum(dim=1, keepdim=True))
    four = adapt_first_conv_weight(weight, 4)
    torch.testing.assert_close(four[:, :3], weight * 0.75)
    torch.testing.assert_close(four[:, 3], weight[:, 0] * 0.75)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_load_torchvision_layout_weights(tmp_path, in_channels: int) -> None:
    source = ResNet50Backbone(in_channels=3)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(1000, 2048)  # classifier keys are ignored
    state["module.fc.bias"] = torch.zeros(1000)
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)

    target = ResNet50Backbone(in_channels=in_channels)
    missing = load_resnet50_weights(target, path)

    assert missing == []
    torch.testing.assert_close(target.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    torch.testing.assert_close(target.bn1.running_var, source.bn1.running_var)
    expected_conv1 = adapt_first_conv_weight(source.conv1.weight.detach(), in_channels)
    torch.testing.assert_close(target.conv1.weight.detach(), expected_conv1)


def test_load_weights_refuses_foreign_state_dict() -> None:
    with pytest.raises(ValueError, match="no key"):
        load_resnet50_weights(ResNet50Backbone(), {"features.0.weight": torch.zeros(3)})
