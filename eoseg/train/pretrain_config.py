"""Validated options of mCL-LC pre-training and fine-tuning (pydantic), shared by the CLI and the flows.

Defaults are the paper's (Tang et al. 2023, Sec. 4.1) where it gives them; every field has a description,
so the Prefect UI renders a documented form. On a CPU, use the overrides (smaller patches and batches,
few epochs, ``max_patches``): the paper's settings are for GPU runs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MclLcPretrainOptions(_Options):
    """Self-supervised mCL-LC pre-training on unlabelled tile stores (Algorithm 1, Eq. 9)."""

    epochs: int = Field(default=200, ge=1, description="Training epochs (paper: 200).")
    batch_size: int = Field(default=64, ge=2, description="Patches per batch, N positive pairs (paper: 64).")
    patch_size: int = Field(default=256, ge=32, description="Patch edge in pixels (paper: 256).")
    learning_rate: float = Field(
        default=1e-3, gt=0, description="Initial Adam learning rate, cosine-decayed to 0 (paper: 0.001)."
    )
    temperature: float = Field(default=0.5, gt=0, description="NT-Xent temperature tau (not given by the paper).")
    num_rois: int = Field(default=12, ge=1, description="Matched ROIs per patch pair N_R (paper: 12).")
    roi_size: int = Field(default=8, ge=1, description="ROI edge in pixels (paper: 8).")
    feature_level: bool = Field(default=True, description="Use the feature-level contrastive loss L_fl (Eq. 2).")
    semantic_level: bool = Field(
        default=True, description="Use the semantic-level contrastive loss L_sl (Eq. 4)."
    )
    local_consistency: bool = Field(
        default=True, description="Use the local-consistency (mutual information) loss L_lc (Eq. 6)."
    )
    pseudo_clouds: bool = Field(
        default=True, description="Pseudo-cloud augmentation (the paper's mCL-LC+); off: plain mCL-LC."
    )
    max_patches: int | None = Field(
        default=None, ge=2,
        description="Train on a seeded random subset of at most this many patches over all stores (a CPU "
        "shortcut; the paper uses all). Empty: all patches.",
    )  # fmt: skip
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="Cap on updates per epoch. Empty: one pass over the patches."
    )
    checkpoint_every: int | None = Field(
        default=None, ge=1,
        description="Write the checkpoint every N epochs while training, so an interrupted run continues with "
        "--resume. Empty: only at the end.",
    )  # fmt: skip
    seed: int = Field(default=0, description="Seed of weights, patch subset, order and augmentations.")
    device: str = Field(default="auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")

    @model_validator(mode="after")
    def _one_loss_on(self) -> MclLcPretrainOptions:
        if not (self.feature_level or self.semantic_level or self.local_consistency):
            raise ValueError("switch on at least one of the feature-level, semantic-level and local-consistency "
                             "losses")
        if self.roi_size > self.patch_size:
            raise ValueError(f"roi_size {self.roi_size} must not exceed patch_size {self.patch_size}")
        return self

    def pretrain_params(self) -> dict[str, Any]:
        """Keyword arguments of ``eo_models.mcl_lc.model.PretrainParams`` (nested values as plain dicts)."""
        values = self.model_dump(exclude={"feature_level", "semantic_level", "local_consistency", "pseudo_clouds",
                                          "max_patches", "checkpoint_every"})  # fmt: skip
        values["losses"] = {"feature": self.feature_level, "semantic": self.semantic_level,
                            "local_consistency": self.local_consistency}  # fmt: skip
        if not self.pseudo_clouds:
            values["augment"] = {"cloud_probability": 0.0}
        return values


class MclLcFinetuneOptions(_Options):
    """Supervised fine-tuning of a pre-trained mCL-LC network on a small labelled fraction of one scene."""

    label_fraction: float = Field(
        default=0.02, gt=0, le=1,
        description="Share of the labelled pixels used for fine-tuning, a seeded random sample (paper: 2% of "
        "the data); the other pixels are left out of the loss.",
    )  # fmt: skip
    ignore_values: list[int] = Field(
        default_factory=list,
        description="Label values that mark unlabelled pixels (besides the label raster's own nodata).",
    )
    num_classes: int | None = Field(
        default=None, ge=1, le=256,
        description="Number of classes. Empty: the number of distinct labelled values. Label values are "
        "remapped to 0..N-1 in sorted order.",
    )  # fmt: skip
    epochs: int = Field(default=20, ge=1, description="Fine-tuning epochs (paper: 20).")
    batch_size: int = Field(default=16, ge=2, description="Patches per batch (not given by the paper).")
    patch_size: int = Field(default=256, ge=32, description="Patch edge in pixels (paper: 256).")
    learning_rate: float = Field(
        default=1e-4, gt=0, description="Initial Adam learning rate, cosine-decayed (paper: 0.0001)."
    )
    freeze_encoder: bool = Field(
        default=False, description="Train only the decoder and classifier, keeping the pre-trained encoder fixed."
    )
    max_patches: int | None = Field(
        default=None, ge=2, description="Fine-tune on a seeded random subset of at most this many patches."
    )
    max_steps_per_epoch: int | None = Field(
        default=None, ge=1, description="Cap on updates per epoch. Empty: one pass over the patches."
    )
    seed: int = Field(default=0, description="Seed of the label sample, patch subset, classifier and order.")
    device: str = Field(default="auto", description="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")

    def finetune_params(self) -> dict[str, Any]:
        """Keyword arguments of ``eo_models.mcl_lc.model.FinetuneParams``, less ``num_classes`` (from the labels)."""
        return self.model_dump(exclude={"label_fraction", "ignore_values", "num_classes", "patch_size",
                                        "max_patches"})  # fmt: skip
