"""Command-line options derived from the pydantic option models, so that each option is declared once.

:func:`with_options` adds one ``typer`` option per field of an option model (``eoseg.train.options``) to
a command, with the field's description as help text and its default; the flag is ``--field-name``,
or the field's ``cli`` name (``--k``, ``--lr``); booleans get ``--x/--no-x``. The command receives the
validated model instance instead of the separate values; an invalid value ends the command with a
one-line error (exit code 2). Bounds are checked by pydantic (the same checks the flows apply).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar, cast

import typer
from pydantic import BaseModel

__all__ = ["with_options"]

F = TypeVar("F", bound=Callable[..., Any])


def _cli_type(annotation: Any) -> tuple[Any, str]:
    """The type typer parses the option as, and a note for the help text (choices of a Literal)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        return str, " Choices: " + ", ".join(repr(choice) for choice in choices) + "."
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            inner, note = _cli_type(args[0])
            return Optional[inner], note  # noqa: UP045 (typer needs Optional[...])
    if origin is list:
        return Optional[annotation], ""  # noqa: UP045
    return annotation, ""


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    """typer's ``min``/``max`` from pydantic's ``ge``/``le`` (open bounds are left to pydantic's checks)."""
    bounds: dict[str, Any] = {}
    for constraint in metadata:
        for attribute, key in (("ge", "min"), ("le", "max")):
            value = getattr(constraint, attribute, None)
            if value is not None:
                bounds[key] = value
    return bounds


def _option_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    parameters = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = str(extra.get("cli", "--" + name.replace("_", "-")))
        kind, note = _cli_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        declaration = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
        if isinstance(default, list):
            default = None  # typer: a repeatable option; an empty list is the model's default
        option = typer.Option(
            declaration,
            help=(field.description or "") + note,
            show_default=default is not None,
            **_bounds(field.metadata),
        )
        parameters.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
            )
        )
    return parameters


def with_options(model: type[BaseModel], *, into: str) -> Callable[[F], F]:
    """Decorate a typer command: ``model``'s fields become its options, collected into parameter ``into``.

    Args:
        model: The pydantic option model (its fields must not clash with the command's own parameters).
        into: Name of the command's parameter that receives the validated model instance.
    """

    def decorate(command: F) -> F:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            parameter.replace(annotation=hints.get(parameter.name, parameter.annotation))
            for parameter in inspect.signature(command).parameters.values()
            if parameter.name != into
        ]
        added = _option_parameters(model)
        clashes = {p.name for p in own} & {p.name for p in added}
        if clashes:
            raise TypeError(
                f"{command.__name__}: parameters {sorted(clashes)} clash with {model.__name__}'s fields"
            )

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            fields = {name: values.pop(name) for name in model.model_fields}
            fields = {
                name: value
                for name, value in fields.items()
                if value is not None
                or model.model_fields[name].is_required()
                or model.model_fields[name].default is None
            }
            from cli.runs import checked_options  # one message for a bad option value, by option name

            return command(**values, **{into: checked_options(model, **fields)})

        # Keyword-only options must follow the command's own parameters (arguments first).
        ordered = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        # typer reads the signature from __signature__, which functions lack in typeshed.
        wrapper.__signature__ = inspect.Signature(ordered)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in ordered}
        del wrapper.__wrapped__  # typer must see the new signature, not the command's
        return cast(F, wrapper)  # the command's own parameters, with the model's options added

    return decorate
