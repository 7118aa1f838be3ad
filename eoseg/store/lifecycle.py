"""The life of a stage's output: create or resume, flag chunks done, complete, publish, or discard.

This module is the only place that decides whether an output exists, may be replaced, or is resumed,
for local paths and ``s3://`` alike; stages, tasks, flows and the CLI ask it and never check themselves.

Zarr stores (:class:`StoreOutput`, written by ``tile`` and ``predict``):

- locally a store is written under the hidden sibling ``.NAME.partial`` and renamed to ``NAME`` when
  complete; on S3 (no rename) it is written in place and is unfinished until its ``complete`` flag;
- each chunk's data is written first, then its ``chunk_done`` flag; ``complete`` is set last;
- an unfinished store made from the same input with the same grid is resumed: only chunks without a flag
  are computed; one made from anything else is started over;
- a finished output is refused unless ``overwrite``; something that is not an eoseg store is refused
  unless ``overwrite``;
- ``overwrite`` replaces only an output of the same kind: a store target is replaced only when it is a Zarr
  store (``zarr.json`` at its root), a file target never when it is a directory; an output that is also
  one of the command's inputs, or whose folder cannot be created, is refused whatever ``overwrite`` says.

Files assembled from pieces (:class:`FileOutput`, the mosaic's COG) keep their finished pieces in a
staging folder beside the target (``.NAME.partial/``; for an S3 target the S3 prefix of that name, so that
Dask workers on other machines can write and read them, and a re-run from anywhere resumes), each piece
published atomically, so a piece that exists is done; ``plan.json`` there says what the pieces are made
of (input, band, grid, piece format), and pieces of another plan are never reused. The file is assembled
in the staging folder too and published by :func:`finish_file_output` (a rename locally, a server-side
copy on S3: :mod:`eoseg.io.publish`).

Bad input found while writing (an :class:`~eoseg.errors.EosegError`) discards the staging output; any
other failure (a lost worker, a storage hiccup, an interrupt) keeps it so that a re-run, or Prefect's
retry, resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from eoseg.errors import EosegError, IncompleteStoreError, OutputExistsError, OutputLocationError
from eoseg.io import publish, storage
from eoseg.store.layout import (
    StoreInfo,
    create_store,
    open_data_array,
    read_store_info,
    update_store_info,
    write_chunk,
)

logger = logging.getLogger("eoseg.store.lifecycle")

PLAN_FILE = "plan.json"
# Attributes that differ between two writes of the same output and do not decide whether one resumes.
_VOLATILE_ATTRIBUTES = frozenset({"created", "complete", "band_stats", "layout_version"})


def _refusal(target: str, what: str = "output already exists") -> OutputExistsError:
    return OutputExistsError(f"{target}: {what}; pass --overwrite to replace it")


def _check_location(target: str, inputs: Sequence[str]) -> str:
    """The normalised ``target``, refused when it is one of ``inputs`` or its local folder cannot be made.

    Nothing is left behind: a missing folder is probed by creating and removing its first missing level.

    Raises:
        OutputExistsError: ``target`` is (after normalisation) one of ``inputs``.
        OutputLocationError: the folder of a local ``target`` is not a writable directory and cannot be made.
    """
    target = storage.normalise_uri(target)
    if target in {storage.normalise_uri(uri) for uri in inputs}:
        raise OutputExistsError(f"{target}: is also an input of this command; choose another --out")
    if storage.is_s3(target):
        return target
    folder, missing = os.path.dirname(target), ""
    while not os.path.lexists(folder):
        folder, missing = os.path.dirname(folder), folder
    try:
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(folder)
        if missing:
            os.mkdir(missing)
            os.rmdir(missing)
    except OSError as error:
        why = error.strerror or "not a writable directory"
        raise OutputLocationError(
            f"{target}: cannot create the folder {os.path.dirname(target)} ({why}); "
            "check the path and permissions"
        ) from error
    return target


def is_zarr_store(uri: str) -> bool:
    """Whether ``uri`` (local path or ``s3://``) is a Zarr v3 store: a ``zarr.json`` at its root."""
    return storage.exists(storage.join(uri, "zarr.json"))


@dataclass(frozen=True)
class StoreOutput:
    """A Zarr store being written: where it goes, where it is written meanwhile, and what it holds.

    Attributes:
        target: the store's final local path or ``s3://`` URI.
        staging: where chunks are written: ``.NAME.partial`` beside a local target, the target on S3.
        info: the store's attributes (``complete`` False until :func:`finish_store_output`).
        resuming: True when an interrupted write was found and is continued.
    """

    target: str
    staging: str
    info: StoreInfo
    resuming: bool

    def chunks_done(self) -> np.ndarray:
        """Boolean ``(chunk_rows, chunk_cols)``: the chunks already written (none for a fresh store)."""
        if not self.resuming:
            return np.zeros(self.info.grid.shape_in_chunks, dtype=bool)
        return chunks_done(self.staging)


def _comparable(info: StoreInfo) -> dict[str, Any]:
    """The attributes that must match for an unfinished store to be resumed, JSON-normalised."""
    attrs = json.loads(json.dumps(info.to_attrs(), default=list))
    return {key: value for key, value in attrs.items() if key not in _VOLATILE_ATTRIBUTES}


def _existing_store(uri: str) -> StoreInfo | None:
    """The attributes of the store at ``uri``, or None when what is there is not a readable eoseg store."""
    try:
        return read_store_info(uri, require_complete=False)
    except IncompleteStoreError:
        return None


def store_staging_uri(target: str) -> str:
    """Where the store for ``target`` is written before it is complete (the target itself on S3)."""
    return target if storage.is_s3(target) else publish.partial_sibling(target)


def check_store_output(target: str, *, overwrite: bool, inputs: Sequence[str] = ()) -> str:
    """Refuse a finished store, or something that is not an eoseg store, at ``target`` unless ``overwrite``.

    Cheap (an existence check and at most the store's attributes; nothing is created), so the CLI asks it
    before any heavy import or cluster. An unfinished store passes: :func:`open_store_output` resumes it
    or starts over. ``overwrite`` replaces only a Zarr store: a file, or a folder that is not a Zarr
    store, is refused even then.

    Args:
        target: the store to write (local path or ``s3://`` URI).
        overwrite: whether an existing store may be replaced.
        inputs: the command's inputs (scenes, stores, model); ``target`` must be none of them.

    Returns:
        The normalised ``target``.

    Raises:
        OutputExistsError: what is at ``target`` would be replaced and ``overwrite`` is False; or it is
            not a Zarr store; or ``target`` is one of ``inputs``.
        OutputLocationError: the folder of ``target`` cannot be created.
    """
    target = _check_location(target, inputs)
    staging = store_staging_uri(target)
    if storage.exists(target) and not is_zarr_store(target):
        raise OutputExistsError(
            f"{target}: exists and is not a Zarr store; "
            "--overwrite replaces only a store: choose another --out"
        )
    if overwrite:
        return target
    if staging != target:
        if storage.exists(target):
            raise _refusal(target)
        return target
    if storage.exists(staging):  # S3: written in place, finished once flagged complete
        previous = _existing_store(staging)
        if previous is None:
            raise _refusal(
                target, "something that is not an eoseg store (of a layout this eoseg reads) exists there"
            )
        if previous.complete:
            raise _refusal(target)
    return target


def open_store_output(
    target: str, wanted: StoreInfo, *, overwrite: bool, inputs: Sequence[str] = ()
) -> StoreOutput:
    """Decide how the store ``target`` is written: created afresh, resumed, or refused.

    Args:
        target: the store to write (local path or ``s3://`` URI).
        wanted: the attributes of the store to write (``complete`` False).
        overwrite: replace a finished output (and discard any unfinished one).
        inputs: the stage's inputs; ``target`` must be none of them (:func:`check_store_output`).

    Returns:
        The output, its (possibly resumed) attributes and its staging location, created when fresh.

    Raises:
        OutputExistsError: a finished store, or something that is not an eoseg store, is at ``target``
            and ``overwrite`` is False (nothing is changed; :func:`check_store_output`).
    """
    target = check_store_output(target, overwrite=overwrite, inputs=inputs)
    staging = store_staging_uri(target)
    if storage.exists(staging) and not overwrite:
        previous = _existing_store(staging)
        # A hidden local staging store may even be complete: the run died between `complete` and the rename.
        if previous is not None and _comparable(previous) == _comparable(wanted):
            done = chunks_done(staging)
            logger.info(
                "%s: resuming an interrupted write (%d of %d chunks done)", target, int(done.sum()), done.size
            )
            return StoreOutput(target, staging, previous, resuming=True)
        logger.warning("%s: an unfinished store of another input or grid is there; starting over", target)
    storage.remove(staging)
    create_store(staging, wanted)
    return StoreOutput(target, staging, wanted, resuming=False)


def chunks_done(uri: str) -> np.ndarray:
    """Boolean ``(chunk_rows, chunk_cols)`` array of the chunks of the store at ``uri`` flagged done."""
    return np.asarray(open_data_array(uri, "chunk_done")[...]).astype(bool)


def mark_chunk_done(uri: str, chunk_index: tuple[int, int]) -> None:
    """Flag one chunk done; call only after its data is written (a killed write leaves no flag: the flag's
    file is written under a temporary name and renamed, :func:`eoseg.store.layout.write_chunk`)."""
    write_chunk(uri, "chunk_done", chunk_index, _DONE_FLAG)


_DONE_FLAG = np.ones((1, 1), dtype=np.uint8)


def mark_complete(uri: str, info: StoreInfo) -> StoreInfo:
    """Set ``complete`` last, after every chunk is written; returns the finished attributes."""
    finished = replace(info, complete=True)
    update_store_info(uri, finished)
    return finished


def finish_store_output(output: StoreOutput, info: StoreInfo) -> StoreInfo:
    """Mark the store complete with ``info`` and publish it at its target (rename locally; S3: in place)."""
    finished = mark_complete(output.staging, info)
    publish.publish_tree(output.staging, output.target)
    return finished


@dataclass(frozen=True)
class FileOutput:
    """A file assembled from pieces (the mosaic's COG) and the staging folder holding the pieces.

    Attributes:
        target: the file's final local path or ``s3://`` URI.
        staging: ``.NAME.partial`` beside the target (a local folder, or an S3 prefix); ``pieces/`` holds
            one published file per finished piece.
        overwrite: whether the final publish may replace a file that appeared meanwhile.
        resuming: True when pieces of an interrupted run with the same plan were found.
    """

    target: str
    staging: str
    overwrite: bool
    resuming: bool

    def piece_path(self, chunk_index: tuple[int, int], *, suffix: str = ".tif") -> str:
        """The path (or URI) of the piece for one chunk (exists only once the piece is complete)."""
        row, col = chunk_index
        return storage.join(self.staging, "pieces", f"{row}-{col}{suffix}")

    def pieces_done(self, chunk_indices: Sequence[tuple[int, int]], *, suffix: str = ".tif") -> list[bool]:
        """For each chunk, whether its piece is already complete (one listing of the pieces folder)."""
        names = storage.file_names(storage.join(self.staging, "pieces"))
        return [f"{row}-{col}{suffix}" in names for row, col in chunk_indices]

    def assembly_path(self, name: str) -> str:
        """Where the file (or another staging file, ``name``) is written before it is published."""
        return storage.join(self.staging, name)


def file_staging_dir(target: str) -> str:
    """The staging folder (local path or S3 prefix) for the pieces of ``target``: its hidden sibling."""
    return publish.partial_sibling(target)


def check_file_output(target: str, *, overwrite: bool, inputs: Sequence[str] = ()) -> str:
    """Refuse an existing file at ``target`` unless ``overwrite``; returns the normalised target.

    A directory at ``target`` is refused even with ``overwrite`` (it replaces only a file).

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is False; or it is a directory; or it is
            one of ``inputs``.
        OutputLocationError: the folder of ``target`` cannot be created.
    """
    target = _check_location(target, inputs)
    if storage.is_dir(target):
        raise OutputExistsError(f"{target}: is a directory; give a file name")
    if not overwrite and storage.exists(target):
        raise _refusal(target)
    return target


def open_file_output(
    target: str, *, plan: Mapping[str, Any], overwrite: bool, inputs: Sequence[str] = ()
) -> FileOutput:
    """Decide how the file ``target`` is assembled: refused, resumed from its pieces, or started afresh.

    Args:
        target: the file to write (local path or ``s3://`` URI).
        plan: JSON-serialisable description of what the pieces are made from (input, band, grid, piece
            format); pieces of an interrupted run are reused only when its plan was the same.
        overwrite: replace an existing file and discard any pieces.
        inputs: the stage's inputs; ``target`` must be none of them.

    Raises:
        OutputExistsError: ``target`` exists and ``overwrite`` is False, or is a directory, or an input.
        OutputLocationError: the folder of ``target`` cannot be created.
    """
    target = check_file_output(target, overwrite=overwrite, inputs=inputs)
    staging = file_staging_dir(target)
    plan_text = json.dumps(plan, sort_keys=True, default=list)
    plan_file = storage.join(staging, PLAN_FILE)
    if not overwrite and storage.read_text(plan_file) == plan_text:
        output = FileOutput(target, staging, overwrite, resuming=True)
        logger.info("%s: resuming an interrupted write", target)
        return output
    storage.remove(staging)
    if not storage.is_s3(staging):
        os.makedirs(os.path.join(staging, "pieces"), exist_ok=True)
    publish.write_text(plan_file, plan_text, overwrite=True)
    return FileOutput(target, staging, overwrite, resuming=False)


def finish_file_output(output: FileOutput, assembled: str) -> None:
    """Publish the finished file ``assembled`` (in the staging folder) at the target; remove the pieces.

    A GDAL sidecar ``TARGET.aux.xml`` left from an earlier file (category names of a ``--legend`` run) is
    removed: it would describe the old file. A step that styles the new file writes its own afterwards
    (:func:`eoseg.mosaic.legend.apply_legend`).

    Raises:
        FileExistsError: the target appeared meanwhile and the output may not overwrite it.
    """
    publish.publish_staged(assembled, output.target, overwrite=output.overwrite)
    storage.remove(output.target + publish.AUX_SUFFIX)  # a stale sidecar would describe the old file
    storage.remove(output.staging)


def discard(output: StoreOutput | FileOutput) -> None:
    """Remove an output's staging (partial store, or pieces); a finished target is left alone."""
    storage.remove(output.staging)


@contextlib.contextmanager
def discarded_on_bad_input(output: StoreOutput | FileOutput) -> Iterator[None]:
    """Run a stage's work: bad input (:class:`EosegError`) discards the staging, anything else keeps it.

    A lost worker, a storage hiccup or an interrupt keeps what was written, so that running the same
    command again (or Prefect's retry) resumes it.
    """
    try:
        yield
    except EosegError:
        discard(output)
        raise
