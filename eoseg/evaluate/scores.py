"""Scores of an unsupervised label map against a reference raster, after naming its clusters.

An unsupervised model's cluster ids carry no class names, so evaluation follows Saha et al. (2021,
section 4): count the pixels of every (cluster, reference class) pair, give each cluster the reference
class it overlaps most (:func:`map_clusters`, ``method="majority"``; many clusters may become one
class), then report per-class precision, recall, F1 and IoU, their macro means, overall accuracy and
Cohen's kappa (:func:`score`). A binary building-vs-rest evaluation is the same call with a 0/255
building mask as the reference.

Both rasters are read window by window, so memory does not grow with the scene::

    report = evaluate_label_map("labels.tif", "reference.tif", ignore_values=[0])
    print(report.to_text())
    json.dumps(report.to_dict())
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.io import DatasetReader
from scipy.optimize import linear_sum_assignment

from eoseg.errors import (
    CorruptSceneError,
    EmptySceneError,
    EosegError,
    SceneNotFoundError,
    UnsupportedDtypeError,
)
from eoseg.geometry import ChunkGrid, geobox_of, grid_offset_pixels, grids_match

MappingMethod = Literal["majority", "hungarian"]
MAPPING_METHODS: tuple[str, ...] = ("majority", "hungarian")

# Pixels per window read: two label arrays plus masks stay around 50 MB whatever the raster size.
_PIXELS_PER_READ = 1 << 22


class GridMismatchError(EosegError, ValueError):
    """The prediction and the reference are not on the same pixel grid."""


@dataclass(frozen=True)
class ConfusionCounts:
    """Pixel counts of every (prediction label, reference class) pair.

    Attributes:
        counts: ``int64`` array of shape ``(len(prediction_labels), len(reference_labels))``;
            ``counts[i, j]`` is the number of evaluated pixels labelled ``prediction_labels[i]`` in
            the prediction and ``reference_labels[j]`` in the reference.
        prediction_labels: Sorted label values present in the evaluated prediction pixels.
        reference_labels: Sorted class values present in the evaluated reference pixels.
    """

    counts: np.ndarray
    prediction_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]

    def __post_init__(self) -> None:
        expected = (len(self.prediction_labels), len(self.reference_labels))
        if self.counts.shape != expected:
            raise ValueError(f"counts has shape {self.counts.shape}, labels say {expected}")

    @property
    def pixels(self) -> int:
        """Number of evaluated pixels."""
        return int(self.counts.sum())


@dataclass(frozen=True)
class ClassScores:
    """Scores of one reference class; a class that is never predicted has precision 0."""

    precision: float
    recall: float
    f1: float
    iou: float
    support: int


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of a label map after its clusters were mapped to reference classes.

    Attributes:
        f1: Mean F1 over reference classes (macro).
        iou: Mean intersection-over-union over reference classes (macro).
        oa: Overall accuracy, the fraction of evaluated pixels whose mapped class is right.
        kappa: Cohen's kappa of the mapped classes against the reference.
        per_class: Scores of every reference class present, by class value.
        mapping: The cluster -> class mapping the scores were computed with.
        method: How the mapping was made (``"majority"``, ``"hungarian"`` or ``"custom"``).
        pixels: Number of evaluated pixels.
    """

    f1: float
    iou: float
    oa: float
    kappa: float
    per_class: dict[int, ClassScores]
    mapping: dict[int, int]
    method: str
    pixels: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; class and cluster values become string keys."""
        return {
            "f1": self.f1,
            "iou": self.iou,
            "oa": self.oa,
            "kappa": self.kappa,
            "per_class": {
                str(value): {
                    "precision": scores.precision,
                    "recall": scores.recall,
                    "f1": scores.f1,
                    "iou": scores.iou,
                    "support": scores.support,
                }
                for value, scores in self.per_class.items()
            },
            "mapping": {str(cluster): target for cluster, target in self.mapping.items()},
            "method": self.method,
            "pixels": self.pixels,
        }

    def to_text(self) -> str:
        """A table of per-class scores followed by the summary, for a terminal or a log."""
        header = ("class", "precision", "recall", "f1", "iou", "support")
        rows = [
            (str(value), *(f"{x:.4f}" for x in (s.precision, s.recall, s.f1, s.iou)), f"{s.support:,}")
            for value, s in self.per_class.items()
        ]
        rows.append(("mean", "", "", f"{self.f1:.4f}", f"{self.iou:.4f}", f"{self.pixels:,}"))
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        lines = [f"Evaluation of {self.pixels:,} pixels, clusters mapped to classes by {self.method}"]
        for row in [header, *rows]:
            lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths)))
        lines.append(f"overall accuracy {self.oa:.4f}   kappa {self.kappa:.4f}")
        mapping = ", ".join(f"{cluster}->{target}" for cluster, target in sorted(self.mapping.items()))
        lines.append(f"mapping (cluster->class): {mapping}")
        return "\n".join(lines)


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
            for pair, count in _count_pairs(predicted[valid], actual[valid]):
                pair_totals[pair] += count

    if not pair_totals:
        raise EmptySceneError(
            f"no pixel of {prediction_path} against {reference_path} is left to evaluate: every one is "
            f"prediction nodata ({prediction_nodata}) or a reference value in ignore_values "
            f"{tuple(ignored.tolist())}; check both options"
        )
    prediction_labels = tuple(sorted({cluster for cluster, _ in pair_totals}))
    reference_labels = tuple(sorted({value for _, value in pair_totals}))
    row_of = {label: row for row, label in enumerate(prediction_labels)}
    column_of = {label: column for column, label in enumerate(reference_labels)}
    counts = np.zeros((len(prediction_labels), len(reference_labels)), dtype=np.int64)
    for (cluster, value), count in pair_totals.items():
        counts[row_of[cluster], column_of[value]] = count
    return ConfusionCounts(counts, prediction_labels, reference_labels)


def map_clusters(counts: ConfusionCounts, *, method: MappingMethod = "majority") -> dict[int, int]:
    """Name every cluster with a reference class.

    Args:
        counts: Pair counts from :func:`confusion_matrix_from_rasters`.
        method: ``"majority"``: each cluster goes to the class it overlaps most, so several clusters
            may share a class (many-to-one; the protocol of Saha et al. 2021). ``"hungarian"``: a
            one-to-one assignment maximising the total overlap
            (``scipy.optimize.linear_sum_assignment``); when there are more clusters than classes,
            the clusters left unassigned go to their majority class, and when there are fewer, some
            classes are never predicted. Ties go to the smaller class value.

    Returns:
        ``{cluster: class}`` for every prediction label in ``counts``.

    Raises:
        ValueError: If ``method`` is not one of :data:`MAPPING_METHODS`.
    """
    _check_method(method)
    majority_columns = counts.counts.argmax(axis=1)
    mapping = {
        cluster: counts.reference_labels[column]
        for cluster, column in zip(counts.prediction_labels, majority_columns.tolist())
    }
    if method == "hungarian":
        rows, columns = linear_sum_assignment(counts.counts, maximize=True)
        for row, column in zip(rows.tolist(), columns.tolist()):
            mapping[counts.prediction_labels[row]] = counts.reference_labels[column]
    return mapping


def score(counts: ConfusionCounts, mapping: dict[int, int], *, method: str = "custom") -> EvaluationReport:
    """Score the mapped label map: per-class and mean F1 and IoU, overall accuracy, kappa.

    Means are macro averages over the reference classes present in ``counts``. Precision of a class
    that is never predicted, and any other 0/0, counts as 0.

    Args:
        counts: Pair counts from :func:`confusion_matrix_from_rasters`.
        mapping: ``{cluster: class}`` covering every prediction label in ``counts``, with classes
            among ``counts.reference_labels`` (as :func:`map_clusters` returns).
        method: How ``mapping`` was made; recorded in the report.

    Returns:
        The report.

    Raises:
        ValueError: If a cluster has no class in ``mapping``, or is mapped to a class absent from
            the reference.
    """
    unmapped = [cluster for cluster in counts.prediction_labels if cluster not in mapping]
    if unmapped:
        raise ValueError(
            f"mapping gives no class to clusters {unmapped}; map every cluster (see map_clusters)"
        )
    column_of = {value: column for column, value in enumerate(counts.reference_labels)}
    unknown = {c: mapping[c] for c in counts.prediction_labels if mapping[c] not in column_of}
    if unknown:
        raise ValueError(
            f"mapping sends clusters to classes absent from the reference: {unknown}; "
            f"map to one of {list(counts.reference_labels)}"
        )
    num_classes = len(counts.reference_labels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)  # rows: mapped prediction
    for row, cluster in enumerate(counts.prediction_labels):
        confusion[column_of[mapping[cluster]]] += counts.counts[row]

    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=1).astype(np.float64)
    actual = confusion.sum(axis=0).astype(np.float64)
    total = float(actual.sum())
    precision = _divide_or_zero(true_positives, predicted)
    recall = _divide_or_zero(true_positives, actual)
    f1 = _divide_or_zero(2 * true_positives, predicted + actual)
    iou = _divide_or_zero(true_positives, predicted + actual - true_positives)
    overall_accuracy = float(true_positives.sum() / total)
    chance_agreement = float((predicted * actual).sum() / total**2)
    # Chance agreement of 1 means one class everywhere in both maps: perfect, not undefined.
    if chance_agreement >= 1.0:
        kappa = 1.0
    else:
        kappa = (overall_accuracy - chance_agreement) / (1.0 - chance_agreement)

    per_class = {
        value: ClassScores(
            precision=float(precision[i]),
            recall=float(recall[i]),
            f1=float(f1[i]),
            iou=float(iou[i]),
            support=int(actual[i]),
        )
        for i, value in enumerate(counts.reference_labels)
    }
    return EvaluationReport(
        f1=float(f1.mean()),
        iou=float(iou.mean()),
        oa=overall_accuracy,
        kappa=float(kappa),
        per_class=per_class,
        mapping={cluster: mapping[cluster] for cluster in counts.prediction_labels},
        method=method,
        pixels=int(total),
    )


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
    _check_method(method)
    counts = confusion_matrix_from_rasters(
        prediction_path, reference_path, ignore_values=ignore_values, prediction_nodata=prediction_nodata
    )
    return score(counts, map_clusters(counts, method=method), method=method)


def _check_method(method: str) -> None:
    if method not in MAPPING_METHODS:
        raise ValueError(f"unknown cluster mapping method {method!r}; use one of {list(MAPPING_METHODS)}")


def _divide_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


@contextmanager
def _open_label_raster(path: str, *, role: str) -> Iterator[DatasetReader]:
    """Open a label raster, refusing what cannot be evaluated with a message that names the file."""
    if _is_local(path) and not os.path.exists(path):
        raise SceneNotFoundError(f"{role} raster {path} does not exist; check the path")
    try:
        with warnings.catch_warnings():
            # PNGs and plain masks have no georeferencing; they are compared pixel for pixel.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except RasterioIOError as error:
        raise CorruptSceneError(
            f"GDAL cannot read {role} raster {path} ({error}); is it a raster?"
        ) from error
    with dataset:
        if not np.issubdtype(np.dtype(dataset.dtypes[0]), np.integer):
            raise UnsupportedDtypeError(
                f"{role} raster {path} holds {dataset.dtypes[0]} values; labels and classes must be "
                "integers: convert it (e.g. gdal_translate -ot Byte)"
            )
        yield dataset


def _check_same_grid(
    prediction: DatasetReader, reference: DatasetReader, prediction_path: str, reference_path: str
) -> None:
    prediction_shape = (prediction.height, prediction.width)
    reference_shape = (reference.height, reference.width)
    if prediction_shape != reference_shape:
        raise GridMismatchError(
            f"prediction {prediction_path} is {prediction_shape[0]} x {prediction_shape[1]} pixels but "
            f"reference {reference_path} is {reference_shape[0]} x {reference_shape[1]}; they must be on "
            "the same grid: resample or crop one onto the other first (e.g. gdalwarp -te ... -ts ...)"
        )
    # Only comparable when both are georeferenced; masks often carry no CRS of their own.
    if prediction.crs and reference.crs:
        predicted_grid, reference_grid = geobox_of(prediction), geobox_of(reference)
        if not grids_match(predicted_grid, reference_grid):
            offset = grid_offset_pixels(predicted_grid, reference_grid)
            raise GridMismatchError(
                f"prediction {prediction_path} ({prediction.crs}, {tuple(prediction.transform)[:6]}) and "
                f"reference {reference_path} ({reference.crs}, {tuple(reference.transform)[:6]}) have the "
                f"same shape but different georeferencing (corners up to {offset:.3g} pixels apart, or "
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


def _count_pairs(predicted: np.ndarray, actual: np.ndarray) -> Iterator[tuple[tuple[int, int], int]]:
    """``((prediction label, reference value), count)`` for every pair present in two 1-D arrays."""
    if predicted.size == 0:
        return
    if predicted.dtype == np.uint8 and actual.dtype == np.uint8:
        # The usual case (uint8 labels and classes): one bincount, no sorting.
        codes = (predicted.astype(np.intp) << 8) | actual
        pair_counts = np.bincount(codes, minlength=256 * 256).reshape(256, 256)
        prediction_values = reference_values = np.arange(256)
    else:
        prediction_values, prediction_index = np.unique(predicted, return_inverse=True)
        reference_values, reference_index = np.unique(actual, return_inverse=True)
        codes = prediction_index.astype(np.intp) * reference_values.size + reference_index
        pair_counts = np.bincount(codes, minlength=prediction_values.size * reference_values.size)
        pair_counts = pair_counts.reshape(prediction_values.size, reference_values.size)
    rows, columns = np.nonzero(pair_counts)
    for row, column in zip(rows.tolist(), columns.tolist()):
        yield (int(prediction_values[row]), int(reference_values[column])), int(pair_counts[row, column])
