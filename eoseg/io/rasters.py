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
        raise SceneNotFoundError(f"{path}: {role} not found; check the path")
    try:
        with warnings.catch_warnings():
            # PNGs and plain masks have no georeferencing; they are compared or drawn pixel for pixel.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioIOError as error:
        raise CorruptSceneError(f"{path}: GDAL cannot read this {role} ({error}); is it a raster?") from error
    with dataset:
        yield dataset


def label_values(path: str | os.PathLike[str], *, role: str = "label map") -> set[int]:
    """The values that occur in band 1 of a label raster (nodata left out), read block by block.

    Args:
        path: The label raster (e.g. a map from ``eoseg run``/``mosaic``; uint8 cluster ids).
        role: What the raster is for the caller, named in errors (:func:`open_raster`).

    Returns:
        The set of values present; memory stays at one block plus a count per possible value.

    Raises:
        SceneNotFoundError, CorruptSceneError: as :func:`open_raster`.
    """
    import numpy as np

    seen: set[int] = set()
    with open_raster(path, role=role) as dataset:
        for _, window in dataset.block_windows(1):
            seen.update(np.unique(dataset.read(1, window=window)).tolist())
        if dataset.nodata is not None:
            seen.discard(int(dataset.nodata))
    return {int(value) for value in seen}
