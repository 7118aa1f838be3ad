"""How a command runs: its Dask cluster from the shared options, its flow, and one-line errors (exit 2).

``cli.main.main_options`` records the shared options of the command being run (:func:`use_settings`);
the commands of ``cli.main`` and ``cli.train`` take their cluster from there (:func:`cluster_spec`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import BaseModel

from eoseg.errors import EosegError
from eoseg.settings import EosegSettings, load_settings

if TYPE_CHECKING:
    from cli.prefect_record import PrefectApi
    from eoseg.compute.cluster import ClusterSpec
    from eoseg.config import EvaluateOptions, TileOptions
    from eoseg.scene.sources import SceneSources

__all__ = [
    "checked_options",
    "cluster_spec",
    "fail",
    "local_cluster_requested",
    "prefect_api",
    "prefect_api_configured",
    "preflight_scene",
    "preflight_stores",
    "run_flow",
    "scene_sources",
    "stage_runner",
    "use_interrupt_hint",
    "use_settings",
]

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=BaseModel)

# The settings of the command being run (shared options over EOSEG_* variables), set by main_options.
_RUN_SETTINGS: ContextVar[EosegSettings | None] = ContextVar("eoseg_run_settings", default=None)


def use_settings(settings: EosegSettings) -> None:
    """Make ``settings`` (the shared options over ``EOSEG_*``) those of the command being run."""
    _RUN_SETTINGS.set(settings)


def cluster_spec() -> ClusterSpec:
    """The Dask cluster of this command, from the shared options and ``EOSEG_*`` settings."""
    from eoseg.compute.cluster import ClusterSpec

    settings = _RUN_SETTINGS.get(None) or load_settings()
    return ClusterSpec(
        address=settings.cluster,
        config_file=settings.cluster_config,
        n_workers=settings.workers,
        threads_per_worker=settings.threads_per_worker,
        memory_limit=settings.memory_limit,
    )


def local_cluster_requested() -> bool:
    """Whether this command was asked for a local Dask cluster's shape (``--workers``,
    ``--threads-per-worker``, ``--memory-limit`` or their ``EOSEG_*`` variables), not left at defaults."""
    settings = _RUN_SETTINGS.get(None) or load_settings()
    return bool(settings.model_fields_set & {"workers", "threads_per_worker", "memory_limit"})


def prefect_api() -> PrefectApi | None:
    """The Prefect API runs are recorded in, when one is configured (else Prefect would start its
    temporary server).

    Read without importing Prefect (~1.5 s): ``PREFECT_API_URL`` (with ``PREFECT_API_KEY`` /
    ``PREFECT_API_AUTH_STRING``) in the environment, else ``[api] url`` / ``key`` in ``./prefect.toml``,
    else the active profile (``PREFECT_PROFILE``, else ``active`` in ``PREFECT_PROFILES_PATH`` or
    ``$PREFECT_HOME/profiles.toml``): Prefect's own order. When Prefect is already imported (a test
    harness, a flow run calling the CLI in-process), its own settings answer.
    """
    from cli.prefect_record import PrefectApi

    if "prefect.settings" in sys.modules:
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        key = api.key.get_secret_value() if api.key else None
        auth = api.auth_string.get_secret_value() if api.auth_string else None
        return PrefectApi(api.url, key, auth) if api.url else None
    found: dict[str, str] = {}
    import tomllib

    home = os.path.expanduser(os.environ.get("PREFECT_HOME", "~/.prefect"))
    profiles_path = os.environ.get("PREFECT_PROFILES_PATH", os.path.join(home, "profiles.toml"))
    try:
        with open(os.path.expanduser(profiles_path), "rb") as handle:
            profiles = tomllib.load(handle)
        active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
        found.update(profiles.get("profiles", {}).get(active, {}))
    except (OSError, tomllib.TOMLDecodeError):
        pass
    try:
        with open("prefect.toml", "rb") as handle:
            api_table = tomllib.load(handle).get("api", {})
        # Prefect's order: the environment, then ./prefect.toml, then the profile.
        for setting, value in (
            ("PREFECT_API_URL", api_table.get("url")),
            ("PREFECT_API_KEY", api_table.get("key")),
        ):
            if value:
                found[setting] = value
    except (OSError, tomllib.TOMLDecodeError):
        pass
    found.update({k: v for k, v in os.environ.items() if k.startswith("PREFECT_API_") and v})
    url = found.get("PREFECT_API_URL")
    if not url:
        return None
    return PrefectApi(url, found.get("PREFECT_API_KEY") or None, found.get("PREFECT_API_AUTH_STRING") or None)


def prefect_api_configured() -> bool:
    """Whether Prefect would talk to a configured API rather than start its temporary server
    (:func:`prefect_api`)."""
    return prefect_api() is not None


def stage_runner(flow: str, direct: str, *, record: str | None = None) -> Callable[..., dict[str, Any]]:
    """The function a command calls: the Prefect flow ``flow`` (``"module:name"``), or the stage called
    directly (``direct``, ``"module:name"`` in :mod:`cli.direct`).

    - ``--prefect`` (or ``EOSEG_PREFECT=true``): the flow, with its task runs, retries and limits;
    - ``--no-prefect``, or no Prefect API configured: the direct call;
    - else (a server configured, neither given): with ``record`` (the flow's name), the direct call
      recorded as a run of that flow in that server (:mod:`cli.prefect_record`: no Prefect import,
      ~0.02 s of API calls instead of ~2-3 s); without ``record``, the flow.

    Imported here, so a command without the flow never imports Prefect (~1.5-4 s).
    """
    import importlib

    settings = _RUN_SETTINGS.get(None) or load_settings()
    api = None if settings.prefect is not None else prefect_api()
    wants_flow = settings.prefect if settings.prefect is not None else api is not None and record is None
    module, name = (flow if wants_flow else direct).split(":")
    runner: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), name)
    if wants_flow or api is None or record is None:
        return runner
    from cli.prefect_record import recorded_in_prefect

    return recorded_in_prefect(record, runner, api)


def fail(error: BaseException) -> NoReturn:
    """End the command with ``error: ...`` in red on stderr and exit code 2."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def checked_options(model: type[M], **values: Any) -> M:
    """The option model built from a command's values; an invalid value ends the command (:func:`fail`)."""
    from pydantic import ValidationError

    try:
        return model(**values)
    except ValidationError as error:  # one line per command, named by the option, not pydantic's report
        names = ["-".join(map(str, problem["loc"])).replace("_", "-") for problem in error.errors()]
        problems = "; ".join(
            f"--{name}: {problem['msg']}" if name else problem["msg"]
            for name, problem in zip(names, error.errors(), strict=True)
        )
        fail(EosegError(f"{problems}; see the command's --help"))
    except ValueError as error:
        fail(EosegError(str(error)))


RESUME_HINT = (
    "nothing was published; finished chunks are kept: run the same command again to resume (--overwrite "
    "starts afresh)"
)
RUN_HINT = (
    "the outputs of the stages that finished (MAP.tiles.zarr, MAP.model.pt, ...) are kept, an unfinished "
    "stage's chunks too (its own command resumes it: eoseg tile/predict/mosaic); eoseg run again needs "
    "--overwrite"
)
TRAINING_HINT = "epochs since the last checkpoint are lost (--checkpoint-every N keeps one; --resume goes on)"
RUN_HINT = (
    "the outputs of the stages that finished (MAP.tiles.zarr, MAP.model.pt, ...) are kept, and an unfinished "
    "stage's chunks (its own command resumes them: eoseg tile/predict/mosaic); eoseg run again needs "
    "--overwrite"
)
NOT_KEPT_HINT = "nothing was published; nothing of this run is kept: run the same command again"
_INTERRUPT_HINT: ContextVar[str] = ContextVar("eoseg_interrupt_hint", default=RESUME_HINT)


def use_interrupt_hint(hint: str) -> None:
    """What an interrupted command (Ctrl-C) tells the user it keeps; default :data:`RESUME_HINT`."""
    _INTERRUPT_HINT.set(hint)


def run_flow(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call a flow (or a stage directly: :mod:`cli.direct`); turn eoseg's input errors into a one-line
    message and exit code 2. A flow with a configured Prefect API that does not answer is refused the
    same way before it starts (:func:`cli.prefect_record.check_reachable`), not with Prefect's traceback.
    Ctrl-C ends the command with one line saying what is kept (:func:`use_interrupt_hint`) and exit code
    130, the shell's code for an interrupt; nothing unfinished is published (the output lifecycle)."""
    flows = sys.modules.get("prefect.flows")  # imported already when ``function`` is a flow
    api = prefect_api() if flows is not None and isinstance(function, flows.Flow) else None
    try:
        if api is not None:
            from cli.prefect_record import check_reachable

            check_reachable(api)
        return function(*args, **kwargs)
    except EosegError as error:
        fail(error)
    except FileExistsError as error:  # the final rename/upload found a competitor's output
        fail(EosegError(f"{error}: output appeared while running; pass --overwrite to replace it."))
    except KeyboardInterrupt:
        typer.secho(f"interrupted: {_INTERRUPT_HINT.get()}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=130) from None


# The scenes this command opened (headers), by scene and tile options: the preflight's reading serves the
# direct call too (cli.direct.tile_direct), so the CLI reads a scene's headers once.
_SCENES: dict[str, SceneSources] = {}


def scene_sources(scene: str | list[str], tile: TileOptions) -> SceneSources:
    """The scene's files inspected and placed on one grid (:func:`eoseg.scene.sources.open_scene_sources`),
    read once per command for the same scene and options.

    Raises:
        EosegError: as :func:`~eoseg.scene.sources.open_scene_sources` (nothing is kept then).
    """
    import json

    from eoseg.scene.sources import open_scene_sources

    key = json.dumps([scene, tile.model_dump(mode="json")], sort_keys=True)
    if key not in _SCENES:
        _SCENES[key] = open_scene_sources(
            scene, allow_ungeoreferenced=tile.allow_ungeoreferenced, warp_gcps=tile.warp_gcps,
            resample=tile.resample,
        )  # fmt: skip
    return _SCENES[key]


def preflight_scene(
    scene: str | list[str],
    tile: TileOptions,
    *,
    patch_size: int | None = None,
    weights: str | None = None,
    evaluate: EvaluateOptions | None = None,
    reference: str | None = None,
) -> None:
    """Refuse a bad scene before any flow, cluster or output exists: one ``error:`` line, exit 2.

    Checks the header and edge blocks (:func:`eoseg.scene.inspect.inspect_scene`; the headers of every
    file of a many-file scene, :func:`eoseg.scene.sources.open_scene_sources`), when the command
    trains, that one ``patch_size`` patch fits in the scene, and, with ``weights``, that the model was
    trained on as many bands as the scene has, and with ``reference``, that it exists, is on the
    scene's CRS and ``evaluate.class_names`` names classes (:func:`eoseg.evaluate.reference.check_reference`).
    The flows check the same again for runs that do not come from the CLI.
    """
    try:  # one GeoTIFF is inspected as before; many are checked onto one grid (headers only)
        info = scene_sources(scene, tile).scene
        if patch_size is not None:
            from eoseg.train.patches import check_patch_fits

            check_patch_fits(info.uri, info.height, info.width, patch_size)
        if weights is not None:  # imported only here: eoseg.predict imports torch (~2 s with its exit)
            from eoseg.predict.stage import check_model_bands

            check_model_bands(info.uri, info.band_count, weights)
        if reference is not None:
            from eoseg.evaluate.reference import check_reference

            class_names = evaluate.class_names if evaluate else None
            check_reference(reference, class_names, crs_wkt=info.crs_wkt)
    except EosegError as error:
        fail(error)


def preflight_stores(stores: list[str], patch_size: int | None, *, images: bool = False) -> None:
    """Refuse unreadable or too small stores before a flow starts (one line, exit 2); with ``images``
    (training, prediction) also label stores and tile stores of different band counts."""
    from eoseg.store.layout import read_store_info
    from eoseg.train.patches import check_patch_fits

    try:
        first = None
        for store in stores:
            info = read_store_info(store)
            if images and info.kind != "image":
                raise EosegError(
                    f"{store}: is a label store (written by eoseg predict), not a tile store; give the "
                    "tile store the scene was tiled into (eoseg tile)"
                )
            if images and first is not None and info.band_count != first[1].band_count:
                raise EosegError(
                    f"{store}: has {info.band_count} band(s) but {first[0]} has {first[1].band_count}; one "
                    "model is trained on stores of one kind of scene"
                )
            first = first or (store, info)
            if patch_size is not None:
                check_patch_fits(store, info.height, info.width, patch_size)
    except EosegError as error:
        fail(error)


WARP_GCPS_HELP = (
    "Warp a scene georeferenced only by ground control points (GCPs) onto a regular grid; without it "
    "such a scene is refused."
)

SCENE_HELP = (
    "Input scene: a GeoTIFF (path or s3://bucket/key), or many on one pixel grid forming one mosaic: "
    "several GeoTIFFs, a folder, an s3:// prefix or a GDAL VRT of tiles (gaps are nodata; where tiles "
    "overlap the first wins)."
)


def scene_argument(scenes: list[str]) -> str | list[str]:
    """The flows' ``scene_uri``: one string for one input (as before), else the list."""
    return scenes[0] if len(scenes) == 1 else list(scenes)


# `eoseg run`'s options for a city's outputs (here: cli/main.py stays a readable size).
ResampleOption = Annotated[
    str | None,
    typer.Option(
        "--resample",
        metavar="METHOD",
        help="Warp tiles of a many-file scene that lie on another grid (CRS, pixel size, origin) onto the "
        "first tile's grid: nearest, bilinear, cubic, average or mode. Without it they are refused.",
    ),
]
PerTileMapsOption = Annotated[
    str | None,
    typer.Option(
        "--per-tile-maps",
        help="Folder (or s3:// prefix) for one COG per input tile on its exact grid, a VRT over them, "
        "a quick-look and a STAC Collection.",
    ),
]
MaxCogPixelsOption = Annotated[
    int | None,
    typer.Option(
        "--max-cog-pixels",
        min=1,
        help="Largest map written as one COG, in pixels (default 4e9); beyond it use --per-tile-maps.",
    ),
]
LegendOption = Annotated[
    str | None,
    typer.Option("--legend", help="Legend YAML (cluster -> name, colour, merge) applied to the maps."),
]

# Options of the speed work, declared here so that cli/main.py stays a readable size.
PrefectOption = Annotated[
    bool | None,
    typer.Option(
        "--prefect/--no-prefect",
        help="Run tile/predict/mosaic as Prefect flows (task runs, retries, recorded in Prefect's run "
        "history) or call the stages directly. Default with a Prefect API configured (PREFECT_API_URL "
        "or a profile): predict runs its flow, tile and mosaic call the stage and record the run there "
        "(no Prefect import, ~2-3 s less); without one, direct calls. run/train/finetune always run "
        "flows. [env: EOSEG_PREFECT]",
        show_default=False,
    ),
]
PrecisionOption = Annotated[
    str,
    typer.Option(
        help="Arithmetic: 'auto' (bf16 where the CPU has AMX/AVX512-BF16 or the GPU supports it, else "
        "fp32), 'fp32' or 'bf16'. Recorded in the label store and the map's tags."
    ),
]
