"""One way to make an output appear: written aside, then published in one step.

A reader must never take a half-written output for a finished one. Files (COGs, PNGs, JSON, checkpoints)
are written to a local path and then published: locally by ``os.replace`` from a hidden sibling (atomic
on one file system), on S3 by one PUT or multipart upload (S3 makes an object visible only once its upload
completes). Zarr stores are directories of many objects and cannot be published in one step on S3: there
they are written in place and made "finished" by their ``complete`` attribute
(:mod:`eoseg.store.lifecycle`); locally they are renamed from a hidden sibling like files.

Every atomic write in ``eoseg`` goes through this module (``eo_models`` keeps its own ``os.replace`` in
``eo_models/checkpoint.py`` because it must not import ``eoseg``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from eoseg.io import storage

PARTIAL_SUFFIX = ".partial"
AUX_SUFFIX = ".aux.xml"  # the GDAL sidecar beside a GeoTIFF (category names, statistics)


def partial_sibling(target: str, *, unique: bool = False) -> str:
    """The hidden name beside ``target`` under which it is written: ``.NAME.partial``.

    Args:
        target: the final local path or ``s3://`` URI.
        unique: add a random token (``.NAME.partial-0123abcd``) so that concurrent writers of one-shot
            files never share a name; without it the name is stable, so a re-run finds it and resumes.

    Returns:
        A path (or URI) in the same folder (or S3 prefix) as ``target``.
    """
    token = f"-{uuid.uuid4().hex[:10]}" if unique else ""
    if storage.is_s3(target):
        head, _, tail = target.rstrip("/").rpartition("/")
        return f"{head}/.{tail}{PARTIAL_SUFFIX}{token}"
    path = Path(target)
    return str(path.with_name(f".{path.name}{PARTIAL_SUFFIX}{token}"))


@contextlib.contextmanager
def publishing_file(target: str, *, overwrite: bool) -> Iterator[str]:
    """Yield a local path to write; when the block ends without error it becomes ``target`` in one step.

    Args:
        target: the final local path or ``s3://`` URI.
        overwrite: replace an output that exists at ``target`` when publishing.

    Raises:
        FileExistsError: ``target`` exists at publishing time and ``overwrite`` is False (another run
            published it meanwhile); the written file is discarded.

    On any exception nothing is left behind: neither ``target`` nor the temporary file.
    """
    if storage.is_s3(target):
        with tempfile.TemporaryDirectory(prefix="eoseg-upload-") as scratch:
            local = os.path.join(scratch, Path(urlparse(target).path).name or "output")
            yield local
            filesystem = storage.s3_filesystem()
            filesystem.invalidate_cache(target)
            if not overwrite and filesystem.exists(target):
                raise FileExistsError(target)
            filesystem.put_file(local, target)
        return
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_sibling(target, unique=True)
    try:
        yield temporary
        if not overwrite and Path(target).exists():
            raise FileExistsError(target)
        if os.path.exists(temporary):
            os.chmod(temporary, 0o644)  # outputs are meant to be shared, whatever wrote the temporary
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def publish_file(local: str, target: str, *, overwrite: bool) -> None:
    """Copy the finished local file ``local`` to ``target`` (local path or ``s3://``) atomically.

    Raises:
        FileExistsError: as :func:`publishing_file`.
    """
    with publishing_file(target, overwrite=overwrite) as staging:
        shutil.copyfile(local, staging)


def publish_staged(staging: str, target: str, *, overwrite: bool) -> None:
    """Make the finished file at ``staging`` (same storage as ``target``) appear at ``target`` in one step.

    Locally an ``os.replace``; on S3 a server-side copy (the object appears whole once copied) and the
    deletion of ``staging``: the bytes never pass through this machine.

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is False (``staging`` is left as it is).
    """
    if storage.is_s3(target):
        filesystem = storage.s3_filesystem()
        filesystem.invalidate_cache(target)
        if not overwrite and filesystem.exists(target):
            raise FileExistsError(target)
        filesystem.copy(staging, target)
        filesystem.rm(staging)
        return
    if not overwrite and Path(target).exists():
        raise FileExistsError(target)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o644)  # outputs are meant to be shared
    os.replace(staging, target)


def write_text(target: str, text: str, *, overwrite: bool) -> None:
    """Write UTF-8 ``text`` to ``target`` atomically (JSON sidecars, STAC documents).

    Raises:
        FileExistsError: as :func:`publishing_file`.
    """
    with (
        publishing_file(target, overwrite=overwrite) as staging,
        open(staging, "w", encoding="utf-8") as handle,
    ):
        handle.write(text)


def publish_tree(staging: str, target: str) -> None:
    """Move a finished local directory (a Zarr store) from ``staging`` to ``target``.

    A store written in place (``staging == target``, the S3 case) is already where it belongs. An older
    output at ``target`` is removed just before the rename; whether replacing it is allowed was decided
    before any work by :mod:`eoseg.store.lifecycle`.
    """
    if staging == target:
        return
    if storage.exists(target):
        storage.remove(target)
    os.replace(staging, target)
