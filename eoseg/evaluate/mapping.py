"""Name an unsupervised model's clusters with reference classes, then score the named map.

Following Saha et al. (2021, section 4), each cluster gets the reference class it overlaps most
(:func:`map_clusters`, ``method="majority"``; many clusters may become one class), or a one-to-one
assignment (``"hungarian"``); :func:`score` then gives per-class precision, recall, F1 and IoU, their
macro means, overall accuracy and Cohen's kappa.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from eoseg.evaluate.confusion import ConfusionCounts
from eoseg.evaluate.report import ClassScores, EvaluationReport

MappingMethod = Literal["majority", "hungarian"]
MAPPING_METHODS: tuple[str, ...] = ("majority", "hungarian")


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
    check_method(method)
    majority_columns = counts.counts.argmax(axis=1)
    mapping = {
        cluster: counts.reference_labels[column]
        for cluster, column in zip(counts.prediction_labels, majority_columns.tolist(), strict=True)
    }
    if method == "hungarian":
        rows, columns = linear_sum_assignment(counts.counts, maximize=True)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            mapping[counts.prediction_labels[row]] = counts.reference_labels[column]
    return mapping


def score(counts: ConfusionCounts, mapping: dict[int, int], *, method: str = "custom") -> EvaluationReport:
    """Score the mapped label map: per-class and mean F1 and IoU, overall accuracy, kappa.

    Means are macro averages over the reference classes present in ``counts``. Precision of a class
    that is never predicted, and any other 0/0 of a per-class score, counts as 0. Cohen's kappa
    ``(p_o - p_e) / (1 - p_e)`` is None (undefined) when the chance agreement ``p_e`` is 1, i.e. the
    reference holds one class and every cluster maps to it.

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
    # Chance agreement of 1 means one class everywhere in both maps: kappa is 0/0, undefined (None).
    kappa = (
        None if chance_agreement >= 1.0 else (overall_accuracy - chance_agreement) / (1.0 - chance_agreement)
    )

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
        kappa=None if kappa is None else float(kappa),
        per_class=per_class,
        mapping={cluster: mapping[cluster] for cluster in counts.prediction_labels},
        method=method,
        pixels=int(total),
    )


def check_method(method: str) -> None:
    """Refuse a ``method`` that is not one of :data:`MAPPING_METHODS`."""
    if method not in MAPPING_METHODS:
        raise ValueError(f"unknown cluster mapping method {method!r}; use one of {list(MAPPING_METHODS)}")


def _divide_or_zero(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)
