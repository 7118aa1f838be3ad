"""Hyper-parameters of mCL-LC (Tang et al. 2023), declared once: pre-training, fine-tuning, augmentation.

Plain frozen dataclasses (no torch), so that ``eoseg`` can derive its option models and CLI options from
them without importing the networks. Each exposed field carries ``metadata`` (``description``, bounds,
``cli`` flag); nested dataclasses marked ``flatten`` expose their fields named by ``option``.
Defaults are the paper's (Sec. 4.1) unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from eo_models.params import (
    DEVICE_DESCRIPTION,
    MAX_STEPS_DESCRIPTION,
    PRECISION_DESCRIPTION,
    check_bounds,
    check_precision,
    option,
)

__all__ = [
    "DEFAULT_EMA_RATE",
    "DEFAULT_PROJECTION_DIM",
    "AugmentParams",
    "FinetuneParams",
    "LossSwitches",
    "PretrainParams",
]

DEFAULT_PROJECTION_DIM = 128  # output size of the projection heads g_f and g_s (SimCLR's 128)
DEFAULT_EMA_RATE = 0.01  # MINE's moving-average rate of the bias-corrected gradient (MINE paper)


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation settings; defaults follow SimCLR / GLCNet where the paper gives no value.

    Attributes:
        crop_scale: Range of the crop area as a fraction of the patch (GLCNet: 0.4-1.0).
        crop_ratio: Range of the crop aspect ratio (torchvision / GLCNet: 3/4-4/3).
        flip_probability: Probability of each of the horizontal and vertical flips.
        rotate90_probability: Probability of a random quarter-turn rotation (GLCNet: 0.8).
        colour_probability: Probability of colour distortion (SimCLR: 0.8).
        brightness: Per-band brightness factor drawn from ``1 +- brightness`` (SimCLR: 0.4).
        contrast: Per-band contrast factor drawn from ``1 +- contrast`` (SimCLR: 0.4).
        blur_probability: Probability of Gaussian blur (SimCLR: 0.5).
        blur_sigma: Range of the blur sigma in output pixels (SimCLR: 0.1-2.0).
        noise_probability: Probability of additive Gaussian noise.
        noise_std: Range of the noise std, in units of each band's std.
        cloud_probability: Probability of pseudo-cloud noise (paper gives none).
        cloud_count: Range (inclusive) of the number of clouds.
        cloud_coverage: Range of the fraction of the view that a view's clouds cover.
        cloud_gain: Range of the brightness increase inside clouds (paper: 50-100 %).
        pseudo_clouds: Pseudo-cloud augmentation on (the paper's mCL-LC+) or off (plain mCL-LC: as if
            ``cloud_probability`` were 0).
    """

    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    flip_probability: float = 0.5
    rotate90_probability: float = 0.8
    colour_probability: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    noise_probability: float = 0.5
    noise_std: tuple[float, float] = (0.01, 0.1)
    cloud_probability: float = 0.5
    cloud_count: tuple[int, int] = (1, 3)
    cloud_coverage: tuple[float, float] = (0.05, 0.3)
    cloud_gain: tuple[float, float] = (0.5, 1.0)
    pseudo_clouds: bool = option(
        True,
        "Pseudo-cloud augmentation (the paper's mCL-LC+); off: plain mCL-LC.",
        exposed_as="pseudo_clouds",
    )

    def __post_init__(self) -> None:
        probabilities = ("flip", "rotate90", "colour", "blur", "noise", "cloud")
        for name in probabilities:
            value = getattr(self, f"{name}_probability")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}_probability must be in [0, 1], got {value}")
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "noise_std", "cloud_count", "cloud_coverage"):
            low, high = getattr(self, name)
            smallest = 0.0 if name == "noise_std" else 1e-12
            if not smallest <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) of positive values, got {(low, high)}")
        if not (self.crop_scale[1] <= 1.0 and self.cloud_coverage[1] < 1.0):
            raise ValueError("crop_scale and cloud_coverage are fractions of the patch: keep them <= 1")
        if not 0.0 <= self.cloud_gain[0] <= self.cloud_gain[1]:
            raise ValueError(f"cloud_gain must be a range of non-negative increases, got {self.cloud_gain}")

    @classmethod
    def geometric_only(cls) -> AugmentParams:
        """Spatial transforms only (for checks of the geometry)."""
        return cls(colour_probability=0.0, blur_probability=0.0, noise_probability=0.0, cloud_probability=0.0)


@dataclass(frozen=True)
class LossSwitches:
    """Which terms of Eq. 9 are used (Table 3 of the paper ablates them).

    Attributes:
        feature: Feature-level contrastive loss ``L_fl``.
        semantic: Semantic-level contrastive loss ``L_sl``.
        local_consistency: Local-consistency (mutual information) loss ``L_lc``.
    """

    feature: bool = option(
        True, "Use the feature-level contrastive loss L_fl (Eq. 2).", exposed_as="feature_level"
    )
    semantic: bool = option(
        True, "Use the semantic-level contrastive loss L_sl (Eq. 4).", exposed_as="semantic_level"
    )
    local_consistency: bool = option(
        True,
        "Use the local-consistency (mutual information) loss L_lc (Eq. 6).",
        exposed_as="local_consistency",
    )

    def __post_init__(self) -> None:
        if not (self.feature or self.semantic or self.local_consistency):
            raise ValueError("at least one of the three mCL-LC loss terms must be switched on")


@dataclass(frozen=True)
class PretrainParams:
    """Self-supervised pre-training settings. Defaults are the paper's (Sec. 4.1) unless noted.

    Attributes:
        epochs: Training epochs (paper: 200).
        batch_size: Patches per batch, i.e. N positive pairs (paper: 64).
        patch_size: Side of the square patches the source must deliver (paper: 256).
        learning_rate: Initial Adam learning rate (paper: 0.001), decayed by a cosine schedule
            (paper: "cosine decay schedule") to 0 over all steps.
        weight_decay: Adam weight decay (paper: none given; 0).
        temperature: NT-Xent ``tau`` (paper: not given; 0.5 as in SimCLR's small-batch setting and
            GLCNet's code, the baseline mCL-LC is compared with).
        num_rois: Matched ROIs per patch pair ``N_R`` (paper: 12).
        roi_size: ROI side in pixels (paper: 8).
        losses: Switches for the three terms of Eq. 9 (paper: all on).
        projection_dim: Output size of ``g_f`` and ``g_s`` (paper: not given; SimCLR's 128).
        mine_hidden_features: Hidden width of the two-layer statistics network (paper: not given).
        mine_ema_rate: Moving-average rate of MINE's bias-corrected gradient (MINE paper: 0.01).
        mine_marginals: MINE's samples: ``"shifted"`` (default) is the per-ROI-index estimate with one
            shifted partner per ROI; ``"all-pairs"`` pools every matched ROI pair of the batch against
            every unmatched one (measured: *more* negative at batch 4, see ``benchmarks/results/mine.md``).
        mine_estimator: MINE's lower bound: ``"dv"``, Donsker-Varadhan with the moving-average
            gradient (MINE paper, Sec. 3.1-3.2), or ``"f"``, MINE-f ``E_P[T] - E_Q[exp(T - 1)]``
            (MINE paper, Sec. 3.1; unbiased gradient, no moving average).
        mine_learning_rate: Initial Adam learning rate of the statistics network alone (its own
            parameter group, cosine-decayed like the rest); ``None``: the network's ``learning_rate``
            (one group, as before). MINE's ``T`` steps at the paper's 0.001 make the estimate swing
            by tens of nats at CPU batch sizes (``benchmarks/results/mine.md``).
        aspp_dropout: Dropout after ASPP fusion (torchvision/smp DeepLabv3+: 0.5).
        augment: Augmentation settings, pseudo clouds included (the paper's "mCL-LC+").
        encoder_weights: Optional local path of a torchvision-layout ResNet-50 ``state_dict`` to
            start the backbone from (the paper does not say; default: random init).
        max_steps_per_epoch: Cap on updates per epoch (``None``: one pass over the patches).
        seed: Seed of initialisation, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:mod:`eo_models.precision`); the resolved
            one is recorded in the checkpoint's ``train_params.resolved_precision``.
    """

    epochs: int = option(200, "Training epochs (paper: 200).", ge=1)
    batch_size: int = option(64, "Patches per batch, N positive pairs (paper: 64).", ge=2)
    patch_size: int = option(256, "Patch edge in pixels (paper: 256; the encoder has stride 16).", ge=32)
    learning_rate: float = option(
        1e-3, "Initial Adam learning rate, cosine-decayed to 0 (paper: 0.001).", gt=0, cli="--lr"
    )
    weight_decay: float = option(0.0, ge=0)
    temperature: float = option(0.5, "NT-Xent temperature tau (not given by the paper).", gt=0)
    num_rois: int = option(12, "Matched ROIs per patch pair N_R (paper: 12).", ge=1)
    roi_size: int = option(8, "ROI edge in pixels (paper: 8).", ge=1)
    losses: LossSwitches = field(default_factory=LossSwitches, metadata={"flatten": True})
    projection_dim: int = option(DEFAULT_PROJECTION_DIM, ge=1)
    mine_hidden_features: int = option(256, ge=1)
    mine_ema_rate: float = option(DEFAULT_EMA_RATE, gt=0, le=1)
    mine_marginals: str = option(
        "shifted",
        "MINE samples: 'shifted' (per ROI index, one shifted partner; default) or 'all-pairs' (every "
        "unmatched ROI pair of the batch).",
    )
    mine_estimator: Literal["dv", "f"] = option(
        "dv",
        "MINE bound: 'dv' (Donsker-Varadhan, moving-average gradient; default) or 'f' (MINE-f: mean T "
        "of joint pairs minus mean exp(T - 1) of marginal pairs; unbiased gradient).",
    )
    mine_learning_rate: float | None = option(
        None,
        "Initial Adam learning rate of MINE's statistics network alone (own parameter group, cosine-"
        "decayed); empty: the same as --lr.",
        gt=0,
    )
    aspp_dropout: float = option(0.5, ge=0, lt=1)
    augment: AugmentParams = field(default_factory=AugmentParams, metadata={"flatten": True})
    encoder_weights: str | None = None
    max_steps_per_epoch: int | None = option(None, MAX_STEPS_DESCRIPTION, ge=1)
    seed: int = option(0, "Seed of weights, patch subset, order and augmentations.")
    device: str = option("auto", DEVICE_DESCRIPTION)
    precision: Literal["auto", "fp32", "bf16"] = option("auto", PRECISION_DESCRIPTION)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_precision(self)
        if not self.roi_size <= self.patch_size:
            raise ValueError(f"roi_size {self.roi_size} must not exceed patch_size {self.patch_size}")
        if self.mine_marginals not in ("all-pairs", "shifted"):
            raise ValueError(f"mine_marginals must be 'all-pairs' or 'shifted', got {self.mine_marginals!r}")
        if self.mine_estimator not in ("dv", "f"):
            raise ValueError(f"mine_estimator must be 'dv' or 'f', got {self.mine_estimator!r}")

    def model_options(self) -> dict[str, Any]:
        """The settings that shape :class:`eo_models.mcl_lc.model.MclLcModel` (its keyword arguments)."""
        names = ("projection_dim", "roi_size", "mine_hidden_features", "mine_ema_rate", "mine_marginals")
        return {name: getattr(self, name) for name in (*names, "mine_estimator", "aspp_dropout")}


@dataclass(frozen=True)
class FinetuneParams:
    """Supervised fine-tuning settings. Defaults are the paper's (Sec. 4.1) unless noted.

    Attributes:
        num_classes: Number of classes of the labels.
        epochs: Fine-tuning epochs (paper: 20).
        batch_size: Patches per batch (paper: not given; GLCNet's fine-tuning default, 16).
        learning_rate: Initial Adam learning rate (paper: 0.0001), cosine-decayed like pre-training.
        weight_decay: Adam weight decay (paper: none given; 0).
        freeze_encoder: Train only the decoder and classifier, keeping ``E`` (backbone and ASPP,
            BatchNorm statistics included) fixed; default trains the whole network.
        ignore_index: Label value of unlabelled pixels, left out of the loss.
        augment_flips: Random flips and quarter turns, applied to images and labels alike.
        max_steps_per_epoch: Cap on updates per epoch (``None``: one pass over the patches).
        seed: Seed of the classifier initialisation, shuffling, augmentation and dropout.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:0"``, ...
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (:mod:`eo_models.precision`); the resolved
            one is recorded in the checkpoint's ``train_params.resolved_precision``.
    """

    num_classes: int = field(metadata={"ge": 1, "le": 256})
    epochs: int = option(20, "Fine-tuning epochs (paper: 20).", ge=1)
    batch_size: int = option(16, "Patches per batch (not given by the paper; BatchNorm needs two).", ge=2)
    learning_rate: float = option(
        1e-4, "Initial Adam learning rate, cosine-decayed (paper: 0.0001).", gt=0, cli="--lr"
    )
    weight_decay: float = option(0.0, ge=0)
    freeze_encoder: bool = option(
        False, "Train only the decoder and classifier, keeping the pre-trained encoder fixed."
    )
    ignore_index: int = -1
    augment_flips: bool = True
    max_steps_per_epoch: int | None = option(None, MAX_STEPS_DESCRIPTION, ge=1)
    seed: int = option(0, "Seed of the label sample, patch subset, classifier and order.")
    device: str = option("auto", DEVICE_DESCRIPTION)
    precision: Literal["auto", "fp32", "bf16"] = option("auto", PRECISION_DESCRIPTION)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_precision(self)
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {self.ignore_index} collides with a class index")
