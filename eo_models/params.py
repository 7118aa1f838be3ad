"""Hyper-parameter dataclasses declared once: bounds in field metadata, checked without pydantic.

A family's training parameters are a frozen dataclass whose fields carry
``metadata={"description": ..., "ge": ..., "le": ..., "gt": ...}``. :func:`check_bounds` enforces the
bounds in ``__post_init__`` (``eo_models`` must run where only torch and numpy are installed);
``eoseg.train.options`` derives the pydantic models and CLI options from the same metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["check_bounds"]

_BOUNDS = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"), "le": (lambda v, b: v <= b, "<="),
           "lt": (lambda v, b: v < b, "<")}  # fmt: skip


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
                    f"{type(params).__name__}.{spec.name} must be {symbol} {spec.metadata[key]}, got {value!r}"
                )
