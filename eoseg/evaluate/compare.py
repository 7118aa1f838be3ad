"""Side-by-side scores of a model's map and a baseline's, from their JSON reports (``MAP.scores.json``).

One table per run: a row per reference class (name, support, F1 of each map under the majority and the
Hungarian mapping), then the macro means, overall accuracy and kappa. Collapsed mappings are flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["comparison_text"]

_METHODS = ("majority", "hungarian")
_SHORT = {"majority": "maj.", "hungarian": "hung."}


def comparison_text(
    scores: Mapping[str, Mapping[str, Any]],
    baseline: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    model_name: str = "model",
    baseline_name: str = "k-means",
) -> str:
    """A table of per-class F1 (and the summaries) of a map, and of a baseline map beside it.

    Args:
        scores: ``{method: EvaluationReport.to_dict()}`` of the model's map, for ``"majority"`` and
            ``"hungarian"`` (what ``evaluate_task`` returns).
        baseline: The same for the baseline map, or None.
        model_name: Column title of the model.
        baseline_name: Column title of the baseline.

    Returns:
        Lines of text, no trailing newline.
    """
    columns: list[tuple[str, Mapping[str, Any]]] = []
    for method in _METHODS:
        columns.append((f"{model_name} {_SHORT[method]}", scores[method]))
        if baseline is not None:
            columns.append((f"{baseline_name} {_SHORT[method]}", baseline[method]))
    first = scores[_METHODS[0]]["per_class"]
    header = ["class", "support", *(title for title, _ in columns)]
    rows = []
    for value, row in first.items():
        label = f"{value} {row['name']}" if row.get("name") else str(value)
        cells = [f"{report['per_class'][value]['f1']:.3f}" for _, report in columns]
        rows.append([label, f"{row['support']:,}", *cells])
    for key, title in (("f1", "macro F1"), ("iou", "macro IoU"), ("oa", "OA"), ("kappa", "kappa")):
        rows.append([title, "", *(_figure(report[key]) for _, report in columns)])
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *rows]
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(first) + 2, "-" * len(lines[0]))
    lines.append("per-class F1; maj. = majority mapping (paper), hung. = one-to-one Hungarian mapping")
    for title, report in columns:
        if report.get("warning"):
            lines.append(f"WARNING ({title}): {report['warning']}")
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    """A score to three decimals, or ``n/a`` when it is undefined (kappa of a one-class reference)."""
    return "n/a" if value is None else f"{value:.3f}"
