"""Eq. 1-3 of Saha et al. (2021) on hand-computed tensors, the derangement shuffle, and Algorithm 1's loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eo_models.clusterer.losses import (
    clustering_loss,
    pseudo_labels,
    random_derangement,
    shuffle_batch,
    shuffled_contrastive_loss,
)
from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.clusterer.train import (
    ArrayPatchSource,
    ClustererTrainingParams,
    TrainingProgress,
    batch_indices_for_epoch,
    clusterer_training_step,
    compute_clusterer_losses,
    train_clusterer,
)


def pixel_features(*pixels: tuple[float, ...]) -> torch.Tensor:
    """(B, K, 1, 1) features, one 1x1 'patch' per pixel."""
    return torch.tensor(pixels, dtype=torch.float64)[:, :, None, None]


def test_pseudo_labels_are_the_argmax_over_k() -> None:
    y = torch.tensor([[[[0.1, 3.0]], [[0.9, -1.0]], [[0.5, 2.0]]]])  # (1, K=3, 1, 2)
    assert pseudo_labels(y).tolist() == [[[1, 0]]]
    assert pseudo_labels(y).dtype == torch.int64


def test_clustering_loss_is_cross_entropy_against_own_argmax() -> None:
    # K = 2, two 1x1 patches: pixel A = (2.0, 0.5) -> label 0; pixel B = (-1.0, 1.0) -> label 1.
    y = pixel_features((2.0, 0.5), (-1.0, 1.0))
    loss_a = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5)))
    loss_b = -math.log(math.exp(1.0) / (math.exp(-1.0) + math.exp(1.0)))
    assert clustering_loss(y).item() == pytest.approx((loss_a + loss_b) / 2, rel=1e-12)


def test_clustering_loss_averages_over_all_pixels_of_all_patches() -> None:
    # One 1x2 patch and one identical patch: the mean over 4 pixels equals the mean over the 2 distinct.
    patch = torch.tensor([[[3.0, 0.0]], [[1.0, 2.0]]], dtype=torch.float64)  # (K=2, 1, 2)
    y = torch.stack([patch, patch])
    loss_first = -math.log(math.exp(3.0) / (math.exp(3.0) + math.exp(1.0)))  # label 0
    loss_second = -math.log(math.exp(2.0) / (math.exp(0.0) + math.exp(2.0)))  # label 1
    assert clustering_loss(y).item() == pytest.approx((loss_first + loss_second) / 2, rel=1e-12)


def test_clustering_loss_treats_pseudo_labels_as_constants() -> None:
    # Gradient of mean CE with a fixed target: (softmax - one_hot) / N. Pixel (2.0, 0.5), label 0, N = 1.
    y = pixel_features((2.0, 0.5)).requires_grad_(True)
    clustering_loss(y).backward()
    p0 = math.exp(2.0) / (math.exp(2.0) + math.exp(0.5))
    assert y.grad is not None
    assert y.grad.flatten().tolist() == pytest.approx([p0 - 1.0, 1.0 - p0], rel=1e-12)


def test_shuffled_contrastive_loss_is_mean_exp_of_negative_l1_across_k() -> None:
    # K = 2, two pixels (B = 2 patches of 1x1).
    y = pixel_features((1.0, 2.0), (0.0, -1.0))
    y_shuffled = pixel_features((0.0, 0.5), (0.0, -1.0))
    expected = (math.exp(-(abs(1.0 - 0.0) + abs(2.0 - 0.5))) + math.exp(-0.0)) / 2
    assert shuffled_contrastive_loss(y, y_shuffled).item() == pytest.approx(expected, rel=1e-12)


def test_shuffled_contrastive_loss_on_a_2x2_image() -> None:
    y = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)
    y_shuffled = torch.zeros_like(y)
    # L1 across K per pixel: |0|+|1| = 1, |1|+|1| = 2, |2|+|1| = 3, |3|+|1| = 4.
    expected = sum(math.exp(-distance) for distance in (1.0, 2.0, 3.0, 4.0)) / 4
    assert shuffled_contrastive_loss(y, y_shuffled).item() == pytest.approx(expected, rel=1e-12)


def test_shuffled_contrastive_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        shuffled_contrastive_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))


@pytest.mark.parametrize("size", [2, 3, 5, 16, 17])
def test_derangement_is_a_permutation_without_fixed_points(size: int) -> None:
    generator = np.random.default_rng(0)
    for _ in range(200):
        permutation = random_derangement(size, generator)
        assert sorted(permutation.tolist()) == list(range(size))
        assert not np.any(permutation == np.arange(size))


def test_shuffle_batch_pairs_every_patch_with_another_one() -> None:
    x = torch.arange(6.0).reshape(6, 1, 1, 1)
    shuffled, permutation = shuffle_batch(x, np.random.default_rng(3))
    assert torch.equal(shuffled, x[permutation])
    assert not torch.any(shuffled == x)


def test_shuffle_batch_is_reproducible_with_a_seeded_generator() -> None:
    x = torch.arange(8.0).reshape(8, 1, 1, 1)
    _, first = shuffle_batch(x, np.random.default_rng(11))
    _, second = shuffle_batch(x, np.random.default_rng(11))
    assert torch.equal(first, second)


def test_shuffle_batch_refuses_a_single_patch() -> None:
    with pytest.raises(ValueError, match="at least 2 patches"):
        shuffle_batch(torch.zeros(1, 3, 4, 4), np.random.default_rng(0))


def test_array_patch_source_reads_the_patch_grid() -> None:
    scene = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    patches = ArrayPatchSource(scene, patch_size=3, stride=2)
    assert len(patches) == 2 * 3  # origins rows (0, 2) x cols (0, 2, 4)
    read = patches.read([0, 5])
    assert read.shape == (2, 2, 3, 3) and read.dtype == np.float32
    np.testing.assert_array_equal(read[1], scene[:, 2:5, 4:7])
    assert len(ArrayPatchSource(scene, patch_size=2)) == 2 * 3  # non-overlapping by default
    with pytest.raises(ValueError, match="smaller than one"):
        ArrayPatchSource(scene, patch_size=6)


def test_epoch_batches_use_every_patch_once_and_never_leave_a_single_patch() -> None:
    batches = batch_indices_for_epoch(17, 4, np.random.default_rng(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(17))
    assert [len(batch) for batch in batches] == [4, 4, 4, 5]
    assert [len(batch) for batch in batch_indices_for_epoch(3, 16, np.random.default_rng(0))] == [3]
    with pytest.raises(ValueError, match="at least 2 patches"):
        batch_indices_for_epoch(1, 16, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_training_step_lowers_the_combined_loss_on_a_fixed_batch(seed: int) -> None:
    torch.manual_seed(seed)
    model = SingleSceneClusterer(ClustererConfig(in_channels=3, num_classes=4)).train()
    batch = torch.randn(4, 3, 16, 16)
    _, permutation = shuffle_batch(batch, np.random.default_rng(seed))
    permutation = torch.as_tensor(permutation)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with torch.no_grad():
        before = compute_clusterer_losses(model, batch, permutation).total.item()
    reported = clusterer_training_step(model, optimizer, batch, permutation)
    with torch.no_grad():
        after = compute_clusterer_losses(model, batch, permutation).total.item()
    assert reported.total.item() == pytest.approx(before, rel=1e-5)
    assert after < before


def test_training_reports_progress_once_per_batch_and_returns_a_checkpoint() -> None:
    scene = np.random.default_rng(5).standard_normal((2, 48, 32)).astype(np.float32)
    patches = ArrayPatchSource(scene, patch_size=16)  # 3 x 2 = 6 patches -> batches of 4 and 2
    params = ClustererTrainingParams(
        epochs=2, iterations=2, num_classes=4, patch_size=16, batch_size=4, device="cpu"
    )
    reports: list[TrainingProgress] = []
    ckpt = train_clusterer(
        patches,
        in_channels=2,
        params=params,
        band_mean=[10.0, 20.0],
        band_std=[2.0, 4.0],
        on_progress=reports.append,
    )
    assert [(report.epoch, report.batch, report.batches_per_epoch) for report in reports] == [
        (1, 1, 2),
        (1, 2, 2),
        (2, 1, 2),
        (2, 2, 2),
    ]
    assert [report.iteration for report in reports] == [2, 4, 6, 8]
    for report in reports:
        assert report.loss == pytest.approx(report.clustering_loss + report.contrastive_loss)
    assert ckpt["family"] == "clusterer"
    assert ckpt["num_classes"] == 4
    assert ckpt["model_config"]["in_channels"] == 2
    assert ckpt["band_mean"] == [10.0, 20.0]
    assert ckpt["train_params"]["num_patches"] == 6
    assert ckpt["train_params"]["resolved_device"] == "cpu"
    assert ckpt["history"]["loss"] == [report.loss for report in reports]
    assert all(tensor.device.type == "cpu" for tensor in ckpt["state_dict"].values())


def test_training_refuses_band_statistics_of_the_wrong_length() -> None:
    patches = ArrayPatchSource(np.zeros((3, 32, 32), dtype=np.float32), patch_size=16)
    with pytest.raises(ValueError, match="3 band means"):
        train_clusterer(
            patches,
            in_channels=3,
            params=ClustererTrainingParams(device="cpu"),
            band_mean=[0.0],
            band_std=[1.0],
        )


def test_training_refuses_patches_of_another_size_than_the_params_say() -> None:
    patches = ArrayPatchSource(np.zeros((3, 32, 32), dtype=np.float32), patch_size=16)
    params = ClustererTrainingParams(iterations=1, patch_size=64, device="cpu")
    with pytest.raises(ValueError, match=r"expected \(4, 3, 64, 64\)"):
        train_clusterer(patches, in_channels=3, params=params, band_mean=[0.0] * 3, band_std=[1.0] * 3)


def test_forwarding_the_shuffled_batch_equals_indexing_the_output_in_train_mode() -> None:
    """Why training forwards X once: model(X[perm]) == model(X)[perm] (BatchNorm batch statistics are
    order-free, attention pools per patch), so Algorithm 1's second pass adds nothing."""
    torch.manual_seed(0)
    model = SingleSceneClusterer(ClustererConfig(in_channels=3, num_classes=5)).train()
    batch = torch.randn(6, 3, 20, 20)
    shuffled, permutation = shuffle_batch(batch, np.random.default_rng(1))
    with torch.no_grad():
        torch.testing.assert_close(
            model(shuffled), model(batch)[torch.as_tensor(permutation)], rtol=1e-5, atol=1e-5
        )
