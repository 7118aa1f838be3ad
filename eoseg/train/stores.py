"""Training the clusterer on a set of scenes: patches from several tile stores, one normalisation.

The paper trains on one scene; a model meant to segment *other* scenes of the same sensor later (the
``train-model`` deployment) generalises better when it has seen several. :class:`MultiStorePatchSource`
concatenates the patches of several stores and normalises them all with the pooled statistics of their
valid pixels (count-weighted mean and variance), which are the statistics stored in the checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from eoseg.io import storage
from eoseg.errors import BandCountError, ConfigurationError, OutputExistsError
from eoseg.train.patches import ZarrPatchSource
from eoseg.train.stage import save_checkpoint_to, train_clusterer_on_store

logger = logging.getLogger("eoseg.train.stage")


def reusable_tile_store(store_uri: str, scene_uri: str) -> bool:
    """Whether ``store_uri`` is a finished image store tiled from ``scene_uri`` (and newer than it)."""
    from eoseg.errors import IncompleteStoreError
    from eoseg.store.layout import read_store_info

    if not storage.exists(store_uri):
        return False
    try:
        info = read_store_info(store_uri, require_complete=False)
    except IncompleteStoreError:
        return False
    return bool(
        info.complete
        and info.kind == "image"
        and storage.normalise_uri(info.source_uri) == storage.normalise_uri(scene_uri)
    )


def pooled_band_statistics(sources: Sequence[ZarrPatchSource]) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over the valid pixels of all stores together."""
    bands = sources[0].band_count
    mean, std = [], []
    for band in range(bands):
        counts = [float(s.info.band_stats["count"][band]) for s in sources]
        means = [float(s.info.band_stats["mean"][band]) for s in sources]
        stds = [float(s.info.band_stats["std"][band]) for s in sources]
        total = sum(counts)
        pooled_mean = sum(n * m for n, m in zip(counts, means, strict=True)) / total
        pooled_var = sum(
            n * (s * s + (m - pooled_mean) ** 2) for n, m, s in zip(counts, means, stds, strict=True)
        )
        mean.append(pooled_mean)
        std.append(max(math.sqrt(pooled_var / total), 1e-6))
    return mean, std


class MultiStorePatchSource:
    """The patches of several image stores, as one ``PatchSource`` (docs/interfaces.md).

    Args:
        store_uris: finished image stores with the same band count.
        patch_size: patch edge in pixels.
        max_patches: keep a seeded random subset of at most this many patches over all stores.
        seed: seed of that subset.
    """

    def __init__(
        self, store_uris: Sequence[str], patch_size: int, *, max_patches: int | None = None, seed: int = 0
    ) -> None:
        if not store_uris:
            raise ConfigurationError("no tile store to train on")
        self.sources = [ZarrPatchSource(uri, patch_size) for uri in store_uris]
        counts = {s.store_uri: s.band_count for s in self.sources}
        if len(set(counts.values())) != 1:
            raise BandCountError(
                f"the scenes have different band counts {counts}; train one model per sensor"
            )
        self.band_mean, self.band_std = pooled_band_statistics(self.sources)
        for source in self.sources:  # every store is normalised with the pooled statistics
            source.band_mean, source.band_std = self.band_mean, self.band_std
        self.index = [(i, j) for i, source in enumerate(self.sources) for j in range(len(source))]
        if max_patches is not None and len(self.index) > max_patches:
            keep = np.sort(np.random.default_rng(seed).choice(len(self.index), max_patches, replace=False))
            self.index = [self.index[k] for k in keep]
        self.patch_size = patch_size

    @property
    def band_count(self) -> int:
        return self.sources[0].band_count

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        out = np.empty((len(indices), self.band_count, self.patch_size, self.patch_size), np.float32)
        for slot, index in enumerate(indices):
            store, patch = self.index[int(index)]
            out[slot] = self.sources[store].read([patch])[0]
        return out


def train_clusterer_on_stores(
    store_uris: Sequence[str],
    model_uri: str,
    *,
    params: dict[str, Any] | None = None,
    max_patches: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the clusterer on the patches of one or several tile stores and write the checkpoint.

    One store is exactly :func:`eoseg.train.stage.train_clusterer_on_store`. Returns the same summary, plus
    ``stores``.
    """
    from eo_models.clusterer.train import ClustererTrainingParams, train_clusterer
    from eoseg.train.stage import _log_clusterer_progress

    if len(store_uris) == 1:
        summary = train_clusterer_on_store(
            store_uris[0], model_uri, params=params, max_patches=max_patches, overwrite=overwrite
        )
        return dict(summary, stores=list(store_uris))
    model_uri = storage.normalise_uri(model_uri)
    if storage.exists(model_uri) and not overwrite:
        raise OutputExistsError(f"{model_uri}: checkpoint already exists. Pass overwrite to replace it.")
    try:
        training = ClustererTrainingParams(**(params or {}))
    except (TypeError, ValueError) as error:
        raise ConfigurationError(f"invalid clusterer training parameters: {error}") from error
    patches = MultiStorePatchSource(
        store_uris, training.patch_size, max_patches=max_patches, seed=training.seed
    )
    logger.info(
        "training the clusterer on %d patches of %d px from %d stores (K=%d, I=%d, J=%d, B=%d)",
        len(patches),
        training.patch_size,
        len(store_uris),
        training.num_classes,
        training.epochs,
        training.iterations,
        training.batch_size,
    )
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
    checkpoint["train_params"] = dict(
        checkpoint["train_params"],
        store_uris=list(store_uris),
        max_patches=max_patches,
        seconds=round(seconds, 2),
    )
    save_checkpoint_to(model_uri, checkpoint, overwrite=overwrite)
    losses = checkpoint.get("history", {}).get("loss", [])
    summary = {
        "model_uri": model_uri,
        "family": checkpoint["family"],
        "stores": list(store_uris),
        "patches": len(patches),
        "seconds": round(seconds, 2),
        "final_loss": float(losses[-1]) if losses else None,
        "device": checkpoint["train_params"].get("resolved_device", checkpoint["train_params"].get("device")),
        "params": asdict(training),
    }
    logger.info("trained in %.1f s on %s; checkpoint %s", seconds, summary["device"], model_uri)
    return summary
