"""mCL-LC losses (NT-Xent, MINE, Eq. 9 switches) and the pre-training / fine-tuning loops."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from eo_models.checkpoint import validate_checkpoint
from eo_models.clusterer.train import ArrayPatchSource
from eo_models.mcl_lc.augment import AugmentParams, make_view_pair
from eo_models.mcl_lc.contrastive import nt_xent_loss, style_feature
from eo_models.mcl_lc.deeplabv3plus import DeepLabV3Plus
from eo_models.mcl_lc.mine import MutualInformationEstimator
from eo_models.mcl_lc.model import FinetuneParams, LossSwitches, MclLcModel, PretrainParams
from eo_models.mcl_lc.rois import sample_matched_rois
from eo_models.mcl_lc.train import finetune_mcl_lc, finetune_step, pretrain_mcl_lc, segmentation_loss
from eo_models.predict import load_predictor

BAND_MEAN = [0.4, 0.5, 0.3]
BAND_STD = [0.2, 0.1, 0.15]


@pytest.fixture(autouse=True, scope="module")
def one_intra_op_thread():
    """ResNet-50 on 64 px patches is many small ops: one thread avoids OpenMP overhead and
    oversubscription when other processes share the two cores (5x faster here under load)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_nt_xent_matches_hand_computation() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
    tau = 0.5
    # Cosine similarities of the unit vectors: a1.a2 = 0, a1.b1 = 0.8, a1.b2 = 0.6, a2.b1 = 0.6,
    # a2.b2 = 0.8, b1.b2 = 0.96. Each anchor: -log(exp(pos/tau) / sum over the 3 others).
    e = lambda s: math.exp(s / tau)  # noqa: E731
    anchors = [
        -math.log(e(0.8) / (e(0.0) + e(0.8) + e(0.6))),  # a1, positive b1
        -math.log(e(0.8) / (e(0.0) + e(0.6) + e(0.8))),  # a2, positive b2
        -math.log(e(0.8) / (e(0.8) + e(0.6) + e(0.96))),  # b1, positive a1
        -math.log(e(0.8) / (e(0.6) + e(0.8) + e(0.96))),  # b2, positive a2
    ]
    expected = sum(anchors) / 4
    assert nt_xent_loss(a, b, temperature=tau).item() == pytest.approx(expected, rel=1e-6)
    # Cosine similarity: the scale of the embeddings does not matter.
    assert nt_xent_loss(3 * a, 0.5 * b, temperature=tau).item() == pytest.approx(expected, rel=1e-6)


def test_style_feature_is_channel_mean_and_std() -> None:
    x = torch.randn(2, 3, 5, 4)
    feature = style_feature(x, eps=0.0)
    torch.testing.assert_close(feature[:, :3], x.mean(dim=(2, 3)))
    torch.testing.assert_close(feature[:, 3:], x.std(dim=(2, 3), unbiased=False))


def _train_mine(
    dependent: bool, *, steps: int = 300, marginals: str = "shifted", estimator: str = "dv"
) -> float:
    generator = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    mine = MutualInformationEstimator(4, hidden_features=64, marginals=marginals, estimator=estimator)
    optimizer = torch.optim.Adam(mine.parameters(), lr=3e-3)

    def draw(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(count, 4, generator=generator)
        noise = torch.randn(count, 4, generator=generator)
        y = x + 0.3 * noise if dependent else noise
        return x, y

    for _ in range(steps):
        x, y = draw(128)
        loss = -mine(x, y).objective
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mine.eval()
    with torch.no_grad():
        x, y = draw(4096 if marginals == "shifted" else 1024)  # all pairs: 255 partners each
        return mine(x, y, shift=1).estimate.mean().item()


@pytest.mark.parametrize(
    ("estimator", "marginals"), [("dv", "all-pairs"), ("dv", "shifted"), ("f", "shifted")]
)
def test_mine_estimate_higher_for_dependent_inputs(estimator: str, marginals: str) -> None:
    dependent = _train_mine(dependent=True, marginals=marginals, estimator=estimator)
    independent = _train_mine(dependent=False, marginals=marginals, estimator=estimator)
    # True MI of the dependent pair: 4 * 0.5 * log(1 + 1 / 0.09) = 4.99 nats (the bound is looser).
    assert dependent > 1.0
    assert abs(independent) < 0.2
    assert dependent > independent + 1.0


@pytest.mark.parametrize("marginals", ["all-pairs", "shifted"])
def test_mine_f_equals_its_closed_form_on_a_constant_statistics_network(marginals: str) -> None:
    mine = MutualInformationEstimator(3, hidden_features=8, marginals=marginals, estimator="f")
    last = mine.statistics.layers[2]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.7)
    result = mine(torch.randn(5, 2, 3), torch.randn(5, 2, 3), shift=2)
    # T = c everywhere: I_f = c - exp(c - 1) (at most 0, reached at c = 1), for each ROI index.
    expected = 0.7 - math.exp(0.7 - 1.0)
    torch.testing.assert_close(result.estimate, torch.full_like(result.estimate, expected))
    assert result.objective.item() == pytest.approx(expected, rel=1e-5)
    result.objective.backward()
    # Unbiased gradient of the bound itself: d/dc (c - exp(c - 1)) = 1 - exp(c - 1); no moving average.
    assert last.bias.grad is not None
    assert last.bias.grad.item() == pytest.approx(1.0 - math.exp(0.7 - 1.0), rel=1e-5)
    assert math.isnan(mine.log_marginal_ema.item())


def test_all_pairs_scores_equal_the_statistics_network_on_each_pair() -> None:
    torch.manual_seed(0)
    mine = MutualInformationEstimator(5, hidden_features=16)
    x, y = torch.randn(7, 5), torch.randn(7, 5)
    partners = (torch.arange(7)[:, None] + torch.arange(1, 7)[None, :]) % 7
    pairwise = mine.statistics.pairwise(x, y, partners)
    brute = torch.stack([mine.statistics(x[i].expand(6, -1), y[partners[i]]) for i in range(7)])
    torch.testing.assert_close(pairwise, brute)


def test_mine_refuses_a_shift_that_keeps_pairs_joint() -> None:
    mine = MutualInformationEstimator(2)
    with pytest.raises(ValueError, match="joint"):
        mine(torch.randn(4, 2), torch.randn(4, 2), shift=4)


@pytest.fixture(scope="module")
def view_batch() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    patches = torch.randn(4, 3, 64, 64, generator=generator)
    views = make_view_pair(
        patches, params=AugmentParams(), generator=generator, band_mean=BAND_MEAN, band_std=BAND_STD
    )
    rois = sample_matched_rois(
        views.matrices_a, views.matrices_b, view_size=(64, 64), num_rois=12, roi_size=8, generator=generator
    )
    torch.manual_seed(0)
    model = MclLcModel(in_channels=3).eval()  # eval: no dropout, so every call sees the same network
    return {"views": views, "rois": rois, "model": model}


def test_loss_switches_turn_terms_off_and_total_is_their_sum(view_batch: dict[str, Any]) -> None:
    model, views, rois = view_batch["model"], view_batch["views"], view_batch["rois"]

    def losses(switches: LossSwitches):
        with torch.no_grad():
            return model.compute_losses(views, rois, switches=switches, temperature=0.5, mine_shift=1)

    full = losses(LossSwitches())
    assert torch.isfinite(full.total)
    summed = full.feature + full.semantic + full.local_consistency
    assert full.total.item() == pytest.approx(summed.item(), rel=1e-6)
    for feature in (True, False):
        for semantic in (True, False):
            for local in (True, False):
                if not (feature or semantic or local):
                    continue
                part = losses(LossSwitches(feature=feature, semantic=semantic, local_consistency=local))
                expected_terms = [
                    (full.feature if feature else 0.0),
                    (full.semantic if semantic else 0.0),
                    (full.local_consistency if local else 0.0),
                ]
                for got, want in zip(
                    (part.feature, part.semantic, part.local_consistency), expected_terms, strict=True
                ):
                    assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
                expected_total = sum(float(t) for t in expected_terms)
                assert part.total.item() == pytest.approx(expected_total, rel=1e-5, abs=1e-6)
                assert math.isnan(part.mutual_information.item()) == (not local)


def test_all_losses_off_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LossSwitches(feature=False, semantic=False, local_consistency=False)


def _tiny_source(seed: int = 0, count: int = 4) -> ArrayPatchSource:
    rng = np.random.default_rng(seed)
    scene = rng.normal(size=(3, 64, 64 * count)).astype(np.float32)
    return ArrayPatchSource(scene, 64)


def _tiny_pretrain_params(**overrides: Any) -> PretrainParams:
    return PretrainParams(**{"epochs": 1, "batch_size": 4, "patch_size": 64, "device": "cpu", **overrides})


@pytest.fixture(scope="module")
def pretrained() -> dict[str, Any]:
    reports: list[Any] = []
    ckpt = pretrain_mcl_lc(
        _tiny_source(),
        in_channels=3,
        params=_tiny_pretrain_params(),
        band_mean=BAND_MEAN,
        band_std=BAND_STD,
        on_progress=reports.append,
    )
    return {"ckpt": ckpt, "reports": reports}


def test_one_pretrain_step_gives_finite_losses(pretrained: dict[str, Any]) -> None:
    ckpt, reports = pretrained["ckpt"], pretrained["reports"]
    assert len(reports) == 1
    report = reports[0]
    for value in (report.loss, report.feature_loss, report.semantic_loss, report.local_consistency_loss):
        assert math.isfinite(value)
    summed = report.feature_loss + report.semantic_loss + report.local_consistency_loss
    assert report.loss == pytest.approx(summed, rel=1e-5)
    validate_checkpoint(ckpt)
    assert ckpt["family"] == "mcl-lc" and ckpt["extra"]["stage"] == "pretrain" and ckpt["extra"]["epoch"] == 1


def test_mine_learning_rate_steps_the_statistics_network_in_its_own_group(pretrained: dict[str, Any]) -> None:
    """One update: the rest of the model moves as in the one-group run, MINE's ``T`` at its own rate."""
    one_group = pretrained["ckpt"]
    split = pretrain_mcl_lc(
        _tiny_source(), in_channels=3, params=_tiny_pretrain_params(mine_learning_rate=1e-7),
        band_mean=BAND_MEAN, band_std=BAND_STD,
    )  # fmt: skip
    groups = split["extra"]["optimizer_state"]["param_groups"]
    assert [group["initial_lr"] for group in groups] == [1e-3, 1e-7]
    assert len(one_group["extra"]["optimizer_state"]["param_groups"]) == 1
    moved = []
    for name, tensor in one_group["state_dict"].items():
        if not name.startswith("mine."):  # the first update's gradients do not depend on T's rate
            torch.testing.assert_close(split["state_dict"][name], tensor, rtol=0, atol=0)
        elif tensor.is_floating_point() and "ema" not in name:
            moved.append(float((split["state_dict"][name] - tensor).abs().max()))
    assert moved and max(moved) > 1e-4  # T took a ~1e-7 step instead of the ~1e-3 of the one-group run


@pytest.fixture(scope="module")
def reloaded(pretrained: dict[str, Any], tmp_path_factory) -> dict[str, Any]:
    """The pre-training checkpoint after torch.save and torch.load(weights_only=True)."""
    path = tmp_path_factory.mktemp("mcl_lc") / "pretrain.pt"
    torch.save(pretrained["ckpt"], path)
    return torch.load(path, weights_only=True)


def test_checkpoint_survives_weights_only_round_trip(
    pretrained: dict[str, Any], reloaded: dict[str, Any]
) -> None:
    original = pretrained["ckpt"]
    assert reloaded["train_params"] == original["train_params"]
    assert reloaded["train_params"]["temperature"] == 0.5
    assert reloaded["history"] == original["history"]
    assert set(reloaded["state_dict"]) == set(original["state_dict"])
    for name, tensor in original["state_dict"].items():
        assert torch.equal(reloaded["state_dict"][name], tensor)
    assert reloaded["extra"]["optimizer_state"]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_resume_continues_from_the_stored_epoch(reloaded: dict[str, Any]) -> None:
    resumed = pretrain_mcl_lc(
        _tiny_source(),
        in_channels=3,
        params=_tiny_pretrain_params(epochs=2),
        band_mean=BAND_MEAN,
        band_std=BAND_STD,
        resume_from=reloaded,
    )
    assert resumed["extra"]["epoch"] == 2
    assert len(resumed["history"]["loss"]) == 2
    assert resumed["history"]["loss"][0] == reloaded["history"]["loss"][0]
    assert resumed["extra"]["scheduler_state"]["last_epoch"] == 2


def test_a_checkpoint_older_than_the_mine_options_resumes_with_their_defaults(
    reloaded: dict[str, Any],
) -> None:
    from eo_models.params import field_defaults, plain_dict
    from eoseg.errors import ConfigurationError
    from eoseg.train.stage import _check_resume

    stores = {"store_uris": ["memory://a.zarr"], "max_patches": None}
    old = dict(reloaded, train_params={**reloaded["train_params"], **stores})
    for name in ("mine_marginals", "mine_estimator"):  # written before these options existed
        del old["train_params"][name]
    absent = field_defaults(PretrainParams)

    def check(**params: Any) -> int:
        wanted = {**plain_dict(_tiny_pretrain_params(epochs=2, **params)), **stores}
        return _check_resume(old, "old.pt", "mcl-lc", wanted, absent)

    assert check() == 1  # the defaults are the behaviour of the older runs
    with pytest.raises(ConfigurationError, match="mine_estimator: 'dv' then, 'f' now"):
        check(mine_estimator="f")
    with pytest.raises(ConfigurationError, match="mine_marginals: 'shifted' then, 'all-pairs' now"):
        check(mine_marginals="all-pairs")


@pytest.mark.slow
def test_chunked_run_equals_uninterrupted_run() -> None:
    params = _tiny_pretrain_params(epochs=3, batch_size=2)
    source = _tiny_source(count=2)
    first = pretrain_mcl_lc(
        source, in_channels=3, params=params, band_mean=BAND_MEAN, band_std=BAND_STD, stop_after_epoch=1
    )
    assert first["extra"]["epoch"] == 1 and len(first["history"]["loss"]) == 1
    resumed = pretrain_mcl_lc(
        source, in_channels=3, params=params, band_mean=BAND_MEAN, band_std=BAND_STD, resume_from=first
    )
    straight = pretrain_mcl_lc(source, in_channels=3, params=params, band_mean=BAND_MEAN, band_std=BAND_STD)
    assert resumed["history"] == straight["history"]
    for name, tensor in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][name], tensor, rtol=0, atol=0)


class TinyLabelledSource:
    """Labelled patches: class 1 where band 0 is positive, unlabelled (-1) on the first row."""

    def __init__(self, count: int = 4) -> None:
        rng = np.random.default_rng(3)
        self.images = rng.normal(size=(count, 3, 64, 64)).astype(np.float32)
        self.labels = (self.images[:, 0] > 0).astype(np.int64)
        self.labels[:, 0, :] = -1

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.images[list(indices)], self.labels[list(indices)]


def test_one_finetune_step_lowers_cross_entropy() -> None:
    source = TinyLabelledSource()
    images, labels = (torch.from_numpy(a) for a in source.read(range(4)))
    torch.manual_seed(0)
    network = DeepLabV3Plus(in_channels=3, num_classes=2, aspp_dropout=0.0).train()  # no dropout noise
    # Adam's first step moves every one of the 40 M weights by about lr; on a random network and a
    # 4-patch batch only a small lr stays in the regime where one step must lower the loss (the
    # paper's 1e-4 is for many steps from pre-trained weights).
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-6)
    before = finetune_step(network, optimizer, images, labels, ignore_index=-1)
    with torch.no_grad():
        after = segmentation_loss(network(images), labels, ignore_index=-1)
    assert after < before


def test_finetune_returns_a_checkpoint_that_predicts(pretrained: dict[str, Any], tmp_path) -> None:
    params = FinetuneParams(num_classes=2, epochs=1, batch_size=4, device="cpu", freeze_encoder=True)
    ckpt = finetune_mcl_lc(pretrained["ckpt"], TinyLabelledSource(), params=params)
    validate_checkpoint(ckpt)
    assert ckpt["num_classes"] == 2 and ckpt["model_config"]["num_classes"] == 2
    # freeze_encoder: E (backbone, ASPP) keeps the pre-trained weights, BatchNorm statistics too.
    for name in ("backbone.layer2.0.conv1.weight", "backbone.bn1.running_mean", "aspp.project.0.weight"):
        pretrained_value = pretrained["ckpt"]["state_dict"][f"network.{name}"]
        torch.testing.assert_close(ckpt["state_dict"][name], pretrained_value)
    path = tmp_path / "finetuned.pt"
    torch.save(ckpt, path)
    predictor = load_predictor(torch.load(path, weights_only=True), device="cpu")
    # Sliding windows of the pre-training patch size (no fine-tuning patch size recorded), stride half.
    window = pretrained["ckpt"]["train_params"]["patch_size"]
    assert predictor.halo == window - window // 2
    labels = predictor.predict(np.random.default_rng(0).uniform(0, 1, size=(3, 40, 48)))
    assert labels.shape == (40, 48) and labels.dtype == np.uint8 and labels.max() < 2


def test_finetune_refuses_out_of_range_labels(pretrained: dict[str, Any]) -> None:
    source = TinyLabelledSource()
    source.labels[0, 5, 5] = 7
    with pytest.raises(ValueError, match="num_classes"):
        params = FinetuneParams(num_classes=2, epochs=1, batch_size=4, device="cpu")
        finetune_mcl_lc(pretrained["ckpt"], source, params=params)
