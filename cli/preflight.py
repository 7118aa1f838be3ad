"""Checks a command makes before its heavy imports (torch, Prefect, ``dask.distributed``) and any cluster.

A bad invocation (a missing input, an output that exists without ``--overwrite``) then fails in a
fraction of a second with the one ``error: FILE: what is wrong; what to do`` line and exit code 2,
instead of after seconds of imports or a Prefect server start, and nothing is written. The checks are
those of the stages themselves, asked of the modules that own them (:mod:`eoseg.store.lifecycle` for
outputs, :func:`eoseg.store.layout.read_store_info` for stores, :mod:`eoseg.train.checkpoints` for
checkpoints); the stages and flows make them again for runs that do not come from the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from cli.runs import fail
from eoseg.errors import EosegError

if TYPE_CHECKING:
    from eoseg.train.options import TrainingOptions

__all__ = ["preflight_checkpoint", "preflight_model_output", "preflight_outputs", "preflight_run"]


def preflight_outputs(
    *, stores: Sequence[str] = (), files: Sequence[str] = (), overwrite: bool, inputs: Sequence[str] = ()
) -> None:
    """Refuse outputs that exist, unless ``overwrite``: Zarr ``stores`` (an unfinished one passes: it is
    resumed) and ``files`` (COGs, checkpoints). Refused even with ``overwrite``: a store target that is not
    a Zarr store, a file target that is a directory, an output that is one of ``inputs``, a folder that
    cannot be created. One ``error:`` line, exit 2, nothing touched."""
    from eoseg.store.lifecycle import check_file_output, check_store_output

    try:
        for store in stores:
            check_store_output(store, overwrite=overwrite, inputs=inputs)
        for file in files:
            check_file_output(file, overwrite=overwrite, inputs=inputs)
    except EosegError as error:
        fail(error)


def preflight_run(
    map_uri: str,
    *,
    model: str,
    weights: str | None,
    training: TrainingOptions,
    legend: str | None,
    overwrite: bool,
    inputs: Sequence[str] = (),
) -> None:
    """``eoseg run``: the model it can get (:func:`eoseg.config.check_run_model`), ``weights`` and
    ``legend`` readable, and the outputs it would refuse later: the map, the tile and label stores and,
    when the run trains, its checkpoint (:class:`eoseg.outputs.RunOutputs`), none of them one of
    ``inputs`` (the scene files), ``weights`` or ``legend``."""
    from eoseg.config import check_run_model
    from eoseg.mosaic.legend import read_legend
    from eoseg.outputs import RunOutputs

    try:
        check_run_model(model, weights_uri=weights, training=training)
        if legend:
            read_legend(legend)
    except EosegError as error:
        fail(error)
    if weights is not None:
        preflight_checkpoint(weights)
    outputs = RunOutputs.for_map(map_uri)
    files = [outputs.cog] if weights else [outputs.cog, outputs.model]
    inputs = [*inputs, *([weights] if weights else []), *([legend] if legend else [])]
    preflight_outputs(stores=[outputs.tiles, outputs.labels], files=files, overwrite=overwrite, inputs=inputs)


def preflight_checkpoint(uri: str) -> None:
    """Refuse a missing checkpoint, or a file that is not one (not a readable zip archive: truncated, a
    GeoTIFF...), without importing torch (one ``error:`` line, exit 2)."""
    from eoseg.train.checkpoints import check_checkpoint_file

    try:
        check_checkpoint_file(uri)
    except EosegError as error:
        fail(error)


def preflight_model_output(out: str, *, overwrite: bool, resume: str | None, resumable: bool) -> None:
    """``eoseg train``: refuse an existing checkpoint ``out`` unless ``overwrite`` or resuming it."""
    from eoseg.io import storage
    from eoseg.train.checkpoints import check_model_output

    resume_uri = storage.normalise_uri(resume) if resume else None
    try:
        check_model_output(
            storage.normalise_uri(out), overwrite=overwrite, resume_uri=resume_uri, resumable=resumable
        )
    except EosegError as error:
        fail(error)
