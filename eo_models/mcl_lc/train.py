"""mCL-LC's two training loops, in one place for importers: pre-training and fine-tuning.

They live in :mod:`eo_models.mcl_lc.pretrain` and :mod:`eo_models.mcl_lc.finetune`; both plug their steps
into the shared skeleton :func:`eo_models.training.fit`.
"""

from __future__ import annotations

from eo_models.mcl_lc.finetune import (
    FinetuneProgress,
    LabelledPatchSource,
    finetune_mcl_lc,
    finetune_step,
    segmentation_loss,
)
from eo_models.mcl_lc.pretrain import PretrainProgress, pretrain_mcl_lc, pretrain_step

__all__ = [
    "FinetuneProgress",
    "LabelledPatchSource",
    "PretrainProgress",
    "finetune_mcl_lc",
    "finetune_step",
    "pretrain_mcl_lc",
    "pretrain_step",
    "segmentation_loss",
]
