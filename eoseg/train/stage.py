"""Train stage: a model is trained on patches of one (or more) tile stores and saved as a checkpoint.

The training loops live in :mod:`eo_models` (plain PyTorch); this module feeds them patches from Zarr,
reports progress to the ``eoseg`` logger, and writes the checkpoint atomically (locally or to S3).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict
from typing import Any

from eoseg.io import storage
from eoseg.io.publish import publish_file
from eoseg.errors import ConfigurationError, OutputExistsError
from eoseg.compute.chunks import current_worker_address
from eoseg.train.patches import ZarrPatchSource

logger = logging.getLogger("eoseg.train.stage")


def _log_clusterer_progress(progress) -> None:
    logger.info(
        "epoch %d/%s batch %d/%d: loss %.4f (clustering %.4f, contrastive %.4f)",
        progress.epoch, "?", progress.batch, progress.batches_per_epoch, progress.loss,
        progress.clustering_loss, progress.contrastive_loss,
    )  # fmt: skip


def save_checkpoint_to(uri: str, checkpoint: dict[str, Any], *, overwrite: bool) -> None:
    """Write a checkpoint dict to a local path or S3, atomically."""
    from eo_models.checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(prefix="eoseg-ckpt-") as scratch:
        local = os.path.join(scratch, "model.pt")
        save_checkpoint(local, checkpoint)
        publish_file(local, uri, overwrite=overwrite)


def load_checkpoint_from(uri: str) -> dict[str, Any]:
    """Read a checkpoint from a local path or S3 (``torch.load(weights_only=True)``)."""
    from eo_models.checkpoint import load_checkpoint

    from eoseg.errors import SceneNotFoundError

    if not storage.exists(uri):
        raise SceneNotFoundError(f"{uri}: model checkpoint not found. Train one with `eoseg train`.")
    with tempfile.TemporaryDirectory(prefix="eoseg-ckpt-") as scratch:
        return load_checkpoint(storage.fetch_to_local(uri, scratch))


def train_clusterer_on_store(
    store_uri: str,
    model_uri: str,
    *,
    params: dict[str, Any] | None = None,
    max_patches: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the single-scene clusterer (Saha et al., Algorithm 1) on one tile store.

    Args:
        store_uri: a finished image store.
        model_uri: where to write the checkpoint (local path or ``s3://``).
        params: fields of ``eo_models.clusterer.train.ClustererTrainingParams`` (defaults: the paper's).
        max_patches: train on a seeded random subset of at most this many patches (a CPU shortcut; the
            paper uses every patch).
        overwrite: replace an existing checkpoint.

    Returns:
        A small summary: model URI, number of patches, seconds, final loss, device.
    """
    from eo_models.clusterer.train import ClustererTrainingParams, train_clusterer

    model_uri = storage.normalise_uri(model_uri)
    if storage.exists(model_uri) and not overwrite:
        raise OutputExistsError(f"{model_uri}: checkpoint already exists. Pass --overwrite to replace it.")
    try:
        training = ClustererTrainingParams(**(params or {}))
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"invalid clusterer training parameters: {error}") from error
    patches = ZarrPatchSource(store_uri, training.patch_size, max_patches=max_patches, seed=training.seed)
    logger.info("training the clusterer on %d patches of %d px from %s (K=%d, I=%d, J=%d, B=%d)",
                len(patches), training.patch_size, store_uri, training.num_classes, training.epochs,
                training.iterations, training.batch_size)
    started = time.perf_counter()
    checkpoint = train_clusterer(
        patches,
        in_channels=patches.band_count,
        params=training,
        band_mean=patches.band_mean,
        band_std=patches.band_std,
        on_progress=_log_clusterer_progress,
    )
    seconds = time.perf_counter() - started
    checkpoint["train_params"] = dict(checkpoint["train_params"], store_uri=store_uri, max_patches=max_patches,
                                      seconds=round(seconds, 2))
    save_checkpoint_to(model_uri, checkpoint, overwrite=overwrite)
    losses = checkpoint.get("history", {}).get("loss", [])
    summary = {
        "model_uri": model_uri,
        "family": checkpoint["family"],
        "patches": len(patches),
        "seconds": round(seconds, 2),
        "patches_per_second": round(len(patches) * training.epochs * training.iterations / max(seconds, 1e-9), 2),
        "final_loss": float(losses[-1]) if losses else None,
        "device": checkpoint["train_params"].get("resolved_device", checkpoint["train_params"].get("device")),
        "params": asdict(training),
        "ran_on": current_worker_address(),
    }
    logger.info("trained in %.1f s on %s; checkpoint %s", seconds, summary["device"], model_uri)
    return summary
