"""Contract of the single-scene clusterer's architecture (Saha et al., 2021, Table 1) and its training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from eo_models.clusterer.model import (
    ChannelAttention,
    ClustererConfig,
    SingleSceneClusterer,
    clusterer_parameter_count,
)
from eo_models.clusterer.train import ArrayPatchSource, ClustererTrainingParams, train_clusterer


def make_model(in_channels: int, num_classes: int = 8, seed: int = 0) -> SingleSceneClusterer:
    torch.manual_seed(seed)
    return SingleSceneClusterer(ClustererConfig(in_channels=in_channels, num_classes=num_classes))


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_output_has_k_features_per_input_pixel(in_channels: int) -> None:
    model = make_model(in_channels)
    # Odd, non-square sizes: no stride or pooling anywhere, so every size is kept.
    y = model(torch.randn(2, in_channels, 13, 17))
    assert y.shape == (2, 8, 13, 17)


def test_parameter_count_for_three_bands_and_eight_clusters_is_151244() -> None:
    # conv1 (3*9+1)*64 = 1792; conv2-5 4*(64*9+1)*64 = 147712; 5 BatchNorms 5*2*64 = 640;
    # attention MLP (64+1)*4 + (4+1)*64 = 580; final 1x1 conv (64+1)*8 = 520.
    model = make_model(3, 8)
    actual = sum(parameter.numel() for parameter in model.parameters())
    assert actual == 151_244
    assert clusterer_parameter_count(3, 8) == 151_244


@pytest.mark.parametrize(
    ("in_channels", "num_classes", "width", "depth", "reduction"),
    [(1, 8, 64, 5, 16), (4, 8, 64, 5, 16), (3, 5, 32, 3, 8), (12, 20, 16, 2, 32)],
)
def test_parameter_count_matches_table_1_formula(
    in_channels: int, num_classes: int, width: int, depth: int, reduction: int
) -> None:
    config = ClustererConfig(
        in_channels, num_classes, width=width, depth=depth, attention_reduction=reduction
    )
    model = SingleSceneClusterer(config)
    actual = sum(parameter.numel() for parameter in model.parameters())
    assert actual == clusterer_parameter_count(in_channels, num_classes, width, depth, reduction)


def test_layers_follow_table_1_with_relu_before_batchnorm_and_no_pooling() -> None:
    model = make_model(3)
    layers = list(model.features)
    assert len(layers) == 15
    for block_start in range(0, 15, 3):
        convolution, activation, normalisation = layers[block_start : block_start + 3]
        assert isinstance(convolution, nn.Conv2d)
        assert convolution.out_channels == 64
        assert convolution.kernel_size == (3, 3)
        assert convolution.stride == (1, 1)
        assert convolution.padding == (1, 1)
        assert isinstance(activation, nn.ReLU)
        assert isinstance(normalisation, nn.BatchNorm2d)
    assert not any(isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) for module in model.modules())
    assert model.classifier.kernel_size == (1, 1)
    assert model.classifier.out_channels == 8


def test_channel_attention_runs_just_before_the_final_1x1_convolution() -> None:
    model = make_model(3)
    calls: list[str] = []
    attention_output: list[torch.Tensor] = []
    model.features.register_forward_hook(lambda module, inputs, output: calls.append("features"))

    def record_attention_output(
        module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        calls.append("attention")
        attention_output.append(output)

    model.attention.register_forward_hook(record_attention_output)

    def check_classifier_input(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        calls.append("classifier")
        assert inputs[0] is attention_output[0]

    model.classifier.register_forward_pre_hook(check_classifier_input)
    model(torch.randn(2, 3, 8, 8))
    assert isinstance(model.attention, ChannelAttention)
    assert calls == ["features", "attention", "classifier"]


def identity_channel_attention(channels: int) -> ChannelAttention:
    """Attention whose MLP is identity -> ReLU -> identity: weights sigmoid(relu(avg) + relu(max))."""
    attention = ChannelAttention(channels, reduction=1)
    with torch.no_grad():
        for linear in (attention.shared_mlp[0], attention.shared_mlp[2]):
            linear.weight.copy_(torch.eye(channels))
            linear.bias.zero_()
    return attention


def test_channel_attention_uses_the_max_pooled_descriptor() -> None:
    attention = identity_channel_attention(1)
    flat = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])  # mean 1, max 1
    peaked = torch.tensor([[[[0.0, 2.0], [1.0, 1.0]]]])  # mean 1, max 2
    assert not torch.allclose(attention.channel_weights(flat), attention.channel_weights(peaked))


def test_channel_attention_uses_the_average_pooled_descriptor() -> None:
    attention = identity_channel_attention(1)
    sparse = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])  # mean 0.5, max 2
    dense = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]]])  # mean 2, max 2
    assert not torch.allclose(attention.channel_weights(sparse), attention.channel_weights(dense))


def test_channel_attention_scales_each_channel_by_sigmoid_of_summed_descriptors() -> None:
    attention = identity_channel_attention(2)
    features = torch.tensor(
        [[[[1.0, 3.0]], [[-1.0, -2.0]]]]
    )  # channel 0: avg 2, max 3; channel 1: avg -1.5, max -1
    expected_weights = torch.sigmoid(torch.tensor([2.0 + 3.0, 0.0 + 0.0]))
    torch.testing.assert_close(attention(features), features * expected_weights[None, :, None, None])


@pytest.mark.parametrize(
    "bad", [{"in_channels": 0}, {"in_channels": 3, "num_classes": 1}, {"in_channels": 3, "depth": 0}]
)
def test_config_refuses_impossible_values(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ClustererConfig(**bad)


def tiny_training_run(seed: int) -> dict[str, torch.Tensor]:
    generator = np.random.default_rng(123)
    scene = generator.standard_normal((3, 32, 32)).astype(np.float32)
    params = ClustererTrainingParams(
        epochs=1, iterations=2, patch_size=16, batch_size=2, seed=seed, device="cpu"
    )
    ckpt = train_clusterer(
        ArrayPatchSource(scene, patch_size=16),
        in_channels=3,
        params=params,
        band_mean=[0.0, 0.0, 0.0],
        band_std=[1.0, 1.0, 1.0],
    )
    return ckpt["state_dict"]


def test_training_with_the_same_seed_gives_bitwise_identical_weights() -> None:
    first, second = tiny_training_run(seed=7), tiny_training_run(seed=7)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_training_with_another_seed_gives_other_weights() -> None:
    first, other = tiny_training_run(seed=7), tiny_training_run(seed=8)
    assert not all(torch.equal(first[name], other[name]) for name in first)
