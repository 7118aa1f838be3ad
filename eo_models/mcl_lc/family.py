"""mCL-LC (Tang et al. 2023) as a model family (:class:`eo_models.family.ModelFamily`).

Training is self-supervised pre-training of DeepLabv3+ (:mod:`eo_models.mcl_lc.pretrain`, resumable),
then supervised fine-tuning with a new classifier (:mod:`eo_models.mcl_lc.finetune`); only a fine-tuned
checkpoint predicts. No scene-wide context pass: ASPP's image pooling stays per tile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from eo_models.family import ModelFamily
from eo_models.mcl_lc.params import FinetuneParams, PretrainParams

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MclLcFamily"]


class MclLcFamily(ModelFamily):
    """DeepLabv3+ (ResNet-50, output stride 16), pre-trained with mCL-LC's losses (Eq. 9), then fine-tuned."""

    name = "mcl-lc"
    # The receptive field spans hundreds of pixels and ASPP's image pooling is global, so no halo makes
    # tiles exact; 64 px (four stride-16 cells) keeps the zero-padding artefacts at tile borders away
    # from the kept region.
    halo = 64
    training_params = PretrainParams
    summary = "mCL-LC of Tang et al. (2023): contrastive pre-training of DeepLabv3+, then fine-tuning"

    def build(self, model_config: Mapping[str, Any]) -> nn.Module:
        """The fine-tuned segmenter (:func:`~eo_models.mcl_lc.deeplabv3plus.build_mcl_lc_segmenter`)."""
        from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter

        return build_mcl_lc_segmenter(model_config)

    def training_loop(self) -> Callable[..., dict[str, Any]]:
        """Self-supervised pre-training (:func:`eo_models.mcl_lc.pretrain.pretrain_mcl_lc`), resumable."""
        from eo_models.mcl_lc.pretrain import pretrain_mcl_lc

        return pretrain_mcl_lc

    @property
    def supports_resume(self) -> bool:
        return True

    @property
    def finetune(self) -> Callable[..., dict[str, Any]]:
        from eo_models.mcl_lc.finetune import finetune_mcl_lc

        return finetune_mcl_lc

    @property
    def finetune_params(self) -> type:
        return FinetuneParams
