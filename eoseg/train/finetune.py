"""Fine-tune stage: a pre-trained network of a family that supports it, tuned on a scene's labels.

Supervised fine-tuning on a seeded fraction of the labelled pixels of one scene (:mod:`eoseg.train.labels`),
normalised with the pre-trained checkpoint's band statistics; the family brings the loop
(``ModelFamily.finetune``). The checkpoint is written atomically, without the optimiser state (fine-tuning
is not resumed, and every predict worker loads this file).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from eoseg.compute.chunks import current_worker_address
from eoseg.errors import BandCountError, ConfigurationError
from eoseg.io import storage
from eoseg.store.layout import StoreInfo, read_store_info
from eoseg.train.checkpoints import check_model_output, load_checkpoint_from, save_checkpoint_to
from eoseg.train.labels import (
    IGNORE_INDEX,
    ZarrLabelledPatchSource,
    label_mapping_record,
    prepare_label_raster,
    scan_label_raster,
)
from eoseg.train.stage import family_params, log_progress

__all__ = ["finetune_on_store"]

logger = logging.getLogger("eoseg.train.stage")


def _load_pretrained(model_uri: str, info: StoreInfo, store_uri: str) -> tuple[Any, dict[str, Any]]:
    from eo_models.family import family_names, get_family

    checkpoint = load_checkpoint_from(model_uri)
    family = get_family(checkpoint["family"])
    if family.finetune is None:
        tunable = [name for name in family_names() if get_family(name).finetune is not None]
        raise ConfigurationError(
            f"{model_uri}: a {family.name!r} checkpoint, which cannot be fine-tuned; "
            f"fine-tuning needs a pre-trained one of {tunable} (from `eoseg train`)"
        )
    bands = int(checkpoint["model_config"]["in_channels"])
    if bands != info.band_count:
        raise BandCountError(
            f"{store_uri}: the scene has {info.band_count} band(s) but {model_uri} was "
            f"pre-trained on {bands}; fine-tune on a scene of the pre-training's sensor"
        )
    extra, planned = checkpoint["extra"], int(checkpoint["train_params"].get("epochs", 0))
    if extra.get("stage") == "pretrain" and int(extra.get("epoch", 0)) < planned:
        logger.warning(
            "%s stopped after %s of %d pre-training epochs (resume it to finish)",
            model_uri,
            extra.get("epoch"),
            planned,
        )
    return family, checkpoint


def finetune_on_store(
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
    """Supervised fine-tuning of a pre-trained network on a seeded fraction of a scene's labels.

    The checkpoint's family must provide ``finetune`` (``eo_models.family.ModelFamily``).

    Args:
        model_uri: a training checkpoint of :func:`eoseg.train.stage.train_on_stores` (or of this
            function, to tune again).
        store_uri: the scene's tile store; its band count must match the checkpoint's.
        labels_uri: a label raster on the store's grid (its nodata and ``ignore_values`` = unlabelled),
            or GeoJSON polygons (burnt as 255 on 0).
        tuned_uri: where to write the fine-tuned checkpoint.
        params: fields of the family's ``finetune_params`` except ``num_classes`` and ``ignore_index``.
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
    model_uri, store_uri = storage.normalise_uri(model_uri), storage.normalise_uri(store_uri)
    tuned_uri = storage.normalise_uri(tuned_uri)
    check_model_output(tuned_uri, overwrite=overwrite)
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
                f"{labels_uri}: holds {found} labelled values {list(labels.class_values)} but "
                "--num-classes is "
                f"{num_classes}; raise it, or mark the values that are not classes with --ignore"
            )
        if num_classes < 2:
            raise ConfigurationError(
                f"{labels_uri}: only one class ({labels.class_values[0]}) is labelled; "
                "fine-tuning needs at least two (check --ignore and the raster's nodata)"
            )
        family, checkpoint = _load_pretrained(model_uri, info, store_uri)
        tuning = family_params(
            family,
            {**(params or {}), "num_classes": num_classes, "ignore_index": IGNORE_INDEX},
            kind="fine-tuning",
        )
        patches = ZarrLabelledPatchSource(
            store_uri,
            labels,
            patch_size,
            normalisation=(checkpoint["band_mean"], checkpoint["band_std"]),
            label_fraction=label_fraction,
            seed=tuning.seed,
            max_patches=max_patches,
        )
        sampled = patches.class_pixels_sampled()
        logger.info(
            "label sample: %d of the scene's %d labelled pixels (%.2f%%) in %d patches of %d px; "
            "fine-tuning on %d of those patches: %s labelled pixels per class value; classes %s -> 0..%d",
            patches.sampled_pixels,
            patches.labelled_pixels,
            100 * patches.sampled_pixels / max(patches.labelled_pixels, 1),
            patches.candidate_patches,
            patch_size,
            len(patches),
            sampled,
            list(labels.class_values),
            num_classes - 1,
        )
        started = time.perf_counter()
        tuned = family.finetune(checkpoint, patches, params=tuning, on_progress=log_progress)
        seconds = time.perf_counter() - started
    tuned["train_params"] = dict(
        tuned["train_params"],
        store_uri=store_uri,
        labels_uri=labels_uri,
        patch_size=patch_size,
        max_patches=max_patches,
        seconds=round(seconds, 2),
    )
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
    )
    save_checkpoint_to(tuned_uri, tuned, overwrite=overwrite)
    losses = tuned["history"].get("loss", [])
    summary = {
        "model_uri": tuned_uri,
        "family": family.name,
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
