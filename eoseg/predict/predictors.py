"""Trained models on the workers of the predict stage: loaded once per process, keyed by checkpoint identity.

A long-lived Dask worker keeps every predictor it has loaded. The cache key is the checkpoint's URI, its
*fingerprint* and the device: a model retrained to the same URI (``--overwrite``) has a new fingerprint,
so the worker loads the new weights instead of serving the old ones. The predict stage takes the
fingerprint once (:func:`checkpoint_fingerprint`) and passes it in every chunk job, so all chunks of one
run use the same weights and no worker has to stat the checkpoint per chunk.

The two-pass scene pooling computes every tile's features twice (once for the scene context, once for
the labels). A process keeps the features of the first pass (:func:`keep_features`, up to
:data:`FEATURE_CACHE_BYTES`) and the second pass on the same process takes them (:func:`take_features`)
instead of running the convolutions again: exactly the same tensors, so the same labels.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from eo_models.predict import Predictor
from eoseg.io import storage

__all__ = [
    "FEATURE_CACHE_BYTES",
    "cached_predictor",
    "checkpoint_fingerprint",
    "forward_lock",
    "keep_features",
    "model_load_counts",
    "take_features",
]

logger = logging.getLogger("eoseg.predict.stage")

_predictors: dict[tuple[str, str, str, str], Predictor] = {}
_load_counts: dict[str, int] = {}
_predictors_lock = threading.Lock()
_scratch = tempfile.mkdtemp(prefix="eoseg-models-")

FEATURE_CACHE_BYTES = 1 << 30
"""Most bytes of first-pass features one process keeps for the second pass (a 1056 px tile of the
clusterer: 143 MB in bf16, 285 MB in fp32); tiles beyond it are recomputed in the second pass."""

forward_lock = threading.Lock()
"""Held around every forward pass of the predict stage: one at a time per process. torch already spreads
one forward over all the process's cores (``torch.get_num_threads()``); two chunk threads running
forwards at once would run 2 x that many threads on the same cores (their oneDNN kernels then wait on
each other), while reads and writes of other chunks still overlap with the forward."""

_features: dict[tuple[str, tuple[int, int]], tuple[Any, Any]] = {}
_features_lock = threading.Lock()


def checkpoint_fingerprint(model_uri: str) -> str:
    """What identifies the checkpoint's current bytes: size, mtime (ns) and inode locally, the ETag on S3.

    Checkpoints are written by an atomic replace, so a rewritten local file always has a new inode (and
    mtime); an S3 object rewritten with other bytes has a new ETag.

    Raises:
        FileNotFoundError: If there is no checkpoint at ``model_uri``.
    """
    if storage.is_s3(model_uri):
        fs = storage.s3_filesystem()
        fs.invalidate_cache(model_uri)
        info = fs.info(model_uri)
        etag = info.get("ETag") or info.get("etag") or ""
        return f"etag:{str(etag).strip(chr(34))}:{info.get('size')}"
    stat = Path(model_uri).stat()
    return f"file:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def _match_torch_threads_to_worker() -> None:
    """On a Dask worker, give torch as many CPU threads as the worker has task slots.

    torch defaults to one thread per core in every process, so N single-threaded workers on N cores would
    run N x N threads and lose much of their time to oversubscription.
    """
    try:
        from distributed import get_worker

        slots = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    import torch

    torch.set_num_threads(max(1, slots))


def cached_predictor(
    model_uri: str, device: str | None = None, *, fingerprint: str | None = None, precision: str = "fp32"
) -> Predictor:
    """The predictor for ``model_uri`` in this process, loaded on first use of this checkpoint version.

    Args:
        model_uri: Local path or ``s3://`` URI of the checkpoint.
        device: ``None``/``"auto"`` (CUDA when present) or a torch device string.
        fingerprint: :func:`checkpoint_fingerprint` of the checkpoint as the stage saw it; default: taken
            here. A different fingerprint than a cached predictor's loads the checkpoint again.
        precision: ``"fp32"``, ``"bf16"`` or ``"auto"`` (:mod:`eo_models.precision`).
    """
    fingerprint = checkpoint_fingerprint(model_uri) if fingerprint is None else fingerprint
    key = (model_uri, fingerprint, device or "auto", precision)
    with _predictors_lock:
        if key not in _predictors:
            from eo_models.predict import load_predictor

            _match_torch_threads_to_worker()
            # Older versions of this checkpoint will not be asked for again: free their memory.
            for stale in [k for k in _predictors if k[0] == model_uri and k[1] != fingerprint]:
                del _predictors[stale]
            with tempfile.TemporaryDirectory(dir=_scratch) as scratch:
                local = storage.fetch_to_local(model_uri, scratch)
                _predictors[key] = load_predictor(local, device=device, precision=precision)
            _load_counts[model_uri] = _load_counts.get(model_uri, 0) + 1
            logger.info("loaded %s (%s) in process %d", model_uri, fingerprint, os.getpid())
        return _predictors[key]


def model_load_counts() -> dict[str, int]:
    """How often this process loaded each model (tests check: once per worker, not once per chunk)."""
    return dict(_load_counts)


def _nbytes(tensor: Any) -> int:
    return int(tensor.element_size() * tensor.nelement())


def keep_features(run_id: str, chunk_index: tuple[int, int], features: Any, valid: Any) -> bool:
    """Keep one tile's first-pass ``features`` (a torch tensor) and ``valid`` mask for the second pass.

    Entries of any other run are dropped first (a process serves one predict run at a time; a failed
    run's entries do not outlive the next run). Returns False (nothing kept) when the features would
    take the kept bytes over :data:`FEATURE_CACHE_BYTES`.
    """
    with _features_lock:
        for stale in [key for key in _features if key[0] != run_id]:
            del _features[stale]
        held = sum(_nbytes(kept[0]) for kept in _features.values())
        if held + _nbytes(features) > FEATURE_CACHE_BYTES:
            return False
        _features[(run_id, chunk_index)] = (features, valid)
        return True


def take_features(run_id: str, chunk_index: tuple[int, int]) -> tuple[Any, Any] | None:
    """The ``(features, valid)`` kept for this run's chunk (removed from the cache), or None."""
    with _features_lock:
        return _features.pop((run_id, chunk_index), None)
