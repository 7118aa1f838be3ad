"""Scores of an unsupervised label map against a reference raster, after naming its clusters.

An unsupervised model's cluster ids carry no class names, so evaluation follows Saha et al. (2021,
section 4): count the pixels of every (cluster, reference class) pair (:func:`confusion_matrix_from_rasters`,
here), give each cluster the reference class it overlaps most (:func:`map_clusters`, ``method="majority"``;
many clusters may become one class), then report per-class precision, recall, F1 and IoU, their macro
means, overall accuracy and Cohen's kappa (:func:`score`; both in :mod:`eoseg.evaluate.mapping`, the
report in :mod:`eoseg.evaluate.report`). A binary building-vs-rest evaluation is the same call with a
0/255 building mask as the reference.

Both rasters are read window by window, so memory does not grow with the scene::

    report = evaluate_label_map("labels.tif", "reference.tif", ignore_values=[0])
    print(report.to_text())
    json.dumps(report.to_dict())
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import rasterio
from rasterio.io import DatasetReader

from eoseg.errors import EmptySceneError, EosegError, UnsupportedDtypeError
from eoseg.evaluate.confusion import ConfusionCounts, count_pairs
from eoseg.evaluate.mapping import MAPPING_METHODS, MappingMethod, check_method, map_clusters, score
from eoseg.evaluate.report import ClassScores, EvaluationReport
from eoseg.geometry import ChunkGrid, geobox_of, grid_offset_pixels, grids_match
from eoseg.io.rasters import open_raster

__all__ = [
    "MAPPING_METHODS",
    "ClassScores",
    "ConfusionCounts",
    "EvaluationReport",
    "GridMismatchError",
    "MappingMethod",
    "confusion_matrix_from_rasters",
    "evaluate_label_map",
    "map_clusters",
    "score",
]

# Pixels per window read: two label arrays plus masks stay around 50 MB whatever the raster size.
_PIXELS_PER_READ = 1 << 22


class GridMismatchError(EosegError, ValueError):
    """The prediction and the reference are not on the same pixel grid."""


def confusion_matrix_from_rasters(
    prediction_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    *,
    ignore_values: Sequence[int] = (),
    prediction_nodata: int | None = None,
) -> ConfusionCounts:
    """Count (prediction label, reference class) pixel pairs of two rasters on the same grid.

    Band 1 of each raster is read window by window (any format GDAL reads: GeoTIFF, COG, PNG, ...).

    Args:
        prediction_path: The label map (cluster ids).
        reference_path: The reference classes.
        ignore_values: Reference values that are not classes (e.g. unlabelled, clutter); their
            pixels are not evaluated. The reference file's own nodata is *not* dropped
            automatically, because masks are often written with a class value as nodata; list it here.
        prediction_nodata: Prediction value of pixels without a prediction, not evaluated. Default:
            the prediction file's nodata, if it declares one.

    Returns:
        The pair counts over the label values actually present in evaluated pixels.

    Raises:
        SceneNotFoundError: A local file does not exist.
        CorruptSceneError: GDAL cannot open a file as a raster.
        UnsupportedDtypeError: A raster does not hold integers.
        GridMismatchError: The rasters differ in shape, or both are georeferenced differently.
        EmptySceneError: No pixel is left once nodata and ignored values are excluded.
    """
    prediction_path, reference_path = os.fspath(prediction_path), os.fspath(reference_path)
    ignored = np.asarray(sorted({int(value) for value in ignore_values}), dtype=np.int64)
    with (
        _open_label_raster(prediction_path, role="prediction") as prediction,
        _open_label_raster(reference_path, role="reference") as reference,
    ):
        _check_same_grid(prediction, reference, prediction_path, reference_path)
        if prediction_nodata is None and prediction.nodata is not None:
            prediction_nodata = int(prediction.nodata)
        pair_totals: Counter[tuple[int, int]] = Counter()
        for window in _read_windows(prediction):
            predicted = prediction.read(1, window=window)
            actual = reference.read(1, window=window)
            valid = np.ones(predicted.shape, dtype=bool)
            if ignored.size:
                valid &= ~np.isin(actual, ignored)
            if prediction_nodata is not None:
                valid &= predicted != prediction_nodata
            for pair, count in count_pairs(predicted[valid], actual[valid]):
                pair_totals[pair] += count

    if not pair_totals:
        raise EmptySceneError(
            f"{prediction_path}: no pixel is left to evaluate against {reference_path}: every one is "
            f"prediction nodata ({prediction_nodata}) or a reference value in ignore_values "
            f"{tuple(ignored.tolist())}; check both options"
        )
    return ConfusionCounts.from_pair_totals(pair_totals)


def evaluate_label_map(
    prediction_path: str | os.PathLike[str],
    reference_path: str | os.PathLike[str],
    *,
    ignore_values: Sequence[int] = (),
    method: MappingMethod = "majority",
    prediction_nodata: int | None = None,
) -> EvaluationReport:
    """Evaluate a label map against a reference raster in one call.

    Counts pixel pairs (:func:`confusion_matrix_from_rasters`), maps clusters to classes
    (:func:`map_clusters`) and scores the result (:func:`score`); see those for the arguments.

    Returns:
        The report; ``report.to_dict()`` is JSON-ready, ``report.to_text()`` a readable table.
    """
    check_method(method)
    counts = confusion_matrix_from_rasters(
        prediction_path, reference_path, ignore_values=ignore_values, prediction_nodata=prediction_nodata
    )
    return score(counts, map_clusters(counts, method=method), method=method)


@contextmanager
def _open_label_raster(path: str, *, role: str) -> Iterator[DatasetReader]:
    """Open a label raster, refusing what cannot be evaluated with a message that names the file."""
    with open_raster(path, role=f"{role} raster") as dataset:
        if not np.issubdtype(np.dtype(dataset.dtypes[0]), np.integer):
            raise UnsupportedDtypeError(
                f"{path}: the {role} raster holds {dataset.dtypes[0]} values, labels and classes must be "
                "integers; convert it (e.g. gdal_translate -ot Byte)"
            )
        yield dataset


def _check_same_grid(
    prediction: DatasetReader, reference: DatasetReader, prediction_path: str, reference_path: str
) -> None:
    prediction_shape = (prediction.height, prediction.width)
    reference_shape = (reference.height, reference.width)
    if prediction_shape != reference_shape:
        raise GridMismatchError(
            f"{prediction_path}: the map is {prediction_shape[1]} x {prediction_shape[0]} px (width x "
            f"height) but the reference {reference_path} is {reference_shape[1]} x {reference_shape[0]} px; "
            "they must be on the same grid: resample or crop one onto the other first (e.g. gdalwarp "
            "-te ... -ts ...)"
        )
    # Only comparable when both are georeferenced; masks often carry no CRS of their own.
    if prediction.crs and reference.crs:
        predicted_grid, reference_grid = geobox_of(prediction), geobox_of(reference)
        if not grids_match(predicted_grid, reference_grid):
            offset = grid_offset_pixels(predicted_grid, reference_grid)
            raise GridMismatchError(
                f"{prediction_path}: the map ({prediction.crs}, {tuple(prediction.transform)[:6]}) and "
                f"the reference {reference_path} ({reference.crs}, {tuple(reference.transform)[:6]}) have "
                f"the same shape but different georeferencing (corners up to {offset:.3g} pixels apart, or "
                "another CRS); they must be on the same grid: reproject one onto the other"
            )


def _read_windows(dataset: DatasetReader) -> Iterator[rasterio.windows.Window]:
    """Windows of at most about ``_PIXELS_PER_READ`` pixels, aligned to the file's blocks when possible."""
    block_rows, block_cols = dataset.block_shapes[0]
    if dataset.width * block_rows <= _PIXELS_PER_READ:
        # Whole rows of blocks: every block is decoded exactly once.
        chunk_cols = dataset.width
        chunk_rows = max(block_rows, _PIXELS_PER_READ // dataset.width // block_rows * block_rows)
    else:
        side = max(1, math.isqrt(_PIXELS_PER_READ))
        chunk_rows = side // block_rows * block_rows or side
        chunk_cols = side // block_cols * block_cols or side
    grid = ChunkGrid(dataset.height, dataset.width, chunk_rows, chunk_cols)
    for _, window in grid.windows():
        yield window.to_rasterio()
