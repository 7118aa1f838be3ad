"""Checkpoints on local paths and S3: written atomically, read with ``torch.load(weights_only=True)``.

The format is :mod:`eo_models.checkpoint`'s (``docs/interfaces.md``); this module only moves the file.
"""

from __future__ import annotations

import tempfile
import zipfile
from typing import Any

from eoseg.errors import CorruptCheckpointError, OutputExistsError, SceneNotFoundError
from eoseg.io import storage
from eoseg.io.publish import publishing_file

__all__ = [
    "check_checkpoint_exists",
    "check_checkpoint_file",
    "check_model_output",
    "load_checkpoint_from",
    "save_checkpoint_to",
]

_REWRITE = "give the .pt file `eoseg train` wrote (or train one again); a torn copy or upload is truncated"


def save_checkpoint_to(uri: str, checkpoint: dict[str, Any], *, overwrite: bool) -> None:
    """Validate a checkpoint dict and write it to a local path or S3, atomically.

    Raises:
        OutputExistsError: If ``uri`` exists and ``overwrite`` is false.
        CheckpointError: If the dict does not follow the format.
    """
    from eo_models.checkpoint import save_checkpoint

    with publishing_file(uri, overwrite=overwrite) as staging:
        save_checkpoint(staging, checkpoint)


def check_model_output(
    model_uri: str, *, overwrite: bool, resume_uri: str | None = None, resumable: bool = False
) -> None:
    """Refuse to replace an existing checkpoint unless ``overwrite`` or it is the one being resumed
    (cheap: no torch import, so the CLI asks before any work).

    Raises:
        OutputExistsError: ``model_uri`` exists, ``overwrite`` is False and it is not ``resume_uri``;
            or ``model_uri`` is a directory (refused even with ``overwrite``).
    """
    if storage.is_dir(model_uri):
        raise OutputExistsError(f"{model_uri}: is a directory; give a file name")
    if storage.exists(model_uri) and not overwrite and model_uri != resume_uri:
        raise OutputExistsError(
            f"{model_uri}: checkpoint already exists; pass --overwrite to replace it"
            + (" (or --resume it to continue its training)" if resumable else "")
        )


def check_checkpoint_exists(uri: str) -> None:
    """Refuse a missing checkpoint (cheap: no torch import), before any work.

    Raises:
        SceneNotFoundError: If there is no checkpoint at ``uri``.
    """
    if not storage.exists(uri):
        raise SceneNotFoundError(f"{uri}: model checkpoint not found. Train one with `eoseg train`.")


def check_checkpoint_file(uri: str) -> None:
    """Refuse a missing checkpoint or a file that cannot be one, cheaply (no torch import).

    ``torch.save`` writes a zip archive (PyTorch >= 1.6); one whose end-of-archive central directory
    cannot be read (truncated, another format such as a GeoTIFF) would fail in ``torch.load``. Reads
    only the archive's directory (its last kilobytes), not the tensors.

    Raises:
        SceneNotFoundError: If there is no checkpoint at ``uri``.
        CorruptCheckpointError: If the file is not a readable zip archive.
    """
    check_checkpoint_exists(uri)
    try:
        with storage.open_file(uri, "rb") as handle, zipfile.ZipFile(handle) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise CorruptCheckpointError(
            f"{uri}: not a model checkpoint (not a readable PyTorch zip archive: {error}); {_REWRITE}"
        ) from error


def load_checkpoint_from(uri: str) -> dict[str, Any]:
    """Read a checkpoint from a local path or S3 (``torch.load(weights_only=True)``), validated.

    Raises:
        SceneNotFoundError: If there is no checkpoint at ``uri``.
        CorruptCheckpointError: If the file is not a valid checkpoint (``eo_models``'s
            ``CheckpointError`` as an :class:`~eoseg.errors.EosegError`).
    """
    from eo_models.checkpoint import CheckpointError, load_checkpoint

    check_checkpoint_file(uri)
    with tempfile.TemporaryDirectory(prefix="eoseg-ckpt-") as scratch:
        try:
            return load_checkpoint(storage.fetch_to_local(uri, scratch))
        except CheckpointError as error:
            raise CorruptCheckpointError(
                f"{uri}: not a usable model checkpoint ({error}); {_REWRITE}"
            ) from error
