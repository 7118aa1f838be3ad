"""The ``eoseg`` command line. Every command runs a Prefect flow, so CLI runs appear in Prefect's history.

Without ``PREFECT_API_URL`` Prefect starts a temporary local API for the run; with it, runs are recorded
on that server. Without ``--cluster`` (or ``EOSEG_CLUSTER``) a local Dask cluster is started for the run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from eoseg.errors import EosegError

app = typer.Typer(
    name="eoseg",
    help="Unsupervised land-cover segmentation of very large aerial and satellite scenes.\n\n"
    "Stages: tile (GeoTIFF -> Zarr), train (a model on the store), predict (tiled inference -> label "
    "Zarr), mosaic (Zarr -> Cloud-Optimized GeoTIFF), evaluate (against a reference map); `run` chains "
    "them. Paths may be local or s3://bucket/key (endpoint and credentials from the AWS_* environment).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
)


class _State:
    cluster_address: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"


STATE = _State()


def _cluster_spec():
    from eoseg.cluster import ClusterSpec

    return ClusterSpec(
        address=STATE.cluster_address,
        n_workers=STATE.workers,
        threads_per_worker=STATE.threads_per_worker,
        memory_limit=STATE.memory_limit,
    )


def _fail(error: BaseException) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _run_flow(function, /, *args, **kwargs):
    """Call a flow; turn eoseg's input errors into a one-line message and exit code 2."""
    try:
        return function(*args, **kwargs)
    except EosegError as error:
        _fail(error)
    except FileExistsError as error:  # the final rename/upload found a competitor's output
        _fail(EosegError(f"{error}: output appeared while running; pass --overwrite to replace it."))


@app.callback()
def main_options(
    cluster: Annotated[
        Optional[str],
        typer.Option(
            "--cluster",
            envvar="EOSEG_CLUSTER",
            help="Scheduler address of an existing Dask cluster (tcp://host:8786). Default: start a local "
            "cluster for this command.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local cluster: worker processes.")] = 2,
    threads_per_worker: Annotated[int, typer.Option(min=1, help="Local cluster: threads per worker.")] = 1,
    memory_limit: Annotated[
        str, typer.Option(help="Local cluster: memory limit per worker ('auto' or e.g. '4GiB').")
    ] = "auto",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Options shared by every command (give them before the command name)."""
    STATE.cluster_address = cluster
    STATE.workers = workers
    STATE.threads_per_worker = threads_per_worker
    STATE.memory_limit = memory_limit
    # Prefect attaches its console (and API) handlers to the "eoseg" logger (PREFECT_LOGGING_EXTRA_LOGGERS).
    logging.getLogger("eoseg").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("httpx", "distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


@app.command()
def tile(
    scene: Annotated[str, typer.Argument(help="Input raster: a GeoTIFF path or s3://bucket/key.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Zarr store to create (path or s3:// prefix).")],
    chunk_size: Annotated[int, typer.Option(min=16, help="Chunk edge in pixels; all bands per chunk.")] = 1024,
    allow_ungeoreferenced: Annotated[
        bool, typer.Option(help="Accept a raster without CRS (outputs are pixel grids without CRS).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output store.")] = False,
) -> None:
    """Tile a GeoTIFF into a chunked Zarr v3 store, window by window, in parallel.

    The store keeps the CRS, affine transform, nodata, band names and source URI (layout:
    docs/store-layout.md), plus per-band statistics of valid pixels. An interrupted run leaves only a
    hidden `.NAME.partial` store, which the same command resumes.
    """
    from eoseg.config import TileOptions
    from flows.storage_flows import tile_scene_flow

    options = TileOptions(chunk_size=chunk_size, allow_ungeoreferenced=allow_ungeoreferenced)
    info = _run_flow(tile_scene_flow, scene, out, options=options, cluster=_cluster_spec(), overwrite=overwrite)
    typer.echo(f"tile store: {out}  ({info['width']} x {info['height']} px, {info['band_count']} band(s), "
               f"{info['dtype']}, chunks {info['chunk_rows']} x {info['chunk_cols']})")


@app.command()
def mosaic(
    store: Annotated[str, typer.Argument(help="Finished eoseg Zarr store (a label store, or an image store).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Cloud-Optimized GeoTIFF to write (path or s3://).")],
    band: Annotated[
        Optional[int], typer.Option(min=1, help="1-based band to write from an image store.")
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
    from flows.storage_flows import mosaic_flow

    try:
        options = MosaicOptions(band=band, overview_resampling=overview_resampling)
    except ValueError as error:
        _fail(EosegError(str(error)))
    summary = _run_flow(mosaic_flow, store, out, options=options, overwrite=overwrite)
    typer.echo(f"COG: {out}  ({summary['width']} x {summary['height']} px, overviews "
               f"{list(summary['overview_levels'])})")


@app.command()
def evaluate(
    label_map: Annotated[str, typer.Argument(help="Label map to score (GeoTIFF from `eoseg run`/`mosaic`).")],
    reference: Annotated[str, typer.Argument(help="Reference raster on the same grid (any GDAL format).")],
    ignore: Annotated[
        Optional[list[int]], typer.Option("--ignore", help="Reference value to leave out (repeatable).")
    ] = None,
    matching: Annotated[
        str, typer.Option(help="Cluster -> class mapping: 'majority' (paper protocol) or 'hungarian' (1:1).")
    ] = "majority",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Score a label map against a reference: per-class and mean F1/IoU, overall accuracy, Cohen's kappa."""
    from eoseg.evaluate import evaluate_label_map

    if matching not in ("majority", "hungarian"):
        _fail(EosegError(f"--matching must be 'majority' or 'hungarian', got {matching!r}"))
    try:
        report = evaluate_label_map(label_map, reference, ignore_values=tuple(ignore or ()), method=matching)
    except (EosegError, FileNotFoundError, ValueError) as error:
        _fail(error)
    typer.echo(json.dumps(report.to_dict(), sort_keys=True) if as_json else report.to_text())


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")
    app()


if __name__ == "__main__":
    sys.exit(main())
