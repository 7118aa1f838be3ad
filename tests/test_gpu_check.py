"""The GPU check script's CPU dry mode runs end to end, so the script is ready when a GPU machine is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_mode_writes_every_figure(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path))
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check_dry.json").read_text())
    assert report["tests"]["returncode"] == 0, report["tests"]["tail"]  # the GPU tests' code ran, on the CPU
    cases = report["results"]
    assert len(cases) == 8 and not [name for name, figures in cases.items() if "error" in figures]
    assert cases["clusterer training, bf16"]["patch_iterations_per_s"] > 0
    assert cases["mcl-lc pre-training, fp32"]["patches_per_s"] > 0
    assert cases["clusterer inference, bf16"]["precision"] == "bf16"
    assert cases["mcl-lc inference, fp32"]["megapixels_per_s"] > 0
    assert (tmp_path / "gpu_check_dry.md").read_text().startswith("# GPU check (dry")
