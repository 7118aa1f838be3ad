"""The contract of a chunked stage (tile, predict, mosaic): plan the chunks, compute each, finalise.

A stage builds a :class:`ChunkedStage`: one small picklable job per chunk (an index and a window, never
pixels), which of them are already done (from the output's done flags, :mod:`eoseg.store.lifecycle`),
the module-level function that computes one chunk on a Dask worker, optionally one that recalls the
result of a chunk done by an earlier run (e.g. the tile stage's band moments, re-read from the store
instead of the scene), and the step that finalises the output from the chunks' results.
:func:`run_stage` executes it the same way for every stage: only the missing chunks are computed, and it
logs how many, e.g. ``tile: 12 of 30 chunks to compute (18 done)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from eoseg.compute.chunks import map_chunks

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")
OutputT = TypeVar("OutputT")

logger = logging.getLogger("eoseg.compute.stage")


@dataclass(frozen=True)
class ChunkedStage(Generic[JobT, ResultT, OutputT]):
    """One chunked stage, planned.

    Attributes:
        label: the stage's name in progress bars and logs (``tile``, ``predict``, ``mosaic``).
        jobs: one small, picklable job per chunk, in the order results are handed to ``finalise``.
        done: per job, True when an earlier run already wrote that chunk.
        compute: a module-level function ``job -> result`` that writes one chunk (runs on a worker).
        finalise: ``results -> output``, run in the calling process once every chunk is written; a
            result is None for a done chunk unless ``recall`` gives it.
        recall: optional module-level function ``job -> result`` for done chunks (run on workers).
        resources: Dask worker resources each chunk needs, e.g. ``{"GPU": 1}``.
        local: run the chunks on threads of this process, not on the cluster (for pieces that must land
            on this machine's disk, such as the mosaic's).
    """

    label: str
    jobs: Sequence[JobT]
    done: Sequence[bool]
    compute: Callable[[JobT], ResultT]
    finalise: Callable[[list[ResultT | None]], OutputT]
    recall: Callable[[JobT], ResultT] | None = None
    resources: Mapping[str, float] | None = None
    local: bool = False

    def __post_init__(self) -> None:
        if len(self.done) != len(self.jobs):
            raise ValueError(f"{self.label}: {len(self.jobs)} jobs but {len(self.done)} done flags")


def run_stage(
    stage: ChunkedStage[JobT, ResultT, OutputT],
    *,
    client: Any = None,
    show_progress: bool | None = None,
) -> OutputT:
    """Compute the stage's missing chunks on Dask, recall the done ones if asked, then finalise.

    Args:
        stage: the planned stage.
        client: a ``distributed.Client`` (default: the active one, else threads of this process).
        show_progress: terminal progress bar on/off (default: when stderr is a terminal).

    Returns:
        What ``stage.finalise`` returns.

    Raises:
        The first exception of a chunk function (outstanding chunks are cancelled) or of ``finalise``.
    """
    missing = [i for i, done in enumerate(stage.done) if not done]
    finished = [i for i, done in enumerate(stage.done) if done]
    logger.info(
        "%s: %d of %d chunks to compute (%d done)", stage.label, len(missing), len(stage.jobs), len(finished)
    )
    resources = dict(stage.resources) if stage.resources else None
    results: list[ResultT | None] = [None] * len(stage.jobs)

    def run_chunks(function: Callable[[JobT], ResultT], indices: list[int], label: str) -> None:
        """Run ``function`` on the jobs at ``indices`` and keep each result at its job's index."""
        outputs = map_chunks(
            function,
            [stage.jobs[i] for i in indices],
            label=label,
            client=client,
            resources=resources,
            show_bar=show_progress,
            local=stage.local,
        )
        for index, result in zip(indices, outputs, strict=True):
            results[index] = result

    run_chunks(stage.compute, missing, stage.label)
    if stage.recall is not None and finished:
        run_chunks(stage.recall, finished, f"{stage.label} (re-reading finished chunks)")
    return stage.finalise(results)
