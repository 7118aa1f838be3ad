"""The model-family protocol: what every family of ``eo_models`` provides, and the registry by name.

The generic stages of ``eoseg`` (train, predict, checkpoint) know families only through this
protocol: they look a family up by the checkpoint's ``family`` string (or the user's choice) and call
its methods; they never branch on a family's name. A family provides:

- ``build(model_config)``: the untrained ``nn.Module`` of a checkpoint's ``model_config``;
- ``halo``: pixels of context tiled inference reads around each tile (``halo_for(ckpt)`` when it
  depends on the checkpoint, e.g. on mCL-LC's sliding window);
- ``training_params``: the frozen dataclass of its training hyper-parameters, declared once (each field
  with ``metadata={"description": ..., "ge": ...}``; ``eoseg`` derives pydantic models and CLI options
  from it);
- ``train(patches, ...)``: its training loop (on :func:`eo_models.training.fit`), returning a checkpoint;
- ``load_model(ckpt)``: checkpoint -> module with weights (the inverse of checkpoint assembly);
- ``scene_context``: optionally, a scene-wide context pass (the clusterer's channel-attention pooling),
  reduced over all tiles before the tiles are predicted, so tiled inference equals whole-scene inference;
- ``finetune``: optionally, supervised fine-tuning on labelled patches (mCL-LC).

To add a family: subclass :class:`ModelFamily` in its own subpackage and add it to :data:`FAMILIES`
(:func:`register_family`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:  # the registry and the params import no torch: eoseg's CLI and options read them cheaply
    import torch
    from torch import nn

__all__ = ["FAMILIES", "ModelFamily", "SceneContext", "family_names", "get_family", "register_family"]


class SceneContext(Protocol):
    """A scene-wide context pass: per-tile partial results, reduced once, then used by every tile.

    The partials must be exact under tiling (sums, counts, maxima in float64), so that the reduced
    context is the one a whole-scene forward pass would compute.
    """

    def features(self, model: nn.Module, normalised: torch.Tensor) -> torch.Tensor:
        """The context-independent part of the forward pass of ``normalised`` (N, C, H, W).

        Both passes start from it, so a tile's features computed by the first pass can be kept and
        reused by the second (the predict stage does so within a memory budget).
        """
        ...

    def partial(self, model: nn.Module, features: torch.Tensor, inner: tuple[slice, slice]) -> Any:
        """Partial context of one tile from its ``features`` (1, ...) with halo; ``inner``: its own pixels."""
        ...

    def combine(self, partials: Sequence[Any]) -> Any:
        """Reduce the partials of all tiles to the scene's context (small, picklable, plain floats)."""
        ...

    def forward(self, model: nn.Module, features: torch.Tensor, context: Any) -> torch.Tensor:
        """Logits (N, K, H, W) from ``features`` of (N, ...) tiles using the scene's ``context``."""
        ...


class ModelFamily:
    """Base class of a model family; subclasses set the class attributes and implement ``build``/``train``.

    Attributes:
        name: The family's name, stored in every checkpoint's ``family``.
        halo: Context pixels around a tile for tiled inference (the predictions there are dropped).
        training_params: Frozen dataclass of the hyper-parameters of ``train``.
        scene_context: The optional scene-wide context pass, or None.
        summary: One line for help texts.
    """

    name: ClassVar[str]
    halo: ClassVar[int]
    training_params: ClassVar[type]
    scene_context: SceneContext | None = None
    summary: ClassVar[str] = ""

    def build(self, model_config: Mapping[str, Any]) -> nn.Module:
        """The untrained module that ``model_config`` describes.

        Raises:
            ValueError: If the config does not describe a model of this family that can predict.
        """
        raise NotImplementedError

    def load_model(self, ckpt: Mapping[str, Any]) -> nn.Module:
        """Build the module of a checkpoint and load its weights (strict).

        Raises:
            ValueError: If the config is not this family's.
            RuntimeError: If the weights do not fit the module.
        """
        model = self.build(ckpt["model_config"])
        model.load_state_dict(ckpt["state_dict"])
        return model

    def halo_for(self, ckpt: Mapping[str, Any]) -> int:
        """Context pixels tiled inference of this checkpoint needs around each tile (default: ``halo``)."""
        return self.halo

    def in_channels(self, ckpt: Mapping[str, Any]) -> int:
        """Bands the checkpoint's model expects."""
        return int(ckpt["model_config"].get("in_channels", len(ckpt["band_mean"])))

    def training_loop(self) -> Callable[..., dict[str, Any]]:
        """The family's loop on :func:`eo_models.training.fit`: ``(patches, *, in_channels, params,
        band_mean, band_std, on_progress[, resume_from, stop_after_epoch]) -> checkpoint``."""
        raise NotImplementedError

    # The families' loops (pretrain_mcl_lc, train_clusterer) take the same keyword arguments: this is the
    # loop's signature, repeated by design (``duplicates`` lists it against pretrain_mcl_lc).
    def train(
        self,
        patches: Any,
        *,
        in_channels: int,
        params: Any,
        band_mean: Sequence[float],
        band_std: Sequence[float],
        on_progress: Callable[[Any], None] | None = None,
        resume_from: Mapping[str, Any] | None = None,
        stop_after_epoch: int | None = None,
    ) -> dict[str, Any]:
        """Train on unlabelled ``patches`` (an :class:`eo_models.training.PatchSource`); return a checkpoint.

        Args:
            patches: Patches normalised with ``band_mean``/``band_std``.
            in_channels: Bands per patch.
            params: An instance of ``training_params``.
            band_mean: Per-band means, stored for prediction.
            band_std: Per-band standard deviations, likewise.
            on_progress: Called with :class:`eo_models.training.Progress` after every step.
            resume_from: A checkpoint of an interrupted run to continue (families with ``supports_resume``).
            stop_after_epoch: Stop early, keeping the planned schedule (likewise).

        Raises:
            NotImplementedError: For ``resume_from``/``stop_after_epoch`` if the family cannot resume.
            ValueError: On inconsistent inputs.
            FloatingPointError: If a loss becomes NaN or infinite.
        """
        resumable: dict[str, Any] = {}
        if self.supports_resume:
            resumable = {
                "resume_from": None if resume_from is None else dict(resume_from),
                "stop_after_epoch": stop_after_epoch,
            }
        elif resume_from is not None or stop_after_epoch is not None:
            raise NotImplementedError(f"{self.name} training cannot be resumed; train again from the start")
        return self.training_loop()(
            patches,
            in_channels=in_channels,
            params=params,
            band_mean=band_mean,
            band_std=band_std,
            on_progress=on_progress,
            **resumable,
        )

    @property
    def supports_resume(self) -> bool:
        """Whether ``train`` takes ``resume_from`` / ``stop_after_epoch``."""
        return False

    @property
    def finetune(self) -> Callable[..., dict[str, Any]] | None:
        """Fine-tuning ``(checkpoint, labelled, *, params, on_progress) -> checkpoint``, or None."""
        return None

    @property
    def finetune_params(self) -> type | None:
        """Frozen dataclass of the fine-tuning hyper-parameters, or None."""
        return None

    def __repr__(self) -> str:
        return f"<model family {self.name!r}>"


FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add a family to the registry under its ``name`` (replacing one of the same name)."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> ModelFamily:
    """The registered family called ``name``.

    Raises:
        KeyError: Naming the known families.
    """
    _register_builtin_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}") from None


def family_names() -> list[str]:
    """Names of the registered families, sorted."""
    _register_builtin_families()
    return sorted(FAMILIES)


_builtins_registered = False


def _register_builtin_families() -> None:
    global _builtins_registered
    if _builtins_registered:
        return
    _builtins_registered = True
    from eo_models.clusterer.family import ClustererFamily
    from eo_models.mcl_lc.family import MclLcFamily

    for family in (ClustererFamily(), MclLcFamily()):
        FAMILIES.setdefault(family.name, family)
