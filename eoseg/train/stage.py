"""Train stage: any model family trained on the patches of one or more tile stores, saved as a checkpoint.

The family (``eo_models.family.get_family``) brings its training loop and hyper-parameters; this module
feeds it patches from Zarr (:class:`~eoseg.train.patches.MultiStorePatchSource`, normalised with band
statistics pooled over the stores), checks inputs before any work starts, logs progress to the
``eoseg`` logger, resumes interrupted runs of families that support it, and writes the checkpoint
atomically (locally or to S3). No Prefect here: ``tasks/model_stages.py`` calls it, in-process or on a
GPU worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from eoseg.compute.chunks import current_worker_address
from eoseg.errors import ConfigurationError
from eoseg.io import storage
from eoseg.train.checkpoints import check_model_output, load_checkpoint_from, save_checkpoint_to
from eoseg.train.patches import MultiStorePatchSource
from eoseg.train.stores import read_same_band_stores

__all__ = ["family_params", "log_progress", "train_on_stores"]

logger = logging.getLogger("eoseg.train.stage")

# Settings that may change when a run is resumed; any other difference makes it a different run.
_RESUME_MAY_CHANGE = {"epochs", "device", "precision"}


def family_params(family: Any, params: dict[str, Any] | None, *, kind: str = "training") -> Any:
    """The family's params dataclass from plain values (nested ones as dicts).

    Raises:
        ConfigurationError: Naming the invalid value.
    """
    from eo_models.params import params_from_dict

    cls = family.training_params if kind == "training" else family.finetune_params
    try:
        return params_from_dict(cls, params or {})
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"invalid {family.name} {kind} parameters: {error}") from error


def log_progress(progress: Any) -> None:
    """Log a training step: every 10th and the last of each epoch at INFO, the others at DEBUG."""
    last = progress.step == progress.steps_per_epoch
    log = logger.info if last or progress.step % 10 == 0 or progress.steps_per_epoch <= 10 else logger.debug
    values = ", ".join(
        f"{name} {value:.4f}" for name, value in progress.metrics.items() if name != "iteration"
    )
    log(
        "epoch %d/%d step %d/%d: %s",
        progress.epoch,
        progress.epochs,
        progress.step,
        progress.steps_per_epoch,
        values,
    )


def _check_resume(
    checkpoint: dict[str, Any],
    resume_uri: str,
    family: str,
    wanted: dict[str, Any],
    absent: Mapping[str, Any] | None = None,
) -> int:
    """Refuse to continue a run with settings that would make it a different run; returns epochs done.

    ``absent``: the value of each option that a checkpoint written before the option existed lacks
    (its default, which kept the earlier behaviour, e.g. ``mine_marginals`` and ``mine_estimator``).
    """
    extra = checkpoint.get("extra", {})
    # A resumable checkpoint carries its optimiser state and finished epochs (fine-tuned ones drop them).
    if checkpoint.get("family") != family or "epoch" not in extra or "optimizer_state" not in extra:
        raise ConfigurationError(
            f"{resume_uri}: not a resumable {family} training checkpoint (family "
            f"{checkpoint.get('family')!r}, "
            f"stage {checkpoint.get('extra', {}).get('stage')!r}); --resume takes a checkpoint of "
            "`eoseg train`"
        )
    recorded = {**(absent or {}), **checkpoint["train_params"]}
    differing = {
        key: (recorded.get(key), value)
        for key, value in wanted.items()
        if key not in _RESUME_MAY_CHANGE and recorded.get(key) != value
    }
    if differing:
        listed = "; ".join(
            f"{key}: {old!r} then, {new!r} now" for key, (old, new) in sorted(differing.items())
        )
        raise ConfigurationError(
            f"{resume_uri}: resuming needs the first run's stores and options (only epochs, device and "
            f"precision may change); these differ: {listed}"
        )
    done = int(checkpoint["extra"]["epoch"])
    if done >= int(wanted["epochs"]):
        raise ConfigurationError(
            f"{resume_uri}: has already finished {done} epoch(s); pass --epochs above {done} to train longer"
        )
    return done


def train_on_stores(
    family_name: str,
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
    """Train a ``family_name`` model on the patches of one or more tile stores; write its checkpoint.

    Args:
        family_name: a registered model family (``eo_models.family.family_names()``).
        store_uris: finished image stores, all with the same band count.
        model_uri: where to write the checkpoint (local path or ``s3://``).
        params: fields of the family's ``training_params`` dataclass (nested ones as dicts); defaults:
            the family's (the papers').
        max_patches: a seeded random subset of at most this many patches over all stores (CPU shortcut).
        checkpoint_every: also write the checkpoint after every this many epochs (resumable families).
        resume_uri: a checkpoint of an earlier run with the same stores and options, to continue up to
            ``params["epochs"]``; its normalisation is kept. May equal ``model_uri``.
        stop_after_epoch: stop after this many of the planned epochs (the schedule stays that of all
            ``epochs``); resume later to finish.
        overwrite: replace an existing checkpoint at ``model_uri``.

    Returns:
        A small summary: model URI, family, stores, patches (per store), epochs done, seconds, patches/s
        (patch-updates), final loss, device, the params, and the worker it ran on.

    Raises:
        OutputExistsError: If the checkpoint exists and neither ``overwrite`` nor resuming it.
        ConfigurationError: For invalid params, or resume/stop options the family does not support.
        BandCountError, SceneNotFoundError: For unusable stores.
    """
    from eo_models.family import get_family
    from eo_models.params import field_defaults, plain_dict

    try:
        family = get_family(family_name)
    except KeyError as error:
        raise ConfigurationError(error.args[0]) from error
    store_uris = [storage.normalise_uri(uri) for uri in store_uris]
    model_uri = storage.normalise_uri(model_uri)
    resume_uri = storage.normalise_uri(resume_uri) if resume_uri else None
    if (resume_uri or stop_after_epoch or checkpoint_every) and not family.supports_resume:
        raise ConfigurationError(
            f"{family.name} training cannot be resumed or stopped early; train it in one run"
        )
    check_model_output(
        model_uri, overwrite=overwrite, resume_uri=resume_uri, resumable=family.supports_resume
    )
    training = family_params(family, params)
    infos = read_same_band_stores(store_uris)
    recorded = {**plain_dict(training), "store_uris": store_uris, "max_patches": max_patches}
    checkpoint = None
    normalisation = None
    start_epoch = 0
    if resume_uri:
        checkpoint = load_checkpoint_from(resume_uri)
        absent = field_defaults(family.training_params)
        start_epoch = _check_resume(checkpoint, resume_uri, family.name, recorded, absent)
        normalisation = (checkpoint["band_mean"], checkpoint["band_std"])
    patches = MultiStorePatchSource(
        store_uris,
        training.patch_size,
        normalisation=normalisation,
        max_patches=max_patches,
        seed=training.seed,
    )
    epochs = int(training.epochs)
    last_epoch = epochs if stop_after_epoch is None else min(stop_after_epoch, epochs)
    if last_epoch <= start_epoch:
        raise ConfigurationError(
            f"--stop-after-epoch {stop_after_epoch}: the run has already finished "
            f"{start_epoch} epoch(s); stop later, or leave it out to finish"
        )
    logger.info(
        "training %s on %d patches of %d px from %d store(s) %s, epochs %d..%d of %d; normalisation "
        "mean %s std %s",
        family.name,
        len(patches),
        training.patch_size,
        len(store_uris),
        patches.patches_per_store(),
        start_epoch + 1,
        last_epoch,
        epochs,
        [round(v, 3) for v in patches.band_mean],
        [round(v, 3) for v in patches.band_std],
    )
    samples = 0

    def on_progress(progress: Any) -> None:
        nonlocal samples
        samples += progress.samples
        log_progress(progress)

    started = time.perf_counter()
    epoch = start_epoch
    replace_existing = overwrite or model_uri == resume_uri
    resumable: dict[str, Any] = {"resume_from": None, "stop_after_epoch": None}
    while True:
        epoch = last_epoch if checkpoint_every is None else min(last_epoch, epoch + checkpoint_every)
        if family.supports_resume:
            resumable = {"resume_from": checkpoint, "stop_after_epoch": epoch}
        checkpoint = family.train(
            patches,
            in_channels=infos[0].band_count,
            params=training,
            band_mean=patches.band_mean,
            band_std=patches.band_std,
            on_progress=on_progress,
            **resumable,
        )
        seconds = time.perf_counter() - started
        checkpoint["train_params"] = dict(
            checkpoint["train_params"],
            store_uris=store_uris,
            max_patches=max_patches,
            patches_per_store=patches.patches_per_store(),
            seconds=round(seconds, 2),
            normalisation="pooled over the stores" if len(store_uris) > 1 else "the store's band statistics",
        )
        if len(store_uris) == 1:
            checkpoint["train_params"]["store_uri"] = store_uris[0]
        save_checkpoint_to(model_uri, checkpoint, overwrite=replace_existing)
        if epoch >= last_epoch:
            break
        replace_existing = True  # our own intermediate checkpoint
        logger.info("checkpoint after epoch %d written to %s", epoch, model_uri)
    losses = checkpoint["history"].get("loss", [])
    summary = {
        "model_uri": model_uri,
        "family": family.name,
        "stage": checkpoint["extra"].get("stage", "train"),
        "stores": store_uris,
        "patches": len(patches),
        "patches_per_store": patches.patches_per_store(),
        "epochs_done": int(checkpoint["extra"].get("epoch", last_epoch)),
        "epochs": epochs,
        "seconds": round(seconds, 2),
        "patches_per_second": round(samples / max(seconds, 1e-9), 3),
        "final_loss": float(losses[-1]) if losses else None,
        "device": checkpoint["train_params"]["resolved_device"],
        "band_mean": list(patches.band_mean),
        "band_std": list(patches.band_std),
        "params": plain_dict(training),
        "ran_on": current_worker_address(),
    }
    logger.info(
        "trained %s for %d epoch(s) in %.1f s on %s (%.2f patches/s); checkpoint %s",
        family.name,
        last_epoch - start_epoch,
        seconds,
        summary["device"],
        summary["patches_per_second"],
        model_uri,
    )
    return summary
