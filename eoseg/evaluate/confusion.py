"""Pixel counts of (prediction label, reference class) pairs: counted per window, gathered in one table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


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

    @classmethod
    def from_pair_totals(cls, pair_totals: Counter[tuple[int, int]]) -> ConfusionCounts:
        """The table of ``{(prediction label, reference value): count}`` over the labels present."""
        prediction_labels = tuple(sorted({cluster for cluster, _ in pair_totals}))
        reference_labels = tuple(sorted({value for _, value in pair_totals}))
        row_of = {label: row for row, label in enumerate(prediction_labels)}
        column_of = {label: column for column, label in enumerate(reference_labels)}
        counts = np.zeros((len(prediction_labels), len(reference_labels)), dtype=np.int64)
        for (cluster, value), count in pair_totals.items():
            counts[row_of[cluster], column_of[value]] = count
        return cls(counts, prediction_labels, reference_labels)


def count_pairs(predicted: np.ndarray, actual: np.ndarray) -> Iterator[tuple[tuple[int, int], int]]:
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
    for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
        yield (int(prediction_values[row]), int(reference_values[column])), int(pair_counts[row, column])
