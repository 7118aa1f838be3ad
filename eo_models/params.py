"""Hyper-parameter dataclasses declared once: bounds in field metadata, checked without pydantic.

A family's training parameters are a frozen dataclass whose fields carry
``metadata={"description": ..., "ge": ..., "le": ..., "gt": ...}``. :func:`check_bounds` enforces the
bounds in ``__post_init__`` (``eo_models`` must run where only torch and numpy are installed);
``eoseg.train.options`` derives the pydantic models and CLI options from the same metadata.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

__all__ = ["check_bounds", "params_from_dict", "plain_dict"]

P = TypeVar("P")

_BOUNDS: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


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

    return plain(dataclasses.asdict(params))  # type: ignore[no-any-return]
