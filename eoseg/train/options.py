"""Training options derived from each family's hyper-parameter dataclass: declared once, used everywhere.

A family declares its hyper-parameters once, as a frozen dataclass in ``eo_models`` whose fields carry
``metadata`` (``description``, bounds ``ge``/``gt``/``le``/``lt``, optional ``cli`` flag; nested
dataclasses marked ``flatten`` expose their fields that name an ``option``). From it this module derives
the pydantic model that the flows take as a parameter (the Prefect UI renders a documented form) and
that the CLI turns into options (``cli/options.py``); the training code gets the dataclass back with
:meth:`TrainingOptions.training_params`. Fields without a description stay at the family's default.

Stage options that are not hyper-parameters of the family (``max_patches``, ``checkpoint_every``, the
label sample of fine-tuning) are declared here, once.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

__all__ = [
    "FINETUNE_STAGE_FIELDS",
    "TRAIN_STAGE_FIELDS",
    "TrainingOptions",
    "finetune_options",
    "options_from_params",
    "training_options",
]

_BOUND_KEYS = ("ge", "gt", "le", "lt")


class TrainingOptions(BaseModel):
    """Base of the derived option models: the family's exposed hyper-parameters plus stage options."""

    model_config = ConfigDict(extra="forbid")

    params_class: ClassVar[type]
    # option name -> path of the dataclass field it sets (("losses", "feature") for a flattened one).
    option_paths: ClassVar[dict[str, tuple[str, ...]]]
    stage_fields: ClassVar[frozenset[str]]
    fixed_params: ClassVar[dict[str, Any]] = {}
    # Values the stage supplies later (fine-tuning: num_classes from the labels), for validation only.
    validation_defaults: ClassVar[dict[str, Any]] = {}

    def training_params(self) -> dict[str, Any]:
        """Keyword arguments of the family's params dataclass, nested ones as dicts (no stage options)."""
        values: dict[str, Any] = dict(self.fixed_params)
        for option, path in self.option_paths.items():
            target = values
            for key in path[:-1]:
                target = target.setdefault(key, {})
            target[path[-1]] = getattr(self, option)
        return values

    @model_validator(mode="after")
    def _valid_for_the_family(self) -> TrainingOptions:
        # The dataclass's own checks (e.g. roi_size <= patch_size, one loss switched on), once more here
        # so that a flow parameter or CLI option is refused before a run starts.
        from eo_models.params import params_from_dict

        params_from_dict(self.params_class, {**self.validation_defaults, **self.training_params()})
        return self


def _exposed_fields(
    cls: type, prefix: tuple[str, ...] = ()
) -> list[tuple[str, tuple[str, ...], Any, Any, dict[str, Any]]]:
    """(option name, path, type, default, metadata) of every field with a description."""
    hints = typing.get_type_hints(cls)
    out = []
    for spec in dataclasses.fields(cls):
        metadata = dict(spec.metadata)
        if metadata.get("flatten"):
            out += _exposed_fields(hints[spec.name], (*prefix, spec.name))
            continue
        if "description" not in metadata:
            continue
        factory = cast(Callable[[], Any], spec.default_factory)
        default = spec.default if spec.default is not dataclasses.MISSING else factory()
        out.append(
            (metadata.get("option", spec.name), (*prefix, spec.name), hints[spec.name], default, metadata)
        )
    return out


def options_from_params(
    params_class: type,
    *,
    name: str,
    doc: str,
    stage_fields: dict[str, tuple[Any, Any]] | None = None,
    fixed_params: dict[str, Any] | None = None,
    validation_defaults: dict[str, Any] | None = None,
    module: str = __name__,
) -> type[TrainingOptions]:
    """A pydantic model of the described fields of ``params_class`` plus ``stage_fields``.

    Args:
        params_class: A frozen hyper-parameter dataclass of ``eo_models``.
        name: Class name of the model (it is importable from ``module`` under that name).
        doc: Its docstring (the Prefect UI shows it).
        stage_fields: Extra ``name: (type, pydantic Field)`` options of the stage.
        fixed_params: Params values the options do not expose.
        validation_defaults: Values of required params the stage supplies later (for validation only).
        module: Module the model claims to live in.
    """
    fields: dict[str, Any] = {}
    paths: dict[str, tuple[str, ...]] = {}
    for option, path, hint, default, metadata in _exposed_fields(params_class):
        bounds = {key: metadata[key] for key in _BOUND_KEYS if key in metadata}
        extra = {"cli": metadata["cli"]} if "cli" in metadata else None
        fields[option] = (
            hint,
            Field(default=default, description=metadata["description"], json_schema_extra=extra, **bounds),
        )
        paths[option] = path
    fields.update(stage_fields or {})
    model = create_model(name, __base__=TrainingOptions, __module__=module, __doc__=doc, **fields)
    model.params_class = params_class
    model.option_paths = paths
    model.stage_fields = frozenset(stage_fields or {})
    model.fixed_params = dict(fixed_params or {})
    model.validation_defaults = dict(validation_defaults or {})
    return model


MAX_PATCHES = (
    int | None,
    Field(
        default=None,
        ge=2,
        description="Train on a seeded random subset of at most this many patches over all stores (a CPU "
        "shortcut; the papers use all patches). Empty: all patches.",
    ),
)
CHECKPOINT_EVERY = (
    int | None,
    Field(
        default=None,
        ge=1,
        description="Write the checkpoint every N epochs while training, so an interrupted run "
        "continues with "
        "--resume. Empty: only at the end.",
    ),
)
TRAIN_STAGE_FIELDS: dict[str, tuple[Any, Any]] = {"max_patches": MAX_PATCHES}
FINETUNE_STAGE_FIELDS: dict[str, tuple[Any, Any]] = {
    "label_fraction": (
        float,
        Field(
            default=0.02,
            gt=0,
            le=1,
            description="Share of the labelled pixels used for fine-tuning, a seeded random sample "
            "(paper: 2% of "
            "the data); the other pixels are left out of the loss.",
        ),
    ),
    "ignore_values": (
        list[int],
        Field(
            default_factory=list,
            json_schema_extra={"cli": "--ignore"},
            description="Label values that mark unlabelled pixels (besides the label raster's own nodata; "
            "repeatable on the command line).",
        ),
    ),
    "num_classes": (
        int | None,
        Field(
            default=None,
            ge=1,
            le=256,
            description="Number of classes. Empty: the number of distinct labelled values. Label values are "
            "remapped to 0..N-1 in sorted order.",
        ),
    ),
    "patch_size": (int, Field(default=256, ge=32, description="Patch edge in pixels (paper: 256).")),
    "max_patches": (
        int | None,
        Field(
            default=None,
            ge=2,
            description="Fine-tune on a seeded random subset of at most this many patches.",
        ),
    ),
}


def _class_name(family_name: str, suffix: str) -> str:
    return "".join(part.capitalize() for part in family_name.replace("_", "-").split("-")) + suffix


_cache: dict[tuple[str, str], type[TrainingOptions]] = {}


def _cached(key: tuple[str, str], build: Callable[[], type[TrainingOptions]]) -> type[TrainingOptions]:
    if key not in _cache:
        _cache[key] = build()
    return _cache[key]


def training_options(family_name: str) -> type[TrainingOptions]:
    """The option model of the family's training (its ``training_params`` plus the train stage's options)."""
    from eo_models.family import get_family

    family = get_family(family_name)
    stage = dict(
        TRAIN_STAGE_FIELDS, **({"checkpoint_every": CHECKPOINT_EVERY} if family.supports_resume else {})
    )
    return _cached(
        (family.name, "train"),
        lambda: options_from_params(
            family.training_params,
            name=_class_name(family.name, "TrainingOptions"),
            doc=f"Training of the {family.name} model family: {family.summary}.",
            stage_fields=stage,
            module="eoseg.config",
        ),
    )


def finetune_options(family_name: str) -> type[TrainingOptions]:
    """The option model of the family's fine-tuning.

    Raises:
        ValueError: If the family has no fine-tuning.
    """
    from eo_models.family import get_family

    family = get_family(family_name)
    params_class = family.finetune_params
    if params_class is None:
        raise ValueError(f"the {family.name} model family has no fine-tuning")
    return _cached(
        (family.name, "finetune"),
        lambda: options_from_params(
            params_class,
            name=_class_name(family.name, "FinetuneOptions"),
            doc=f"Supervised fine-tuning of a pre-trained {family.name} network on a small labelled "
            "fraction of "
            "one scene.",
            stage_fields=FINETUNE_STAGE_FIELDS,
            validation_defaults={"num_classes": 2},
            module="eoseg.config",
        ),
    )
