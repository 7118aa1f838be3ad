"""Hyper-parameter dataclasses declared once: bounds in field metadata, checked without pydantic.

A family's training parameters are a frozen dataclass whose fields carry
``metadata={"description": ..., "ge": ..., "le": ..., "gt": ...}``. :func:`check_bounds` enforces the
bounds in ``__post_init__`` (``eo_models`` must run where only torch and numpy are installed);
``eoseg.train.options`` derives the pydantic models and CLI options from the same metadata.
:func:`option` declares such a field in one line.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = [
    "DEVICE_DESCRIPTION",
    "MAX_STEPS_DESCRIPTION",
    "PRECISION_DESCRIPTION",
    "check_bounds",
    "check_precision",
    "field_defaults",
    "option",
    "params_from_dict",
    "plain_dict",
]

P = TypeVar("P")
T = TypeVar("T")

#: Help texts of options that every family's training has.
DEVICE_DESCRIPTION = "'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'."
MAX_STEPS_DESCRIPTION = "Cap on updates per epoch. Empty: one pass over the patches."
PRECISION_DESCRIPTION = (
    "Arithmetic: 'auto' (bf16 where the CPU has AMX/AVX512-BF16 or the GPU supports bf16, else fp32), "
    "'fp32', or 'bf16' (bfloat16 autocast, channels_last); see eo_models.precision."
)

_BOUNDS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def option(
    default: T,
    description: str | None = None,
    *,
    cli: str | None = None,
    exposed_as: str | None = None,
    **bounds: float,
) -> T:
    """A dataclass field with a default and the metadata that :func:`check_bounds` and eoseg read.

    Args:
        default: The field's default (immutable).
        description: Help text of the CLI option and the Prefect UI form; a field without one is not
            exposed as an option.
        cli: The command-line flag, where it differs from the field name (e.g. ``"--lr"``).
        exposed_as: The option's name, where it differs from the field name (fields of a nested
            dataclass marked ``flatten``).
        bounds: ``ge``, ``gt``, ``le`` and ``lt`` bounds of the value.

    Raises:
        TypeError: For a bound other than ``ge``, ``gt``, ``le`` and ``lt``.
    """
    unknown = sorted(set(bounds) - set(_BOUNDS))
    if unknown:
        raise TypeError(f"unknown bounds {unknown}; use {sorted(_BOUNDS)}")
    metadata: dict[str, Any] = {} if description is None else {"description": description}
    metadata.update(bounds)
    if cli is not None:
        metadata["cli"] = cli
    if exposed_as is not None:
        metadata["option"] = exposed_as
    return dataclasses.field(default=default, metadata=metadata)


def check_precision(params: Any) -> None:
    """Refuse a ``precision`` field other than ``"auto"``, ``"fp32"`` or ``"bf16"``.

    Raises:
        ValueError: ``"<Class>.precision must be 'auto', 'fp32' or 'bf16', got ..."``.
    """
    if params.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(
            f"{type(params).__name__}.precision must be 'auto', 'fp32' or 'bf16', got {params.precision!r}"
        )


def check_bounds(params: Any) -> None:
    """Check every field of a dataclass instance against the bounds in its metadata.

    ``None`` passes (optional fields). Raises:
        ValueError: ``"<Class>.<field> must be >= 2, got 1"``, naming the first violation.
    """
    for spec in dataclasses.fields(params):
        value = getattr(params, spec.name)
        if value is None or isinstance(value, bool):
            continue
        for key, (holds, symbol) in _BOUNDS.items():
            if key in spec.metadata and not holds(value, spec.metadata[key]):
                raise ValueError(
                    f"{type(params).__name__}.{spec.name} must be {symbol} {spec.metadata[key]}, got "
                    f"{value!r}"
                )


def params_from_dict(cls: type[P], values: Mapping[str, Any]) -> P:
    """Build a params dataclass from plain values, nested dataclass fields from nested mappings.

    The inverse of :func:`plain_dict`: ``params_from_dict(type(p), plain_dict(p)) == p``.

    Raises:
        TypeError: For unknown field names.
        ValueError: For values out of bounds (from the dataclass's ``__post_init__``).
    """
    hints = typing.get_type_hints(cls)
    converted = dict(values)
    # ``cls`` is a dataclass (typeshed's DataclassInstance bound would not admit the ``type`` that the
    # families' ``training_params`` are declared as).
    for spec in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints.get(spec.name)
        value = converted.get(spec.name)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            converted[spec.name] = params_from_dict(hint, value)
    return cls(**converted)


def plain_dict(params: Any) -> dict[str, Any]:
    """A params dataclass as nested dicts and lists (what ``torch.load(weights_only=True)`` reads)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        return value

    as_dict: dict[str, Any] = plain(dataclasses.asdict(params))
    return as_dict


def field_defaults(cls: type) -> dict[str, Any]:
    """The plain default of every field of a params dataclass that has one (nested ones as dicts).

    A checkpoint written before a field existed lacks its key; its run behaved as this default, as long
    as a new field's default keeps the earlier behaviour (the convention the resume check relies on).
    """
    defaults: dict[str, Any] = {}
    for spec in dataclasses.fields(cls):
        if spec.default is not dataclasses.MISSING:
            value = spec.default
        elif spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
        else:
            continue
        if dataclasses.is_dataclass(value):
            value = plain_dict(value)
        defaults[spec.name] = list(value) if isinstance(value, tuple) else value
    return defaults
