"""Hyper-parameters of the clusterer's training (Algorithm 1), declared once.

Each field carries ``metadata``: ``description`` (help text of the CLI option and the Prefect UI form)
and the bounds (``ge``, ``le``, ``gt``) that ``eoseg`` turns into pydantic constraints; ``cli`` names the
command-line flag where it differs from the field name. ``__post_init__`` enforces the same bounds here,
so the dataclass refuses bad values on a GPU box without pydantic as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from eo_models.params import DEVICE_DESCRIPTION, PRECISION_DESCRIPTION, check_bounds, check_precision, option

__all__ = ["ClustererTrainingParams"]


@dataclass(frozen=True)
class ClustererTrainingParams:
    """Hyper-parameters of Algorithm 1 (Saha et al. 2021).

    The paper gives I, J and K. It does not give the patch size, batch size, optimiser, learning rate,
    or input normalisation; the defaults here for those are ours:

    - patch_size 64 px: the receptive field of the five 3x3 convolutions is only 11 px, so larger patches
      add no context to a pixel; they only change the batch statistics and the channel attention's
      pooling extent. 64 px patches keep these statistics local enough to differ between patches (which
      the contrastive term relies on) while giving a scene of about 1000 x 1000 px some 250 patches.
    - batch_size 16: 16 patches of 64 x 64 = 65 536 pixels per batch, enough for stable BatchNorm
      statistics and plenty of negatives; about 0.5 GB of activations (batch and shuffled batch).
    - learning_rate 1e-3 with Adam. Each batch gets J = 50 consecutive updates, so an optimiser whose
      step size does not depend on the gradient scale is the safer choice: the cross-entropy (up to
      log K) and the contrastive term (in (0, 1]) have very different gradient magnitudes, and both
      change as clusters sharpen. SGD (momentum 0.9) would need tuning, typically 0.01-0.1.
    - optimizer: one optimiser lives for the whole run, so its state carries over from batch to batch.
    """

    num_classes: int = option(
        8, "K: number of output features = clusters (paper: 8).", ge=2, le=254, cli="--k"
    )
    epochs: int = option(2, "I: passes over all patches (paper: 2).", ge=1)
    iterations: int = option(50, "J: updates on each batch before the next (paper: 50).", ge=1)
    patch_size: int = option(64, "Patch edge R' = C' in pixels (not given by the paper).", ge=8)
    batch_size: int = option(
        16,
        "B: patches per batch (not given by the paper; the contrastive loss pairs each patch "
        "with another one).",
        ge=2,
    )
    learning_rate: float = option(1e-3, "Optimiser learning rate (not given by the paper).", gt=0, cli="--lr")
    optimizer: Literal["adam", "sgd"] = option("adam", "Adam, or SGD with momentum 0.9.")
    seed: int = option(0, "Seed for weights, patch order and shuffles (reproducible on CPU).")
    device: str = option("auto", DEVICE_DESCRIPTION)
    precision: Literal["auto", "fp32", "bf16"] = option("auto", PRECISION_DESCRIPTION)

    def __post_init__(self) -> None:
        check_bounds(self)
        check_precision(self)
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(
                f"ClustererTrainingParams.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}"
            )
