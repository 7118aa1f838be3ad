"""mCL-LC (Tang et al. 2023) as a model family (:class:`eo_models.family.ModelFamily`).

Training is self-supervised pre-training of DeepLabv3+ (:mod:`eo_models.mcl_lc.pretrain`, resumable),
then supervised fine-tuning with a new classifier (:mod:`eo_models.mcl_lc.finetune`); only a fine-tuned
checkpoint predicts, in overlapping windows of its training patch size with the logits averaged
(:mod:`eo_models.mcl_lc.sliding`), so that ASPP's image pooling never sees a whole chunk and the labels
do not depend on the chunk size; no scene-wide context pass is needed.
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
    # A checkpoint's halo is window - stride of its sliding window (halo_for); this is the one of the
    # default 256 px window at stride 128.
    halo = 128
    training_params = PretrainParams
    summary = "mCL-LC of Tang et al. (2023): contrastive pre-training of DeepLabv3+, then fine-tuning"

    def build(self, model_config: Mapping[str, Any]) -> nn.Module:
        """The fine-tuned segmenter (:func:`~eo_models.mcl_lc.deeplabv3plus.build_mcl_lc_segmenter`)."""
        from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter

        return build_mcl_lc_segmenter(model_config)

    def load_model(self, ckpt: Mapping[str, Any]) -> nn.Module:
        """The fine-tuned network with its weights, applied in sliding windows (SlidingWindowSegmenter)."""
        from eo_models.mcl_lc.sliding import SlidingWindowSegmenter, inference_window

        return SlidingWindowSegmenter(super().load_model(ckpt), inference_window(ckpt))

    def halo_for(self, ckpt: Mapping[str, Any]) -> int:
        """``window - stride`` of the checkpoint's sliding window: enough for seamless tiling."""
        from eo_models.mcl_lc.sliding import sliding_halo

        return sliding_halo(ckpt)

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
