"""The ``eoseg`` command line, above the Prefect flows: with a Prefect API configured every command runs
its flow (recorded there); without one, ``tile``/``predict``/``mosaic`` call their stages directly
(:mod:`cli.direct`). ``--prefect/--no-prefect`` decides explicitly (:func:`cli.runs.stage_runner`).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from cli.evaluate import register as register_scoring
from cli.global_options import GlobalOptionsGroup
from cli.options import with_options
from cli.preflight import preflight_checkpoint, preflight_outputs, preflight_run
from cli.runs import (
    RUN_HINT,
    SCENE_HELP,
    WARP_GCPS_HELP,
    LegendOption,
    MaxCogPixelsOption,
    PerTileMapsOption,
    PrecisionOption,
    PrefectOption,
    ResampleOption,
    checked_options,
    cluster_spec,
    fail,
    preflight_scene,
    preflight_stores,
    run_flow,
    scene_argument,
    stage_runner,
    use_interrupt_hint,
    use_settings,
)
from cli.summary import ClassNamesOption, format_run_summary
from eoseg.errors import EosegError
from eoseg.predict.refine import RefineOptions
from eoseg.settings import load_settings
from eoseg.train.options import training_options
from flows.logs import configure_logging

app = typer.Typer(
    name="eoseg",
    cls=GlobalOptionsGroup,
    help="Unsupervised land-cover segmentation of very large aerial and satellite scenes.\n\n"
    "Stages: tile (GeoTIFF -> Zarr), train (a model on the store), predict (tiled inference -> label "
    "Zarr), mosaic (Zarr -> Cloud-Optimized GeoTIFF), evaluate (against a reference map); `run` chains "
    "them. Paths may be local or s3://bucket/key (endpoint and credentials from the AWS_* environment).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


@app.callback()
def main_options(
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Scheduler address of an existing Dask cluster (tcp://host:8786). Default: a local cluster "
            "started for a stage with many chunks (threads of the command for one chunk, tiling and "
            "local mosaics). [env: EOSEG_CLUSTER]",
        ),
    ] = None,
    cluster_config: Annotated[
        str | None,
        typer.Option(
            "--cluster-config",
            help="Cluster configuration file: local, an existing scheduler, Kubernetes (dask-kubernetes "
            "operator) or an HPC queue (dask-jobqueue). Examples in infra/clusters/. "
            "[env: EOSEG_CLUSTER_CONFIG]",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Local cluster: worker processes (default 2). [env: EOSEG_WORKERS]"),
    ] = None,
    threads_per_worker: Annotated[
        int | None,
        typer.Option(
            min=1, help="Local cluster: threads per worker (default 1). [env: EOSEG_THREADS_PER_WORKER]"
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="Local cluster: memory limit per worker ('auto' or e.g. '4GiB'; default auto). "
            "[env: EOSEG_MEMORY_LIMIT]"
        ),
    ] = None,
    prefect: PrefectOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug details and tracebacks.")
    ] = False,
) -> None:
    """Options shared by every command; give them before or after the command name."""
    try:
        settings = load_settings(
            cluster=cluster,
            cluster_config=cluster_config,
            workers=workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            prefect=prefect,
        )
    except ValidationError as error:
        problems = "; ".join(
            f"--{name.replace('_', '-')} (EOSEG_{name.upper()}): {e['msg'].removeprefix('Value error, ')}"
            for e in error.errors()
            for name in [".".join(map(str, e["loc"]))]
        )
        fail(EosegError(f"{problems}; fix the option or the environment variable"))
    use_settings(settings)
    # eoseg's progress at INFO in the terminal and in the run's Prefect logs; Dask's chatter kept out.
    configure_logging(verbose=verbose)


@app.command()
def tile(
    scene: Annotated[list[str], typer.Argument(help=SCENE_HELP)],
    out: Annotated[str, typer.Option("--out", "-o", help="Zarr store to create (path or s3:// prefix).")],
    chunk_size: Annotated[
        int, typer.Option(min=16, help="Chunk edge in pixels; all bands per chunk.")
    ] = 1024,
    allow_ungeoreferenced: Annotated[
        bool, typer.Option(help="Accept a raster without CRS (outputs are pixel grids without CRS).")
    ] = False,
    warp_gcps: Annotated[bool, typer.Option("--warp-gcps", help=WARP_GCPS_HELP)] = False,
    resample: ResampleOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
) -> None:
    """Tile a GeoTIFF (or many on one grid) into a chunked Zarr v3 store, window by window, in parallel.

    The store keeps the CRS, affine transform, nodata, band names and source URI (layout:
    docs/store-layout.md), plus per-band statistics of valid pixels. An interrupted run leaves only a
    hidden `.NAME.partial` store, which the same command resumes.
    """
    from eoseg.config import TileOptions

    options = checked_options(
        TileOptions, chunk_size=chunk_size, allow_ungeoreferenced=allow_ungeoreferenced, warp_gcps=warp_gcps,
        resample=resample,
    )  # fmt: skip
    preflight_outputs(stores=[out], overwrite=overwrite, inputs=scene)
    preflight_scene(scene_argument(scene), options)
    tile_scene = stage_runner(
        "flows.storage_flows:tile_scene_flow", "cli.direct:tile_direct", record="tile-scene"
    )
    info = run_flow(
        tile_scene, scene_argument(scene), out, options=options, cluster=cluster_spec(), overwrite=overwrite
    )
    typer.echo(
        f"tile store: {out}  ({info['width']} x {info['height']} px, {info['band_count']} band(s), "
        f"{info['dtype']}, chunks {info['chunk_cols']} x {info['chunk_rows']} px)"
    )


@app.command()
def mosaic(
    store: Annotated[
        str, typer.Argument(help="Finished eoseg Zarr store (a label store, or an image store).")
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Cloud-Optimized GeoTIFF to write (path or s3://).")
    ],
    band: Annotated[
        int | None, typer.Option(min=1, help="1-based band to write from an image store.")
    ] = None,
    overview_resampling: Annotated[
        str, typer.Option(help="Overview resampling: 'nearest' (fast) or 'mode' (majority class).")
    ] = "nearest",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Write a store back to a Cloud-Optimized GeoTIFF with the source's CRS, transform and size.

    512 x 512 internal tiles, DEFLATE with predictor, overviews, nodata, a class colour table for label
    maps, and provenance tags. Validated with rio-cogeo before it is moved into place atomically.
    """
    from eoseg.config import MosaicOptions

    options = checked_options(MosaicOptions, band=band, overview_resampling=overview_resampling)
    preflight_stores([store], None)
    preflight_outputs(files=[out], overwrite=overwrite, inputs=[store])
    mosaic_store = stage_runner(
        "flows.storage_flows:mosaic_flow", "cli.direct:mosaic_direct", record="mosaic-store"
    )
    summary = run_flow(mosaic_store, store, out, options=options, overwrite=overwrite, cluster=cluster_spec())
    typer.echo(
        f"COG: {out}  ({summary['width']} x {summary['height']} px, overviews "
        f"{list(summary['overview_levels'])})"
    )


register_scoring(app)  # evaluate (here: the order of `eoseg --help`) and quicklook

train_app = typer.Typer(help="Train a model on tile stores.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@app.command()
@with_options(RefineOptions, into="refinement")
def predict(
    store: Annotated[str, typer.Argument(help="Tile store to segment (from `eoseg tile`).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint (any model family).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Label store to write (LABELS.zarr).")],
    halo: Annotated[
        int | None, typer.Option(min=0, help="Context pixels around each chunk; default: the model's.")
    ] = None,
    attention_pooling: Annotated[
        str,
        typer.Option(
            help="Clusterer attention: 'scene' (two passes; tiled == whole-scene result) or 'tile'."
        ),
    ] = "scene",
    precision: PrecisionOption = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing label store.")] = False,
    refinement: Any = None,
) -> None:
    """Tiled inference over a tile store on Dask, chunk by chunk, with halos (no seams at chunk edges).

    Weights load once per worker. Labels keep the input's grid and georeferencing; nodata input pixels
    become nodata (255). An interrupted run is resumed by running the same command again.
    """
    from eoseg.config import PredictOptions

    options = checked_options(
        PredictOptions, halo=halo, attention_pooling=attention_pooling, precision=precision, refine=refinement
    )
    preflight_stores([store], None, images=True)
    preflight_checkpoint(model)
    preflight_outputs(stores=[out], overwrite=overwrite, inputs=[store, model])
    predict_labels = stage_runner("flows.segment_flows:predict_flow", "cli.direct:predict_direct")
    info = run_flow(
        predict_labels, store, model, out, options=options, cluster=cluster_spec(), overwrite=overwrite
    )
    typer.echo(f"label store: {out}  ({info['width']} x {info['height']} px, {info['num_classes']} classes)")


@app.command()
@with_options(RefineOptions, into="refinement")
@with_options(training_options("clusterer"), into="training")
def run(
    scene: Annotated[list[str], typer.Argument(help=SCENE_HELP)],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Label map to write (MAP.tif); other outputs go beside it.")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="Model family (see `eoseg train --help`): 'clusterer' trains here; others need --weights.",
        ),
    ] = "clusterer",
    weights: Annotated[
        str | None,
        typer.Option(help="Existing checkpoint: segment without training (e.g. a similar scene)."),
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="Reference map (raster, or GeoJSON polygons) to score the result.")
    ] = None,
    ignore: Annotated[
        list[int] | None,
        typer.Option("--ignore", help="Reference value to leave out when scoring (repeatable; LoveDA: 0)."),
    ] = None,
    class_names: ClassNamesOption = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="With --reference: also score a raw-pixel 'kmeans' map (same K, same band statistics) "
            "and print it beside the model's scores."
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=16, help="Tile store chunk edge in pixels.")] = 1024,
    allow_ungeoreferenced: Annotated[
        bool, typer.Option("--allow-ungeoreferenced", help="Accept a raster without CRS.")
    ] = False,
    warp_gcps: Annotated[bool, typer.Option("--warp-gcps", help=WARP_GCPS_HELP)] = False,
    resample: ResampleOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
    per_tile_maps: PerTileMapsOption = None,
    max_cog_pixels: MaxCogPixelsOption = None,
    legend: LegendOption = None,
    training: Any = None,
    refinement: Any = None,
) -> None:
    """Segment a scene end to end: tile -> train -> predict -> mosaic (+ quick-look, + scores).

    A scene of many files (tiles on one grid) is one map: one store, one model, no seams.

    Outputs beside MAP.tif: MAP.tiles.zarr, MAP.model.pt (the trained checkpoint), MAP.labels.zarr,
    MAP.png (quick-look) and, with --reference, MAP.scores.json (and with --baseline kmeans,
    MAP.kmeans.tif and MAP.kmeans.scores.json).
    """
    from eo_models.family import family_names
    from eoseg.config import EvaluateOptions, MosaicOptions, PredictOptions, TileOptions

    if model not in family_names():
        fail(EosegError(f"--model must be one of {family_names()}, got {model!r}"))
    evaluate_options = checked_options(
        EvaluateOptions, ignore=list(ignore or []), class_names=class_names, baseline=baseline
    )
    tile = checked_options(
        TileOptions, chunk_size=chunk_size, allow_ungeoreferenced=allow_ungeoreferenced, warp_gcps=warp_gcps,
        resample=resample,
    )  # fmt: skip
    patch_size = None if weights else training.training_params().get("patch_size")
    preflight_run(
        out, model=model, weights=weights, training=training, legend=legend, overwrite=overwrite, inputs=scene
    )
    preflight_scene(
        scene_argument(scene), tile, patch_size=patch_size, weights=weights, evaluate=evaluate_options,
        reference=reference,
    )  # fmt: skip
    from flows.segment_flows import segment_scene_flow  # Prefect and torch: after the cheap checks

    use_interrupt_hint(RUN_HINT)
    result = run_flow(
        segment_scene_flow,
        scene_argument(scene),
        out,
        model=model,
        weights_uri=weights,
        reference_uri=reference,
        tile=tile,
        training=training,
        # The training options' --precision applies to inference too.
        predict=PredictOptions(precision=getattr(training, "precision", "auto"), refine=refinement),
        mosaic=MosaicOptions() if max_cog_pixels is None else MosaicOptions(max_pixels=max_cog_pixels),
        evaluate=evaluate_options,
        cluster=cluster_spec(),
        overwrite=overwrite,
        per_tile_maps=per_tile_maps,
        legend_uri=legend,
    )
    typer.echo(format_run_summary(result))


from cli.train import register as _register_training  # noqa: E402  (commands live in their own module)

_register_training(app, train_app)

from cli.legend import register as _register_legend  # noqa: E402

_register_legend(app)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # eoseg's loggers also log outside a flow run's context (chunk threads, the stages called directly):
    # those lines go to the terminal only, without Prefect's "without a flow run id" warning for each.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # Before Prefect is imported: its run-log handler is then attached to the "eoseg" logger too
    # (configure_logging attaches it when a flow starts, for processes started otherwise).
    extra = [
        name.strip()
        for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",")
        if name.strip()
    ]
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(dict.fromkeys([*extra, "eoseg"]))
    try:
        from typer._click import exceptions as click_errors  # typer >= 0.22 vendors Click
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as click_errors  # type: ignore[no-redef]
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as error:  # `eoseg` alone: the help, as Click shows it
        error.show()
        sys.exit(error.exit_code)
    except click_errors.UsageError as error:  # a bad option or argument: one line, as every refusal
        message = error.format_message().rstrip(".")
        if error.ctx is not None:  # "No such command 'x'. Did you mean 'y'?" ends a sentence already
            message += f"{' S' if message.endswith('?') else '; s'}ee `{error.ctx.command_path} --help`"
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Abort:
        typer.secho("aborted", fg=typer.colors.RED, err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
