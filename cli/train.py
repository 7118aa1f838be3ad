"""``eoseg train <family>`` and ``eoseg finetune``, generated from the model-family registry.

One ``train`` command per registered family (``eoseg train clusterer``, ``eoseg train mcl-lc``), each with
its family's options (declared once on the family's hyper-parameter dataclass, see
``eoseg.train.options``); ``eoseg finetune`` for the family that can be fine-tuned (``eoseg finetune
<family>`` when several can). Each runs a Prefect flow of ``flows.train_flows``, like every other
command. :func:`register` is called at the end of ``cli/main.py``.
"""

# No ``from __future__ import annotations``: the commands' annotations use the family's name (help texts),
# a closure value, so they are evaluated when each command is made.

from collections.abc import Callable
from typing import Annotated, Any

import typer

from cli.options import with_options
from cli.preflight import preflight_model_output
from cli.runs import (
    NOT_KEPT_HINT,
    TRAINING_HINT,
    cluster_spec,
    preflight_stores,
    run_flow,
    use_interrupt_hint,
)

__all__ = ["register"]

OverwriteCheckpoint = Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")]


def _format_training(summary: dict[str, Any]) -> str:
    loss = summary["final_loss"]
    return (
        f"model: {summary['model_uri']}  ({summary['family']}: trained {summary['epochs_done']}/"
        f"{summary['epochs']} epochs on {summary['patches']} patches from {len(summary['stores'])} store(s), "
        f"{summary['seconds']} s on {summary['device']}, {summary['patches_per_second']} patches/s, "
        "final loss "
        f"{'n/a' if loss is None else f'{loss:.4f}'})"
    )


def _train_command(family_name: str) -> Callable[..., None]:
    from eo_models.family import get_family
    from eoseg.train.options import training_options

    family = get_family(family_name)

    def train(
        stores: Annotated[
            list[str],
            typer.Argument(
                help="Tile stores to learn from (from `eoseg tile`), all with the same bands; "
                "patches are sampled "
                "from all, normalised with band statistics pooled over them."
            ),
        ],
        out: Annotated[
            str, typer.Option("--out", "-o", help="Checkpoint to write (MODEL.pt, path or s3://).")
        ],
        resume: Annotated[
            str | None,
            typer.Option(
                help="Continue the run saved in this checkpoint (same stores and options, more "
                "--epochs); may be "
                "the --out file itself (families whose training can be resumed)."
            ),
        ] = None,
        stop_after_epoch: Annotated[
            int | None,
            typer.Option(min=1, help="Stop after this many of the planned epochs (resume later)."),
        ] = None,
        overwrite: OverwriteCheckpoint = False,
        training: Any = None,
    ) -> None:
        preflight_stores(list(stores), training.training_params().get("patch_size"), images=True)
        preflight_model_output(out, overwrite=overwrite, resume=resume, resumable=family.supports_resume)
        from flows.train_flows import TRAIN_FLOWS  # Prefect and torch: after the cheap checks

        use_interrupt_hint(TRAINING_HINT if family.supports_resume else NOT_KEPT_HINT)

        summary = run_flow(
            TRAIN_FLOWS[family_name],
            list(stores),
            out,
            training=training,
            resume_uri=resume,
            stop_after_epoch=stop_after_epoch,
            cluster=cluster_spec(),
            overwrite=overwrite,
        )
        typer.echo(_format_training(summary))

    train.__doc__ = (
        f"Train the {family.summary}.\n\n"
        "Runs on a GPU worker when the Dask cluster has one (resource GPU), else here; progress per "
        "step. Defaults are the paper's; on a CPU use fewer epochs, smaller patches and batches, and "
        "--max-patches."
    )
    return with_options(training_options(family_name), into="training")(train)


def _finetune_command(family_name: str) -> Callable[..., None]:
    from eoseg.train.options import finetune_options

    def finetune(
        model: Annotated[
            str, typer.Argument(help=f"Pre-trained checkpoint (from `eoseg train {family_name}`).")
        ],
        store: Annotated[
            str, typer.Option("--store", help="Tile store of the labelled scene (from `eoseg tile`).")
        ],
        labels: Annotated[
            str,
            typer.Option(
                "--labels", help="Label raster on the store's grid, or GeoJSON polygons (255 inside, 0 out)."
            ),
        ],
        out: Annotated[str, typer.Option("--out", "-o", help="Fine-tuned checkpoint to write (TUNED.pt).")],
        overwrite: OverwriteCheckpoint = False,
        training: Any = None,
    ) -> None:
        from flows.train_flows import FINETUNE_FLOWS

        use_interrupt_hint(NOT_KEPT_HINT)

        summary = run_flow(
            FINETUNE_FLOWS[family_name],
            model,
            store,
            labels,
            out,
            training=training,
            cluster=cluster_spec(),
            overwrite=overwrite,
        )
        mapping = ", ".join(f"{value}->{index}" for value, index in summary["label_mapping"].items())
        share = summary["sampled_pixels"] / max(summary["labelled_pixels"], 1)
        typer.echo(
            f"model: {summary['model_uri']}  (label sample {summary['sampled_pixels']} of "
            f"{summary['labelled_pixels']} labelled pixels = {share:.2%}; fine-tuned on "
            f"{summary['pixels_used']} of them in {summary['patches']} of {summary['candidate_patches']} "
            f"patches, {summary['seconds']} s on {summary['device']}, final loss "
            f"{summary['final_loss']:.4f}; classes {mapping})"
        )

    finetune.__doc__ = (
        f"Fine-tune a pre-trained {family_name} network on a small labelled fraction of one scene.\n\n"
        "Labels may be sparse: the raster's nodata and --ignore values mark unlabelled pixels. Label values "
        "are remapped to 0..N-1 in sorted order (e.g. SpaceNet 0/255 -> 0/1); the mapping is recorded in the "
        "checkpoint. A seeded random --label-fraction of the labelled pixels is used, the rest ignored. "
        f"Segment scenes with the result: `eoseg run SCENE --model {family_name} --weights TUNED.pt`."
    )
    return with_options(finetune_options(family_name), into="training")(finetune)


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add ``train <family>`` for every registered family, and ``finetune``, to the eoseg app."""
    from eo_models.family import family_names, get_family

    for name in family_names():
        train_app.command(name)(_train_command(name))
    tunable = [name for name in family_names() if get_family(name).finetune_params is not None]
    if len(tunable) == 1:
        app.command("finetune")(_finetune_command(tunable[0]))
    elif tunable:
        finetune_app = typer.Typer(
            help="Fine-tune a pre-trained model on a labelled scene.", no_args_is_help=True
        )
        for name in tunable:
            finetune_app.command(name)(_finetune_command(name))
        app.add_typer(finetune_app, name="finetune")
