"""mCL-LC stages as plain functions: pre-train on tile stores, fine-tune on a labelled scene.

The training loops are :mod:`eo_models.mcl_lc.train` (plain PyTorch); this module feeds them patches
from Zarr (:mod:`eoseg.train.pretrain_patches`), checks inputs before any work starts, logs progress to the
``eoseg`` logger and writes checkpoints atomically (locally or to S3). No Prefect here: the tasks in
``tasks/pretrain_stages.py`` call these functions, in-process or on a GPU worker.

Normalisation: pre-training normalises every store with band statistics pooled over all of them
(count-weighted), recorded in the checkpoint; fine-tuning and prediction reuse the checkpoint's.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from eoseg.io import storage
from eoseg.compute.chunks import current_worker_address
from eoseg.errors import BandCountError, ConfigurationError, MissingCRSError, OutputExistsError
from eoseg.train.pretrain_patches import (
    IGNORE_INDEX,
    MultiStorePatchSource,
    ZarrLabelledPatchSource,
    check_labels_on_grid,
    label_mapping_record,
    read_same_band_stores,
    scan_label_raster,
)
from eoseg.store.layout import StoreInfo, read_store_info
from eoseg.train.stage import load_checkpoint_from, save_checkpoint_to

logger = logging.getLogger("eoseg.mcl_lc")

# Pre-training settings that must not change when a run is resumed (epochs and device may).
_RESUME_MAY_CHANGE = {"epochs", "device"}


def _pretrain_params(params: dict[str, Any]):
    from eo_models.mcl_lc.augment import AugmentParams
    from eo_models.mcl_lc.model import LossSwitches, PretrainParams

    values = dict(params)
    try:
        values["losses"] = LossSwitches(**values.get("losses", {}))
        values["augment"] = AugmentParams(**values.get("augment", {}))
        return PretrainParams(**values)
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"invalid mCL-LC pre-training parameters: {error}") from error


def _log_pretrain_progress(progress) -> None:
    log = logger.info if progress.step == progress.steps_per_epoch or progress.step % 10 == 0 else logger.debug
    log("pre-training epoch %d/%d step %d/%d: loss %.4f (feature %.4f, semantic %.4f, local %.4f; MI %.3f)",
        progress.epoch, progress.epochs, progress.step, progress.steps_per_epoch, progress.loss,
        progress.feature_loss, progress.semantic_loss, progress.local_consistency_loss,
        progress.mutual_information)  # fmt: skip


def _log_finetune_progress(progress) -> None:
    log = logger.info if progress.step == progress.steps_per_epoch or progress.step % 10 == 0 else logger.debug
    log("fine-tuning epoch %d/%d step %d/%d: loss %.4f", progress.epoch, progress.epochs, progress.step,
        progress.steps_per_epoch, progress.loss)  # fmt: skip


def _check_resume(checkpoint: dict[str, Any], resume_uri: str, wanted: dict[str, Any]) -> None:
    """Refuse to continue a run with settings that would make it a different run."""
    if checkpoint.get("family") != "mcl-lc" or checkpoint.get("extra", {}).get("stage") != "pretrain":
        raise ConfigurationError(
            f"{resume_uri}: not an mCL-LC pre-training checkpoint (family {checkpoint.get('family')!r}, stage "
            f"{checkpoint.get('extra', {}).get('stage')!r}); --resume takes a checkpoint of `eoseg train mcl-lc`"
        )
    recorded = checkpoint["train_params"]
    differing = {
        key: (recorded.get(key), value) for key, value in wanted.items()
        if key not in _RESUME_MAY_CHANGE and recorded.get(key) != value
    }  # fmt: skip
    if differing:
        listed = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in sorted(differing.items()))
        raise ConfigurationError(
            f"{resume_uri}: resuming needs the first run's stores and options (only epochs and device may "
            f"change); these differ: {listed}"
        )
    done = int(checkpoint["extra"]["epoch"])
    if done >= int(wanted["epochs"]):
        raise ConfigurationError(
            f"{resume_uri}: has already finished {done} epoch(s); pass --epochs above {done} to train longer"
        )


def pretrain_mcl_lc_on_stores(
    store_uris: Sequence[str],
    model_uri: str,
    *,
    params: dict[str, Any] | None = None,
    max_patches: int | None = None,
    checkpoint_every: int | None = None,
    resume_uri: str | None = None,
    stop_after_epoch: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Self-supervised mCL-LC pre-training of DeepLabv3+ on the patches of one or more tile stores.

    Args:
        store_uris: finished image stores, all with the same band count.
        model_uri: where to write the checkpoint (local path or ``s3://``).
        params: fields of ``eo_models.mcl_lc.model.PretrainParams`` (``losses`` and ``augment`` as dicts;
            defaults: the paper's).
        max_patches: a seeded random subset of at most this many patches over all stores (CPU shortcut).
        checkpoint_every: also write the checkpoint after every this many epochs.
        resume_uri: a pre-training checkpoint of an earlier run with the same stores and options, to
            continue up to ``params["epochs"]``; its normalisation is kept. May equal ``model_uri``.
        stop_after_epoch: stop after this many epochs of the planned ``epochs`` (the learning-rate
            schedule stays that of ``epochs``); resume later to finish.
        overwrite: replace an existing checkpoint at ``model_uri``.

    Returns:
        A small summary: model URI, patches (per store), epochs done, seconds, patches/s, losses, device.
    """
    from eo_models.mcl_lc.model import plain_dict
    from eo_models.mcl_lc.train import pretrain_mcl_lc

    store_uris = [storage.normalise_uri(uri) for uri in store_uris]
    model_uri = storage.normalise_uri(model_uri)
    resume_uri = storage.normalise_uri(resume_uri) if resume_uri else None
    if storage.exists(model_uri) and not overwrite and model_uri != resume_uri:
        raise OutputExistsError(f"{model_uri}: checkpoint already exists. Pass --overwrite to replace it "
                                "(or --resume it to continue its training).")
    training = _pretrain_params(params or {})
    infos = read_same_band_stores(store_uris)
    recorded = {**plain_dict(training), "store_uris": store_uris, "max_patches": max_patches}
    checkpoint = None
    normalisation = None
    if resume_uri:
        checkpoint = load_checkpoint_from(resume_uri)
        _check_resume(checkpoint, resume_uri, recorded)
        normalisation = (checkpoint["band_mean"], checkpoint["band_std"])
    patches = MultiStorePatchSource(store_uris, training.patch_size, normalisation=normalisation,
                                    max_patches=max_patches, seed=training.seed)
    last_epoch = training.epochs if stop_after_epoch is None else min(stop_after_epoch, training.epochs)
    start_epoch = int(checkpoint["extra"]["epoch"]) if checkpoint else 0
    if last_epoch <= start_epoch:
        raise ConfigurationError(f"--stop-after-epoch {stop_after_epoch}: the run has already finished "
                                 f"{start_epoch} epoch(s); stop later, or leave it out to finish")
    logger.info("pre-training mCL-LC on %d patches of %d px from %d store(s) %s, epochs %d..%d of %d, batch %d; "
                "normalisation mean %s std %s", len(patches), training.patch_size, len(store_uris),
                patches.patches_per_store(), start_epoch + 1, last_epoch, training.epochs, training.batch_size,
                [round(v, 3) for v in patches.band_mean], [round(v, 3) for v in patches.band_std])  # fmt: skip
    started = time.perf_counter()
    epoch = start_epoch
    replace_existing = overwrite or model_uri == resume_uri
    while True:
        epoch = last_epoch if checkpoint_every is None else min(last_epoch, epoch + checkpoint_every)
        checkpoint = pretrain_mcl_lc(
            patches, in_channels=infos[0].band_count, params=training, band_mean=patches.band_mean,
            band_std=patches.band_std, on_progress=_log_pretrain_progress, resume_from=checkpoint,
            stop_after_epoch=epoch,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        checkpoint["train_params"] = dict(
            checkpoint["train_params"], store_uris=store_uris, max_patches=max_patches,
            patches_per_store=patches.patches_per_store(), normalisation="pooled over the stores",
            seconds=round(seconds, 2),
        )  # fmt: skip
        save_checkpoint_to(model_uri, checkpoint, overwrite=replace_existing)
        if epoch >= last_epoch:
            break
        replace_existing = True  # our own intermediate checkpoint
        logger.info("checkpoint after epoch %d written to %s", epoch, model_uri)
    steps = int(checkpoint["train_params"]["steps_per_epoch"])
    batch = min(training.batch_size, len(patches))
    losses = checkpoint["history"].get("loss", [])
    summary = {
        "model_uri": model_uri,
        "family": "mcl-lc",
        "stage": "pretrain",
        "stores": store_uris,
        "patches": len(patches),
        "patches_per_store": patches.patches_per_store(),
        "epochs_done": int(checkpoint["extra"]["epoch"]),
        "epochs": training.epochs,
        "seconds": round(seconds, 2),
        "patches_per_second": round((last_epoch - start_epoch) * steps * batch / max(seconds, 1e-9), 3),
        "final_loss": float(losses[-1]) if losses else None,
        "device": checkpoint["train_params"]["resolved_device"],
        "band_mean": list(patches.band_mean),
        "band_std": list(patches.band_std),
        "ran_on": current_worker_address(),
    }
    logger.info("pre-trained %d epoch(s) in %.1f s on %s (%.2f patches/s); checkpoint %s",
                summary["epochs_done"] - start_epoch, seconds, summary["device"], summary["patches_per_second"],
                model_uri)  # fmt: skip
    return summary


def prepare_label_raster(labels_uri: str, store_uri: str, info: StoreInfo, scratch: str) -> str:
    """A label raster on the store's grid: the raster itself (checked), or GeoJSON polygons burnt onto it.

    Polygons become 255 (inside) on 0 (outside), as ``eoseg evaluate`` rasterises references.
    """
    from eoseg.evaluate.reference import is_vector_reference, rasterize_reference

    if is_vector_reference(labels_uri):
        if info.crs_wkt is None:
            raise MissingCRSError(f"{store_uri}: the store has no CRS, so the polygons of {labels_uri} cannot "
                                  "be placed on its grid; pass a label raster on the store's pixel grid")
        local = storage.fetch_to_local(labels_uri, scratch)
        return rasterize_reference(local, info.geobox, os.path.join(scratch, "labels.tif"))
    check_labels_on_grid(labels_uri, info, store_uri)
    return labels_uri


def _load_pretrained(model_uri: str, info: StoreInfo, store_uri: str) -> dict[str, Any]:
    checkpoint = load_checkpoint_from(model_uri)
    if checkpoint.get("family") != "mcl-lc":
        raise ConfigurationError(f"{model_uri}: a {checkpoint.get('family')!r} checkpoint; fine-tuning needs an "
                                 "mCL-LC one from `eoseg train mcl-lc`")
    bands = int(checkpoint["model_config"]["in_channels"])
    if bands != info.band_count:
        raise BandCountError(f"{store_uri}: the scene has {info.band_count} band(s) but {model_uri} was "
                             f"pre-trained on {bands}; fine-tune on a scene of the pre-training's sensor")
    extra, planned = checkpoint["extra"], int(checkpoint["train_params"].get("epochs", 0))
    if extra.get("stage") == "pretrain" and int(extra.get("epoch", 0)) < planned:
        logger.warning("%s stopped after %s of %d pre-training epochs (resume it to finish)", model_uri,
                       extra.get("epoch"), planned)  # fmt: skip
    return checkpoint


def finetune_mcl_lc_on_store(
    model_uri: str,
    store_uri: str,
    labels_uri: str,
    tuned_uri: str,
    *,
    params: dict[str, Any] | None = None,
    num_classes: int | None = None,
    label_fraction: float = 0.02,
    ignore_values: Sequence[int] = (),
    patch_size: int = 256,
    max_patches: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Supervised fine-tuning of a pre-trained mCL-LC network on a seeded fraction of a scene's labels.

    Args:
        model_uri: a checkpoint of ``pretrain_mcl_lc_on_stores`` (or of this function, to tune again).
        store_uri: the scene's tile store; its band count must match the checkpoint's.
        labels_uri: a label raster on the store's grid (its nodata and ``ignore_values`` = unlabelled),
            or GeoJSON polygons (burnt as 255 on 0).
        tuned_uri: where to write the fine-tuned checkpoint.
        params: fields of ``eo_models.mcl_lc.model.FinetuneParams`` except ``num_classes`` and ``ignore_index``.
        num_classes: number of classes; default: the number of labelled values. The sorted values are
            remapped to 0..N-1; the mapping is recorded in the checkpoint's ``extra["label_mapping"]``.
        label_fraction: share of the labelled pixels used (seeded by ``params["seed"]``).
        ignore_values: label values that mark unlabelled pixels.
        patch_size: fine-tuning patch edge in pixels.
        max_patches: a seeded random subset of at most this many patches.
        overwrite: replace an existing checkpoint at ``tuned_uri``.

    Returns:
        A small summary: checkpoint URI, classes and mapping, pixels used, patches, seconds, loss, device.
    """
    from eo_models.mcl_lc.model import FinetuneParams
    from eo_models.mcl_lc.train import finetune_mcl_lc

    model_uri, store_uri = storage.normalise_uri(model_uri), storage.normalise_uri(store_uri)
    tuned_uri = storage.normalise_uri(tuned_uri)
    if storage.exists(tuned_uri) and not overwrite:
        raise OutputExistsError(f"{tuned_uri}: checkpoint already exists. Pass --overwrite to replace it.")
    if not 0.0 < label_fraction <= 1.0:
        raise ConfigurationError(f"label fraction must be in (0, 1], got {label_fraction}")
    info = read_store_info(store_uri)
    with tempfile.TemporaryDirectory(prefix="eoseg-labels-") as scratch:
        # Cheap checks of the inputs first, then the (large) checkpoint.
        labels_raster = prepare_label_raster(labels_uri, store_uri, info, scratch)
        labels = scan_label_raster(labels_raster, ignore_values=ignore_values)
        found = len(labels.class_values)
        if num_classes is None:
            num_classes = found
        elif num_classes < found:
            raise ConfigurationError(
                f"{labels_uri}: holds {found} labelled values {list(labels.class_values)} but --num-classes is "
                f"{num_classes}; raise it, or mark the values that are not classes with --ignore"
            )
        if num_classes < 2:
            raise ConfigurationError(f"{labels_uri}: only one class ({labels.class_values[0]}) is labelled; "
                                     "fine-tuning needs at least two (check --ignore and the raster's nodata)")
        try:
            tuning = FinetuneParams(**(params or {}), num_classes=num_classes, ignore_index=IGNORE_INDEX)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(f"invalid mCL-LC fine-tuning parameters: {error}") from error
        checkpoint = _load_pretrained(model_uri, info, store_uri)
        patches = ZarrLabelledPatchSource(
            store_uri, labels, patch_size, normalisation=(checkpoint["band_mean"], checkpoint["band_std"]),
            label_fraction=label_fraction, seed=tuning.seed, max_patches=max_patches,
        )  # fmt: skip
        sampled = patches.class_pixels_sampled()
        logger.info("label sample: %d of the scene's %d labelled pixels (%.2f%%) in %d patches of %d px; "
                    "fine-tuning on %d of those patches: %s labelled pixels per class value; classes %s -> 0..%d",
                    patches.sampled_pixels, patches.labelled_pixels,
                    100 * patches.sampled_pixels / max(patches.labelled_pixels, 1), patches.candidate_patches,
                    patch_size, len(patches), sampled, list(labels.class_values), num_classes - 1)  # fmt: skip
        started = time.perf_counter()
        tuned = finetune_mcl_lc(checkpoint, patches, params=tuning, on_progress=_log_finetune_progress)
        seconds = time.perf_counter() - started
    tuned["train_params"] = dict(tuned["train_params"], store_uri=store_uri, labels_uri=labels_uri,
                                 patch_size=patch_size, max_patches=max_patches, seconds=round(seconds, 2))
    # Fine-tuning cannot be resumed, and every predict worker loads this file: leave out the optimiser
    # state (twice the weights' size).
    dropped = ("optimizer_state", "scheduler_state")
    extra = {key: value for key, value in tuned["extra"].items() if key not in dropped}
    tuned["extra"] = dict(
        extra,
        label_mapping=label_mapping_record(labels),  # class value (str) -> class index
        class_values=list(labels.class_values),  # class index -> class value
        label_fraction=label_fraction,
        ignore_values=list(labels.unlabelled_values),
        labelled_pixels=patches.labelled_pixels,
        sampled_pixels=patches.sampled_pixels,
        pixels_used_per_class={str(value): count for value, count in sampled.items()},
        pretrained_from=model_uri,
    )  # fmt: skip
    save_checkpoint_to(tuned_uri, tuned, overwrite=overwrite)
    losses = tuned["history"].get("loss", [])
    summary = {
        "model_uri": tuned_uri,
        "family": "mcl-lc",
        "stage": "finetune",
        "num_classes": num_classes,
        "label_mapping": label_mapping_record(labels),
        "labelled_pixels": patches.labelled_pixels,
        "sampled_pixels": patches.sampled_pixels,
        "pixels_used": sum(sampled.values()),
        "patches": len(patches),
        "candidate_patches": patches.candidate_patches,
        "seconds": round(seconds, 2),
        "final_loss": float(losses[-1]) if losses else None,
        "device": tuned["train_params"]["resolved_device"],
        "ran_on": current_worker_address(),
    }
    logger.info("fine-tuned in %.1f s on %s; checkpoint %s", seconds, summary["device"], tuned_uri)
    return summary
