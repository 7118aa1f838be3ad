"""What every benchmark's report says about the machine it ran on, and how a report is written out.

Imported by the ``bench_*.py`` scripts (each puts ``benchmarks/`` on ``sys.path``, or runs from it).
"""

from __future__ import annotations

import json
from pathlib import Path


def cpu_model(default: str = "?") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``default`` where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return default
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), default)


def ram_gib() -> float | None:
    """Total memory in GiB, one decimal (None where the system does not say)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in lines if line.startswith("MemTotal")), None)
    return None if kib is None else round(kib / 2**20, 1)


def write_report(results: Path, name: str, report: dict, lines: list[str]) -> tuple[Path, Path]:
    """Print the report's markdown and write ``results/NAME.json`` (every figure) and ``results/NAME.md``."""
    print()
    print("\n".join(lines))
    results.mkdir(parents=True, exist_ok=True)
    as_json, as_markdown = results / f"{name}.json", results / f"{name}.md"
    as_json.write_text(json.dumps(report, indent=1, default=str))
    as_markdown.write_text("\n".join(lines) + "\n")
    return as_json, as_markdown
