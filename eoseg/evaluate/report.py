"""The result of an evaluation: per-class scores, their means, and how clusters were named."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ClassScores:
    """Scores of one reference class; a class that is never predicted has precision 0.

    Attributes:
        precision, recall, f1, iou: Scores in [0, 1].
        support: Reference pixels of the class that were evaluated.
    """

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
        kappa: Cohen's kappa of the mapped classes against the reference; None when undefined (0/0:
            the reference has one class, see :attr:`single_class`).
        per_class: Scores of every reference class present, by class value.
        mapping: The cluster -> class mapping the scores were computed with.
        method: How the mapping was made (``"majority"``, ``"hungarian"`` or ``"custom"``).
        pixels: Number of evaluated pixels.
        class_names: Optional names of reference class values (shown beside the values).
    """

    f1: float
    iou: float
    oa: float
    kappa: float | None
    per_class: dict[int, ClassScores]
    mapping: dict[int, int]
    method: str
    pixels: int
    class_names: dict[int, str] = field(default_factory=dict)

    @property
    def classes_predicted(self) -> tuple[int, ...]:
        """The reference classes that at least one cluster is mapped to, sorted."""
        return tuple(sorted(set(self.mapping.values())))

    @property
    def collapsed(self) -> bool:
        """True when every cluster is mapped to one class while the reference has several.

        The mapped map then names one class everywhere: its OA is that class's share of the pixels,
        its kappa 0, and its scores say nothing about the clusters (a common outcome of majority
        mapping when one class dominates every cluster).
        """
        return len(self.classes_predicted) == 1 and len(self.per_class) > 1

    @property
    def single_class(self) -> bool:
        """True when the reference has one class: every cluster maps to it, OA, F1 and IoU are 1 by
        construction and kappa is undefined."""
        return len(self.per_class) == 1

    def warning(self) -> str | None:
        """The sentence saying why these scores mislead (one reference class, collapsed mapping), or None."""
        if self.single_class:
            only = self.class_label(next(iter(self.per_class)))
            return (
                f"the reference has one class ({only}) where the map was scored: every cluster maps to it, "
                "so OA, F1 and IoU are 1 by construction and kappa is undefined (n/a); score against a "
                "reference with several classes (see --ignore)"
            )
        return self.collapse_message()

    def with_class_names(self, names: Mapping[int, str] | None) -> EvaluationReport:
        """The same report with names for the reference class values (those present)."""
        if not names:
            return self
        return replace(self, class_names={v: names[v] for v in self.per_class if v in names})

    def class_label(self, value: int) -> str:
        """``"4 water"`` when the class has a name, else ``"4"``."""
        name = self.class_names.get(value)
        return f"{value} {name}" if name else str(value)

    def collapse_message(self) -> str | None:
        """One sentence saying that the mapping collapsed to one class, or None."""
        if not self.collapsed:
            return None
        only = self.class_label(self.classes_predicted[0])
        return (
            f"every cluster maps to class {only} ({self.method} mapping collapsed): the mapped map is "
            f"one class everywhere, so these scores are those of a constant map (kappa 0), not of the "
            "clusters; see the hungarian mapping or the per-cluster counts"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; class and cluster values become string keys."""
        return {
            "f1": self.f1,
            "iou": self.iou,
            "oa": self.oa,
            "kappa": self.kappa,
            "per_class": {
                str(value): {
                    "name": self.class_names.get(value),
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
            "classes_predicted": list(self.classes_predicted),
            "collapsed": self.collapsed,
            "warning": self.warning(),
        }

    def to_text(self) -> str:
        """A table of per-class scores followed by the summary, for a terminal or a log."""
        header = ("class", "precision", "recall", "f1", "iou", "support")
        rows = [
            (
                self.class_label(value),
                *(f"{x:.4f}" for x in (s.precision, s.recall, s.f1, s.iou)),
                f"{s.support:,}",
            )
            for value, s in self.per_class.items()
        ]
        rows.append(("mean", "", "", f"{self.f1:.4f}", f"{self.iou:.4f}", f"{self.pixels:,}"))
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        lines = [f"Evaluation of {self.pixels:,} pixels, clusters mapped to classes by {self.method}"]
        for row in [header, *rows]:
            lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        kappa = "n/a" if self.kappa is None else f"{self.kappa:.4f}"
        lines.append(f"overall accuracy {self.oa:.4f}   kappa {kappa}")
        mapping = ", ".join(f"{cluster}->{target}" for cluster, target in sorted(self.mapping.items()))
        lines.append(f"mapping (cluster->class): {mapping}")
        message = self.warning()
        if message:
            lines.append(f"WARNING: {message}")
        return "\n".join(lines)
