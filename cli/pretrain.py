"""The ``eoseg train mcl-lc`` and ``eoseg finetune`` commands (mCL-LC, Tang et al. 2023).

They live in their own module and are added to the app by :func:`register`, called at the end of
``cli/main.py``. Each runs a Prefect flow, like every other command.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def _options(model, **values):
    from cli.main import _fail
    from eoseg.errors import EosegError

    try:
        return model(**values)
    except ValueError as error:
        _fail(EosegError(f"invalid option: {error}"))


def train_mcl_lc(
    stores: Annotated[
        list[str], typer.Argument(help="Tile stores to learn from (from `eoseg tile`), all with the same bands.")
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Checkpoint to write (MODEL.pt, path or s3://).")],
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs (paper: 200).")] = 200,
    batch_size: Annotated[int, typer.Option(min=2, help="Patches per batch (paper: 64).")] = 64,
    patch_size: Annotated[int, typer.Option(min=32, help="Patch edge in pixels (paper: 256).")] = 256,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, help="Initial Adam learning rate, cosine decay (paper: 0.001).")
    ] = 1e-3,
    temperature: Annotated[
        float, typer.Option(min=0.0, help="NT-Xent temperature (not given by the paper).")
    ] = 0.5,
    num_rois: Annotated[int, typer.Option(min=1, help="Matched ROIs per patch pair (paper: 12).")] = 12,
    roi_size: Annotated[int, typer.Option(min=1, help="ROI edge in pixels (paper: 8).")] = 8,
    feature_level: Annotated[
        bool, typer.Option("--feature-level/--no-feature-level", help="Feature-level contrastive loss L_fl.")
    ] = True,
    semantic_level: Annotated[
        bool, typer.Option("--semantic-level/--no-semantic-level", help="Semantic-level contrastive loss L_sl.")
    ] = True,
    local_consistency: Annotated[
        bool,
        typer.Option("--local-consistency/--no-local-consistency", help="Local-consistency (MINE) loss L_lc."),
    ] = True,
    pseudo_clouds: Annotated[
        bool, typer.Option("--pseudo-clouds/--no-pseudo-clouds", help="Pseudo-cloud augmentation (mCL-LC+).")
    ] = True,
    max_patches: Annotated[
        Optional[int], typer.Option(min=2, help="Train on a random subset of at most N patches (CPU shortcut).")
    ] = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(min=1, help="Cap on updates per epoch.")] = None,
    checkpoint_every: Annotated[
        Optional[int], typer.Option(min=1, help="Also write the checkpoint every N epochs (for --resume).")
    ] = None,
    resume: Annotated[
        Optional[str],
        typer.Option(help="Continue the run saved in this checkpoint (same stores and options, more --epochs); "
                     "may be the --out file itself."),
    ] = None,
    stop_after_epoch: Annotated[
        Optional[int], typer.Option(min=1, help="Stop after this many of the planned epochs (resume later).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same weights on CPU).")] = 0,
    device: Annotated[str, typer.Option(help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
) -> None:
    """Self-supervised mCL-LC pre-training of DeepLabv3+ on one or more unlabelled tile stores.

    Multi-level contrastive learning (feature- and semantic-level NT-Xent) with local consistency
    (MINE over matched ROIs), Tang et al. (2023). Patches are sampled from the Zarr stores; every store
    must have the same band count; pixels are normalised with band statistics pooled over the stores
    (recorded in the checkpoint). Runs on a GPU worker when the Dask cluster has one, else here.
    Defaults are the paper's GPU settings; on a CPU use e.g. --patch-size 64 --batch-size 4 --epochs 1
    --max-patches 32.
    """
    from cli.main import _cluster_spec, _run_flow
    from eoseg.train.pretrain_config import MclLcPretrainOptions
    from flows.pretrain_flows import pretrain_mcl_lc_flow

    options = _options(
        MclLcPretrainOptions, epochs=epochs, batch_size=batch_size, patch_size=patch_size, learning_rate=lr,
        temperature=temperature, num_rois=num_rois, roi_size=roi_size, feature_level=feature_level,
        semantic_level=semantic_level, local_consistency=local_consistency, pseudo_clouds=pseudo_clouds,
        max_patches=max_patches, max_steps_per_epoch=max_steps_per_epoch, checkpoint_every=checkpoint_every,
        seed=seed, device=device,
    )  # fmt: skip
    summary = _run_flow(pretrain_mcl_lc_flow, list(stores), out, training=options, resume_uri=resume,
                        stop_after_epoch=stop_after_epoch, cluster=_cluster_spec(), overwrite=overwrite)
    loss = summary["final_loss"]
    typer.echo(f"model: {summary['model_uri']}  (pre-trained {summary['epochs_done']}/{summary['epochs']} "
               f"epochs on {summary['patches']} patches from {len(summary['stores'])} store(s), {summary['seconds']} s on "
               f"{summary['device']}, {summary['patches_per_second']} patches/s, final loss "
               f"{'n/a' if loss is None else f'{loss:.4f}'})")


def finetune(
    model: Annotated[str, typer.Argument(help="Pre-trained checkpoint (from `eoseg train mcl-lc`).")],
    store: Annotated[str, typer.Option("--store", help="Tile store of the labelled scene (from `eoseg tile`).")],
    labels: Annotated[
        str,
        typer.Option(
            "--labels", help="Label raster on the store's grid, or GeoJSON polygons (255 inside, 0 out)."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Fine-tuned checkpoint to write (TUNED.pt).")],
    label_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of the labelled pixels used, seeded (paper: 2%).")
    ] = 0.02,
    num_classes: Annotated[
        Optional[int], typer.Option(min=1, max=256, help="Number of classes; default: distinct labelled values.")
    ] = None,
    ignore: Annotated[
        Optional[list[int]], typer.Option("--ignore", help="Label value marking unlabelled pixels (repeatable).")
    ] = None,
    freeze_encoder: Annotated[
        bool, typer.Option("--freeze-encoder", help="Train only the decoder and classifier.")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Fine-tuning epochs (paper: 20).")] = 20,
    batch_size: Annotated[int, typer.Option(min=2, help="Patches per batch.")] = 16,
    patch_size: Annotated[int, typer.Option(min=32, help="Patch edge in pixels (paper: 256).")] = 256,
    lr: Annotated[
        float, typer.Option("--lr", min=0.0, help="Initial Adam learning rate (paper: 0.0001).")
    ] = 1e-4,
    max_patches: Annotated[
        Optional[int], typer.Option(min=2, help="Fine-tune on a random subset of at most N patches.")
    ] = None,
    max_steps_per_epoch: Annotated[Optional[int], typer.Option(min=1, help="Cap on updates per epoch.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the label sample, patch subset and training.")] = 0,
    device: Annotated[str, typer.Option(help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'.")] = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint.")] = False,
) -> None:
    """Fine-tune a pre-trained mCL-LC network on a small labelled fraction of one scene.

    Labels may be sparse: the raster's nodata and --ignore values mark unlabelled pixels. Label values
    are remapped to 0..N-1 in sorted order (e.g. SpaceNet 0/255 -> 0/1); the mapping is recorded in the
    checkpoint. A seeded random --label-fraction of the labelled pixels is used, the rest ignored.
    Segment scenes with the result: `eoseg run SCENE --model mcl-lc --weights TUNED.pt`.
    """
    from cli.main import _cluster_spec, _run_flow
    from eoseg.train.pretrain_config import MclLcFinetuneOptions
    from flows.pretrain_flows import finetune_mcl_lc_flow

    options = _options(
        MclLcFinetuneOptions, label_fraction=label_fraction, ignore_values=list(ignore or []),
        num_classes=num_classes, epochs=epochs, batch_size=batch_size, patch_size=patch_size, learning_rate=lr,
        freeze_encoder=freeze_encoder, max_patches=max_patches, max_steps_per_epoch=max_steps_per_epoch,
        seed=seed, device=device,
    )  # fmt: skip
    summary = _run_flow(finetune_mcl_lc_flow, model, store, labels, out, training=options,
                        cluster=_cluster_spec(), overwrite=overwrite)
    mapping = ", ".join(f"{value}->{index}" for value, index in summary["label_mapping"].items())
    share = summary["sampled_pixels"] / max(summary["labelled_pixels"], 1)
    typer.echo(f"model: {summary['model_uri']}  (label sample {summary['sampled_pixels']} of "
               f"{summary['labelled_pixels']} labelled pixels = {share:.2%}; fine-tuned on "
               f"{summary['pixels_used']} of them in {summary['patches']} of {summary['candidate_patches']} "
               f"patches, {summary['seconds']} s on {summary['device']}, final loss "
               f"{summary['final_loss']:.4f}; classes {mapping})")


def register(app: typer.Typer, train_app: typer.Typer) -> None:
    """Add `train mcl-lc` and `finetune` to the eoseg app."""
    train_app.command("mcl-lc")(train_mcl_lc)
    app.command("finetune")(finetune)
