"""The result of an evaluation: per-class scores, their means, and how clusters were named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
            lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        lines.append(f"overall accuracy {self.oa:.4f}   kappa {self.kappa:.4f}")
        mapping = ", ".join(f"{cluster}->{target}" for cluster, target in sorted(self.mapping.items()))
        lines.append(f"mapping (cluster->class): {mapping}")
        return "\n".join(lines)
