"""The ``eoseg`` command line. Every command runs a Prefect flow, so CLI runs appear in Prefect's history.

Without ``PREFECT_API_URL`` Prefect starts a temporary local API for the run; with it, runs are recorded
on that server. Without ``--cluster`` (or ``EOSEG_CLUSTER``) a local Dask cluster is started for the run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from eoseg.errors import EosegError
from eoseg.logs import configure_logging

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
    cluster_config: str | None = None
    workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "auto"


STATE = _State()


def _cluster_spec():
    from eoseg.cluster import ClusterSpec

    return ClusterSpec(
        address=STATE.cluster_address,
        config_file=STATE.cluster_config,
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
    cluster_config: Annotated[
        Optional[str],
        typer.Option(
            "--cluster-config",
            envvar="EOSEG_CLUSTER_CONFIG",
            help="Cluster configuration file: local, an existing scheduler, Kubernetes (dask-kubernetes "
            "operator) or an HPC queue (dask-jobqueue). Examples in infra/clusters/.",
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
    STATE.cluster_config = cluster_config
    STATE.workers = workers
    STATE.threads_per_worker = threads_per_worker
    STATE.memory_limit = memory_limit
    # eoseg's progress at INFO in the terminal and in the run's Prefect logs; Dask's chatter kept out.
    configure_logging(verbose=verbose)


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
    reference: Annotated[
        str, typer.Argument(help="Reference raster on the same grid (any GDAL format), or GeoJSON polygons.")
    ],
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
    import tempfile

    from eoseg.reference import is_vector_reference, rasterize_reference

    try:
        with tempfile.TemporaryDirectory(prefix="eoseg-eval-") as scratch:
            if is_vector_reference(reference):  # polygons: burn them onto the map's grid first
                reference = rasterize_reference(reference, label_map, f"{scratch}/reference.tif")
            report = evaluate_label_map(label_map, reference, ignore_values=tuple(ignore or ()), method=matching)
    except (EosegError, FileNotFoundError, ValueError) as error:
        _fail(error)
    typer.echo(json.dumps(report.to_dict(), sort_keys=True) if as_json else report.to_text())


# Options of the clusterer's training, shared by `train clusterer` and `run` (defaults: the paper's I, J, K).
KOption = Annotated[int, typer.Option("--k", min=2, max=254, help="K: number of clusters (paper: 8).")]
EpochsOption = Annotated[int, typer.Option(min=1, help="I: passes over all patches (paper: 2).")]
IterationsOption = Annotated[int, typer.Option(min=1, help="J: updates per batch (paper: 50).")]
PatchSizeOption = Annotated[int, typer.Option(min=8, help="Training patch edge in pixels.")]
BatchSizeOption = Annotated[int, typer.Option(min=2, help="Patches per batch.")]
LrOption = Annotated[float, typer.Option("--lr", min=0.0, help="Learning rate.")]
OptimizerOption = Annotated[str, typer.Option(help="'adam' or 'sgd' (momentum 0.9).")]
SeedOption = Annotated[int, typer.Option(help="Random seed (same seed, same weights on CPU).")]
MaxPatchesOption = Annotated[
    Optional[int], typer.Option(min=2, help="Train on a random subset of at most N patches (CPU shortcut).")
]
DeviceOption = Annotated[str, typer.Option(help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")]


def _training_options(**values):
    from eoseg.config import ClustererTrainingOptions

    try:
        return ClustererTrainingOptions(**values)
    except ValueError as error:
        _fail(EosegError(f"invalid training option: {error}"))


train_app = typer.Typer(help="Train a model on tile stores.", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("clusterer")
def train_clusterer(
    store: Annotated[str, typer.Argument(help="Tile store of the scene to learn from (from `eoseg tile`).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Checkpoint to write (MODEL.pt, path or s3://).")],
    k: KOption = 8,
    epochs: EpochsOption = 2,
    iterations: IterationsOption = 50,
    patch_size: PatchSizeOption = 64,
    batch_size: BatchSizeOption = 16,
    lr: LrOption = 1e-3,
    optimizer: OptimizerOption = "adam",
    seed: SeedOption = 0,
    max_patches: MaxPatchesOption = None,
    device: DeviceOption = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
) -> None:
    """Train the single-scene clusterer of Saha et al. (2021) on one unlabelled scene.

    Deep clustering with argmax pseudo-labels plus a shuffled-batch contrastive loss (Algorithm 1).
    Runs on a GPU worker when the Dask cluster has one (resource GPU), else here; progress per batch.
    """
    from flows.segment_flows import train_clusterer_flow

    options = _training_options(num_classes=k, epochs=epochs, iterations=iterations, patch_size=patch_size,
                                batch_size=batch_size, learning_rate=lr, optimizer=optimizer, seed=seed,
                                max_patches=max_patches, device=device)
    summary = _run_flow(train_clusterer_flow, store, out, training=options, cluster=_cluster_spec(),
                        overwrite=overwrite)
    typer.echo(f"model: {summary['model_uri']}  ({summary['patches']} patches, {summary['seconds']} s, "
               f"final loss {summary['final_loss']:.4f})")


@app.command()
def predict(
    store: Annotated[str, typer.Argument(help="Tile store to segment (from `eoseg tile`).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Checkpoint (any model family).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Label store to write (LABELS.zarr).")],
    halo: Annotated[
        Optional[int], typer.Option(min=0, help="Context pixels around each chunk; default: the model's.")
    ] = None,
    attention_pooling: Annotated[
        str, typer.Option(help="Clusterer attention: 'scene' (two passes; tiled == whole-scene result) or 'tile'.")
    ] = "scene",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing label store.")] = False,
) -> None:
    """Tiled inference over a tile store on Dask, chunk by chunk, with halos (no seams at chunk edges).

    Weights load once per worker. Labels keep the input's grid and georeferencing; nodata input pixels
    become nodata (255). An interrupted run is resumed by running the same command again.
    """
    from eoseg.config import PredictOptions
    from flows.segment_flows import predict_flow

    try:
        options = PredictOptions(halo=halo, attention_pooling=attention_pooling)
    except ValueError as error:
        _fail(EosegError(str(error)))
    info = _run_flow(predict_flow, store, model, out, options=options, cluster=_cluster_spec(), overwrite=overwrite)
    typer.echo(f"label store: {out}  ({info['width']} x {info['height']} px, {info['num_classes']} classes)")


@app.command()
def run(
    scene: Annotated[str, typer.Argument(help="Input GeoTIFF (path or s3://).")],
    out: Annotated[str, typer.Option("--out", "-o", help="Label map to write (MAP.tif); other outputs go beside it.")],
    model: Annotated[str, typer.Option("--model", help="Model family: 'clusterer' or 'mcl-lc'.")] = "clusterer",
    weights: Annotated[
        Optional[str], typer.Option(help="Existing checkpoint: segment without training (e.g. a similar scene).")
    ] = None,
    reference: Annotated[
        Optional[str], typer.Option(help="Reference map (raster, or GeoJSON polygons) to score the result.")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=16, help="Tile store chunk edge in pixels.")] = 1024,
    k: KOption = 8,
    epochs: EpochsOption = 2,
    iterations: IterationsOption = 50,
    patch_size: PatchSizeOption = 64,
    batch_size: BatchSizeOption = 16,
    lr: LrOption = 1e-3,
    optimizer: OptimizerOption = "adam",
    seed: SeedOption = 0,
    max_patches: MaxPatchesOption = None,
    device: DeviceOption = "auto",
    allow_ungeoreferenced: Annotated[
        bool, typer.Option("--allow-ungeoreferenced", help="Accept a raster without CRS.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")] = False,
) -> None:
    """Segment a scene end to end: tile -> train -> predict -> mosaic (+ quick-look, + scores).

    Outputs beside MAP.tif: MAP.tiles.zarr, MAP.model.pt (the trained checkpoint), MAP.labels.zarr,
    MAP.png (quick-look) and, with --reference, MAP.scores.json.
    """
    from eoseg.config import TileOptions
    from flows.segment_flows import segment_scene_flow

    if model not in ("clusterer", "mcl-lc"):
        _fail(EosegError(f"--model must be 'clusterer' or 'mcl-lc', got {model!r}"))
    training = _training_options(num_classes=k, epochs=epochs, iterations=iterations, patch_size=patch_size,
                                 batch_size=batch_size, learning_rate=lr, optimizer=optimizer, seed=seed,
                                 max_patches=max_patches, device=device)
    result = _run_flow(segment_scene_flow, scene, out, model=model, weights_uri=weights, reference_uri=reference,
                       tile=TileOptions(chunk_size=chunk_size, allow_ungeoreferenced=allow_ungeoreferenced),
                       training=training, cluster=_cluster_spec(), overwrite=overwrite)
    typer.echo(format_run_summary(result))


def format_run_summary(result: dict) -> str:
    """The lines `eoseg run` and `make demo` print at the end."""
    lines = [f"map:        {result['map']}", f"quick-look: {result['quicklook']}", f"model:      {result['model']}",
             f"tile store: {result['tiles']}", f"labels:     {result['labels']}"]
    if result.get("training"):
        t = result["training"]
        lines.append(f"training:   {t['patches']} patches, {t['seconds']} s on {t['device']}, "
                     f"final loss {t['final_loss']:.4f}")
    if result.get("scores"):
        lines.append(f"scores:     {result['scores_file']}")
        for method, report in result["scores"].items():
            lines.append(f"  {method:9s} F1 {report['f1']:.3f}  IoU {report['iou']:.3f}  OA {report['oa']:.3f}  "
                         f"kappa {report['kappa']:.3f}")
    return "\n".join(lines)


@app.command()
def quicklook(
    scene: Annotated[str, typer.Argument(help="The scene (GeoTIFF).")],
    label_map: Annotated[str, typer.Argument(help="Its label map (COG).")],
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")],
    max_size: Annotated[int, typer.Option(min=64, help="Longest side of each panel in pixels.")] = 1024,
) -> None:
    """Write a PNG with the scene and its label map side by side, in the map's class colours."""
    from eoseg.quicklook import write_quicklook

    try:
        write_quicklook(scene, label_map, out, max_size=max_size)
    except (EosegError, FileNotFoundError, ValueError) as error:
        _fail(error)
    typer.echo(f"quick-look: {out}")


from eoseg.cli_mcl_lc import register as _register_mcl_lc  # noqa: E402  (commands live in their own module)

_register_mcl_lc(app, train_app)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Before Prefect is imported: its run-log handler is then attached to the "eoseg" logger too
    # (configure_logging attaches it when a flow starts, for processes started otherwise).
    extra = [name.strip() for name in os.environ.get("PREFECT_LOGGING_EXTRA_LOGGERS", "").split(",") if name.strip()]
    os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] = ",".join(dict.fromkeys([*extra, "eoseg"]))
    app()


if __name__ == "__main__":
    sys.exit(main())
