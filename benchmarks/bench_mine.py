"""mCL-LC's three loss terms at a CPU batch size, with MINE's Donsker-Varadhan ("dv") or MINE-f ("f")
bound and per-index ("shifted") or pooled ("all-pairs") marginal samples.

Pre-trains DeepLabv3+ for a few steps on 64 px patches of the LoveDA scene (``rural_1.tif``, 256
patches, batch 4, 12 ROIs of 8 px per patch pair, the paper's other defaults) once per setting, with
the same seed, patches and augmentations, and prints the feature-level, semantic-level and
local-consistency terms and the MINE estimate per step, then their means over the run's second half.
A setting is ``ESTIMATOR/MARGINALS``; ``--batch-sizes`` repeats every setting per batch size;
``--learning-rate`` changes Adam's rate (the paper's 0.001) for diagnostics. A run whose loss becomes
non-finite is recorded with the step and the error, not aborted.

Usage::

    .venv/bin/python benchmarks/bench_mine.py --steps 16 --batch-sizes 4 8 --settings dv/shifted f/shifted

Writes ``benchmarks/results/mine.md`` (``--output`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench_machine import cpu_model

DATA = Path(os.environ.get("EOSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
SCENE = DATA / "loveda" / "rural_1.tif"
TERMS = ("feature_loss", "semantic_loss", "local_consistency_loss", "mutual_information", "loss")


def run(
    setting: str,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    learning_rate: float,
    mine_learning_rate: float | None = None,
) -> tuple[dict[str, list[float]], str | None]:
    from eo_models.clusterer.train import ArrayPatchSource
    from eo_models.mcl_lc.params import PretrainParams
    from eo_models.mcl_lc.pretrain import pretrain_mcl_lc

    estimator, marginals = setting.split("/")
    with rasterio.open(SCENE) as scene:
        pixels = scene.read().astype(np.float32)
    mean = pixels.mean(axis=(1, 2))
    std = pixels.std(axis=(1, 2))
    normalised = (pixels - mean[:, None, None]) / std[:, None, None]
    params = PretrainParams(
        epochs=1, batch_size=batch_size, patch_size=64, max_steps_per_epoch=steps, seed=seed,
        device="cpu", mine_estimator=estimator, mine_marginals=marginals, learning_rate=learning_rate,
        mine_learning_rate=mine_learning_rate,
    )  # fmt: skip
    reports: list = []
    failure = None
    try:
        pretrain_mcl_lc(
            ArrayPatchSource(normalised, 64), in_channels=3, params=params, band_mean=mean.tolist(),
            band_std=std.tolist(), on_progress=reports.append,
        )  # fmt: skip
    except FloatingPointError as error:  # a diverging estimate is a result, recorded as such
        failure = str(error)
    return {term: [float(r.metrics[term]) for r in reports] for term in TERMS}, failure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4])
    parser.add_argument("--settings", nargs="+", default=["dv/shifted", "f/shifted"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (paper: 0.001)")
    parser.add_argument(
        "--mine-learning-rates",
        nargs="+",
        default=["same"],
        help="statistics network's own rates ('same': --learning-rate, one parameter group)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "mine.md")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    lines = [
        "# MINE at a CPU batch size: mCL-LC loss terms per pre-training step",
        "",
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {cpu_model()}, load average "
        f"{os.getloadavg()[0]:.1f}; LoveDA rural_1, 64 px patches, batch {args.batch_sizes}, 12 ROIs, "
        f"{args.steps} steps, seed {args.seed}, learning rate {args.learning_rate:g}",
        "",
    ]
    summary = []
    runs = [(b, s, r) for b in args.batch_sizes for s in args.settings for r in args.mine_learning_rates]
    for batch_size, setting, mine_rate in runs:
        started = time.perf_counter()
        history, failure = run(
            setting,
            steps=args.steps,
            batch_size=batch_size,
            seed=args.seed,
            learning_rate=args.learning_rate,
            mine_learning_rate=None if mine_rate == "same" else float(mine_rate),
        )
        seconds = time.perf_counter() - started
        lines += [
            f"## mine_estimator/mine_marginals = {setting}, batch {batch_size}, mine_learning_rate "
            f"{mine_rate} ({seconds:.0f} s)",
            "",
            "| step | " + " | ".join(TERMS) + " |",
        ]
        lines.append("|---:|" + "---:|" * len(TERMS))
        for step in range(len(history["loss"])):
            values = " | ".join(f"{history[t][step]:.3f}" for t in TERMS)
            lines.append(f"| {step + 1} | {values} |")
        if failure is not None:
            lines.append(f"| {len(history['loss']) + 1} | stopped: {failure} |")
        lines.append("")
        half = len(history["loss"]) // 2
        means = {t: np.mean(history[t][half:]) for t in TERMS}
        stds = {t: np.std(history[t][half:]) for t in TERMS}
        label = f"{setting} | {batch_size} | {mine_rate}" + (
            "" if failure is None else f" (diverged at step {len(history['loss']) + 1})"
        )
        summary.append((label, means, stds))
        print("\n".join(lines[-len(history["loss"]) - 5 :]), flush=True)
    lines += [
        "## Second half of the run: mean (std) per term",
        "",
        "| estimator/marginals | batch | mine_learning_rate | " + " | ".join(TERMS) + " |",
    ]
    lines.append("|---|---:|---:|" + "---:|" * len(TERMS))
    for label, means, stds in summary:
        lines.append(f"| {label} | " + " | ".join(f"{means[t]:.3f} ({stds[t]:.3f})" for t in TERMS) + " |")
    text = "\n".join(lines) + "\n"
    print("\n".join(lines[-len(summary) - 2 :]))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
