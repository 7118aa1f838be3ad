"""Open a raster GDAL reads (local path, ``s3://`` through ``/vsis3/``, any ``/vsi`` path) for reading."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader

from eoseg.errors import CorruptSceneError, SceneNotFoundError


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


@contextmanager
def open_raster(path: str | os.PathLike[str], *, role: str) -> Iterator[DatasetReader]:
    """Open ``path`` for reading; refuse a missing or unreadable file with a message naming ``role``.

    Args:
        path: The raster.
        role: What the raster is for the caller (``"scene"``, ``"reference raster"``), named in errors.

    Raises:
        SceneNotFoundError: A local file does not exist.
        CorruptSceneError: GDAL cannot open the file as a raster.
    """
    path = os.fspath(path)
    if _is_local(path) and not os.path.exists(path):
        raise SceneNotFoundError(f"{role} {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            # PNGs and plain masks have no georeferencing; they are compared or drawn pixel for pixel.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioIOError as error:
        raise CorruptSceneError(f"GDAL cannot read {role} {path} ({error}); is it a raster?") from error
    with dataset:
        yield dataset
