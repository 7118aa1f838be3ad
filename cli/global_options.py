"""Options shared by every ``eoseg`` command, accepted before or after the command name.

Click only parses a group's options before the sub-command's name, so ``eoseg run SCENE --cluster X``
would be refused ("No such option: --cluster"). :class:`GlobalOptionsGroup` moves the shared options to
the front before Click parses the command line; everything else keeps its place and order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from typer.core import TyperGroup

if TYPE_CHECKING:
    # The Context that TyperGroup.parse_args takes: typer (0.29, the pinned version) vendors Click as
    # typer._click. Only for the annotation, so that the module still imports with any typer.
    from typer._click import Context

# Shared options that take a value, and shared flags (kept in step with cli.main.main_options).
GLOBAL_VALUE_OPTIONS = frozenset(
    {"--cluster", "--cluster-config", "--workers", "--threads-per-worker", "--memory-limit"}
)
GLOBAL_FLAGS = frozenset({"--verbose", "-v", "--prefect", "--no-prefect"})


def _command_index(args: Sequence[str]) -> int:
    """Index of the first sub-command name in ``args`` (len(args) when there is none)."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--" or not arg.startswith("-"):
            return index
        takes_value = arg in GLOBAL_VALUE_OPTIONS  # "--opt=value" carries its value itself
        index += 2 if takes_value else 1
    return index


def hoist_global_options(args: Sequence[str]) -> list[str]:
    """Move the shared options found after the command name to before it.

    Args:
        args: The command line without the program name, e.g. ``["run", "a.tif", "--cluster", "tcp://h:1"]``.

    Returns:
        The same tokens with the shared options (and their values) first, e.g.
        ``["--cluster", "tcp://h:1", "run", "a.tif"]``. Tokens after ``--`` are never moved.
    """
    args = list(args)
    start = _command_index(args)
    if start >= len(args) or args[start] == "--":
        return args
    moved: list[str] = []
    kept: list[str] = []
    index = start
    while index < len(args):
        arg = args[index]
        if arg == "--":
            kept.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS:
            width = 1 if "=" in arg else 2
            moved.extend(args[index : index + width])
            index += width
        elif arg in GLOBAL_FLAGS:
            moved.append(arg)
            index += 1
        else:
            kept.append(arg)
            index += 1
    return args[:start] + moved + kept


SHARED_OPTIONS_EPILOG = (
    "Shared options, before or after the command: --cluster, --cluster-config, --workers, "
    "--threads-per-worker, --memory-limit, --prefect/--no-prefect, --verbose (`eoseg --help` explains them)."
)


class GlobalOptionsGroup(TyperGroup):
    """The root command group: shared options may follow the command name, and every command's ``--help``
    ends by naming them (:data:`SHARED_OPTIONS_EPILOG`)."""

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))

    def get_command(self, ctx: Context, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        pending = [command]
        while pending:  # the command, or a group's commands (eoseg train clusterer)
            current = pending.pop()
            if current is None:
                continue
            pending.extend(getattr(current, "commands", {}).values())
            if SHARED_OPTIONS_EPILOG not in (current.epilog or ""):
                current.epilog = "\n\n".join(filter(None, [current.epilog, SHARED_OPTIONS_EPILOG]))
        return command
