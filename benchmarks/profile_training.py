"""Where the clusterer's training time goes: eoseg's loop against the plain PyTorch loop, part by part.

Issue 12, point 3 asks to find where the time goes before changing anything. This runs the two loops of
``bench_training.py`` (one epoch of the 512 x 512 NAIP crop, 64 patches, B = 16, J = 5: 20 updates)
in one process, each warmed up once untimed, at ``--threads`` torch threads (default 1: process CPU
seconds then count work, not OpenMP threads spinning while a sibling is preempted on a shared machine),
and reports

* process CPU seconds per part: eoseg's store index (store infos + patch index), batch reads from
  Zarr, the training steps, the checkpoint write; the plain loop's training steps;
* the ``torch.profiler`` op table of each loop (self CPU seconds and calls of the top ops), and every op
  whose call count differs between the two loops.

Usage::

    .venv/bin/python benchmarks/profile_training.py [--threads 1] [--precision fp32]

Writes ``benchmarks/results/training_profile.md``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_clusterer_speed import case_train, loads
from bench_training import crop_store

HERE = Path(__file__).resolve().parent


def timed(totals: dict[str, list[float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` adding its process CPU seconds and calls to ``totals[name]``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu0 = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name][0] += time.process_time() - cpu0
            totals[name][1] += 1

    return wrapper


def instrument(totals: dict[str, list[float]]) -> None:
    """Wrap the parts of both loops (module attributes that ``case_train`` and eoseg look up per call)."""
    import eo_models.clusterer.train as clusterer
    import eoseg.train.stage as stage

    clusterer.clusterer_training_step = timed(
        totals, "training steps (forward, losses, backward, Adam)", clusterer.clusterer_training_step
    )
    clusterer.read_batch = timed(totals, "batch reads from Zarr (normalised)", clusterer.read_batch)
    stage.read_same_band_stores = timed(totals, "store infos", stage.read_same_band_stores)
    stage.MultiStorePatchSource = timed(totals, "patch index", stage.MultiStorePatchSource)
    stage.save_checkpoint_to = timed(totals, "checkpoint write", stage.save_checkpoint_to)


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--workdir", default="/tmp/eoseg-bench-training")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = crop_store(workdir)
    params = {"epochs": 1, "iterations": 5, "batch_size": 16, "patch_size": 64, "seed": 0}
    params["precision"] = args.precision
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    instrument(totals)
    lines = [
        f"# Where the clusterer's training time goes: eoseg vs plain loop ({args.precision}, "
        f"{args.threads} torch thread(s))",
        "",
        "One epoch of the 512 x 512 NAIP crop (64 patches, B = 16, J = 5: 20 updates, 320 patch-its), "
        "each loop warmed up once untimed; process CPU seconds (`time.process_time`). One run per loop: "
        "on a shared machine the CPU seconds of the same work drift by 10-15 % over minutes, so compare "
        "the parts and the op counts here, and take eoseg/plain ratios from `training.md` (alternating "
        "rounds).",
        "",
    ]
    ops: dict[str, dict[str, tuple[int, float]]] = {}
    for mode in ("eoseg", "plain"):
        case = {"mode": mode, "scene": "naip512", "store": store, "workdir": str(workdir)}
        case.update(max_patches=64, params=params)
        case_train(case)  # warm-up: imports, oneDNN kernels
        totals.clear()
        load, cpu0 = loads()[0], time.process_time()
        result = case_train(case)
        cpu = time.process_time() - cpu0
        lines += [
            f"**{mode}**: wall {result['seconds']:.2f} s, CPU {cpu:.2f} s, "
            f"{result['patch_iterations'] / cpu:.2f} patch-its per CPU s, 1-min load {load}, "
            f"final loss {result['final_loss']:.5f}",
            "",
            "| part | CPU s | share | calls |",
            "|:--|--:|--:|--:|",
            *(
                f"| {name} | {seconds:.3f} | {seconds / cpu:.1%} | {calls:.0f} |"
                for name, (seconds, calls) in sorted(totals.items(), key=lambda item: -item[1][0])
            ),
            "",
        ]
        with profile(activities=[ProfilerActivity.CPU]) as profiled:
            case_train(case)
        averages = profiled.key_averages()
        ops[mode] = {e.key: (e.count, e.self_cpu_time_total / 1e6) for e in averages}
        top = sorted(ops[mode].items(), key=lambda item: -item[1][1])[:8]
        lines += [
            f"{mode}, `torch.profiler`, top ops by self CPU: "
            + ", ".join(f"`{key}` {seconds:.2f} s ({calls})" for key, (calls, seconds) in top),
            "",
        ]
    differing = [
        f"| `{key}` | {ops['eoseg'].get(key, (0, 0.0))[0]} | {ops['plain'].get(key, (0, 0.0))[0]} | "
        f"{ops['eoseg'].get(key, (0, 0.0))[1]:.3f} | {ops['plain'].get(key, (0, 0.0))[1]:.3f} |"
        for key in sorted(ops["eoseg"].keys() | ops["plain"].keys())
        if ops["eoseg"].get(key, (0, 0.0))[0] != ops["plain"].get(key, (0, 0.0))[0]
    ]
    lines += [
        "Ops whose call counts differ between the loops (all others are called equally often):",
        "",
        "| op | eoseg calls | plain calls | eoseg self CPU s | plain self CPU s |",
        "|:--|--:|--:|--:|--:|",
        *differing,
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
