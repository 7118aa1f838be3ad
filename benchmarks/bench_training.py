"""Training throughput of the clusterer: eoseg's loop against a plain PyTorch loop, fp32 and bf16, one run.

Issue 12, point 3: the paper schedule on a 512 x 512 crop (64 patches of 64 px, I = 2, B = 16,
J = 50: 6,400 patch-iterations) in under 3 minutes, and eoseg >= 0.9 x a plain PyTorch loop on the same
patches in memory. *eoseg* = ``train_on_stores`` end to end (patch index over the Zarr store, reads,
normalisation, Algorithm 1, checkpoint written); *plain* = the same model, losses, optimiser, batches
and derangements on the patches already in memory as one tensor (``bench_clusterer_speed.case_train``).
Both run in this process, interleaved round by round, with the 1-minute load average and the process's
CPU seconds beside every figure (the machine is shared).

``--iterations`` (J) shortens the compared schedule for a busy machine (default 5, a tenth of the
paper's); the paper-schedule time in that table is then *projected* from the measured rate (6,400 /
patch-iterations per second) and labelled so. After the comparison, ``--paper-schedule PRECISION``
(default ``bf16``; ``none`` skips it) runs the paper schedule itself once, end to end through
``train_on_stores`` (J = 50, 64 patches, I = 2, B = 16), and reports its measured wall time against
the 3-minute target.

Usage::

    .venv/bin/python benchmarks/bench_training.py                   # J = 5 rows + paper schedule in bf16
    .venv/bin/python benchmarks/bench_training.py --iterations 50   # compare at the paper schedule itself
    .venv/bin/python benchmarks/bench_training.py --paper-schedule none   # only the J = 5 comparison

Writes ``benchmarks/results/training.json`` and ``training.md``.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time
from pathlib import Path

from bench_clusterer_speed import NAIP_DIR, case_train, loads
from bench_machine import cpu_model, write_report

HERE = Path(__file__).resolve().parent
PAPER_PATCH_ITERATIONS = 64 * 2 * 50  # 64 patches, I = 2, J = 50


def crop_store(workdir: Path) -> str:
    """A 512 x 512 crop of the first NAIP scene, tiled (64 patches of 64 px)."""
    import rasterio
    from rasterio.windows import Window

    from eoseg.tile.stage import tile_scene

    store = workdir / "naip_512.zarr"
    if store.exists():
        return str(store)
    crop = workdir / "naip_512.tif"
    with rasterio.open(min(glob.glob(str(NAIP_DIR / "*.tif")))) as scene:
        window = Window(0, 0, 512, 512)
        profile = dict(scene.profile, width=512, height=512, transform=scene.window_transform(window))
        with rasterio.open(crop, "w", **profile) as out:
            out.write(scene.read(window=window))
    tile_scene(str(crop), str(store), chunk_size=512, show_progress=False)
    return str(store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=5, help="J (paper: 50)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument(
        "--paper-schedule",
        default="bf16",
        choices=["bf16", "fp32", "auto", "none"],
        help="precision of one end-to-end run of the paper schedule (J = 50) after the comparison",
    )
    parser.add_argument("--workdir", default="/tmp/eoseg-bench-training")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = crop_store(workdir)
    params = {"epochs": 2, "iterations": args.iterations, "batch_size": 16, "patch_size": 64, "seed": 0}
    header = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_at_start": loads()}
    runs: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        for precision in args.precisions.split(","):
            for mode in ("eoseg", "plain"):
                case = {
                    "mode": mode,
                    "scene": "naip512",
                    "store": store,
                    "workdir": str(workdir),
                    "max_patches": 64,
                    "params": {**params, "precision": precision},
                }
                cpu0 = time.process_time()
                result = case_train(case)
                result["process_cpu_s"] = time.process_time() - cpu0
                runs.setdefault(f"{mode} {precision}", []).append(result)
                print(
                    f"round {round_ + 1} {mode} {precision}: {result['seconds']:.1f} s, "
                    f"{result['patches_per_s']:.2f} patch-it/s, load {result['load_start'][0]}",
                    flush=True,
                )
    paper = None
    if args.paper_schedule != "none":
        case = {
            "mode": "eoseg",
            "scene": "naip512",
            "store": store,
            "workdir": str(workdir),
            "max_patches": 64,
            "params": {**params, "iterations": 50, "precision": args.paper_schedule},
        }
        cpu0 = time.process_time()
        paper = case_train(case)
        paper["process_cpu_s"] = time.process_time() - cpu0
        print(f"paper schedule {args.paper_schedule}: {paper['seconds']:.1f} s", flush=True)
    header["load_at_end"] = loads()
    rate = {name: statistics.median(r["patches_per_s"] for r in results) for name, results in runs.items()}
    cpu_rate = {
        name: statistics.median(r["patch_iterations"] / r["process_cpu_s"] for r in results)
        for name, results in runs.items()
    }
    rows = []
    for name, results in runs.items():
        mode, precision = name.split()
        plain = rate.get(f"plain {precision}")
        rows.append(
            f"| {name} | {results[0]['patches']} | {results[0]['patch_iterations']} | "
            f"{' / '.join(format(r['seconds'], '.1f') for r in results)} | {rate[name]:.2f} | "
            f"{rate[name] / plain:.2f} | {cpu_rate[name]:.2f} | {PAPER_PATCH_ITERATIONS / rate[name] / 60:.1f} | "
            f"{' / '.join(str(r['load_start'][0]) for r in results)} | {results[-1]['final_loss']:.5f} |"
        )
    lines = [
        "# Clusterer training throughput: eoseg vs plain PyTorch loop, fp32 and bf16 (one run)",
        "",
        f"- machine: {header['cpu']}, {header['cores']} cores, shared with other sessions",
        f"- load averages (1/5/15 min): at start {header['load_at_start']}, at end {header['load_at_end']}",
        f"- 512 x 512 NAIP crop, 64 patches of 64 px, B = 16, I = 2, J = {args.iterations}; "
        f"paper schedule = J 50 = {PAPER_PATCH_ITERATIONS} patch-iterations"
        + ("" if args.iterations == 50 else " (minutes **projected** from the measured rate)"),
        "",
        "| loop precision | patches | patch-its | wall s | patch-its/s | vs plain | patch-its per CPU s "
        "| paper schedule, min | 1-min load at start | final loss |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        *rows,
    ]
    if paper is not None:
        minutes = paper["seconds"] / 60
        lines += [
            "",
            f"Paper schedule end to end (measured, not projected): `train_on_stores`, precision "
            f"{args.paper_schedule}, J = 50, 64 patches, I = 2, B = 16 ({paper['patch_iterations']} patch-its):",
            "",
            "| wall s | wall min | patch-its/s | patch-its per CPU s | 1-min load at start / end | final loss "
            "| target < 3 min |",
            "|--:|--:|--:|--:|--:|--:|:--|",
            f"| {paper['seconds']:.1f} | {minutes:.2f} | {paper['patches_per_s']:.2f} | "
            f"{paper['patch_iterations'] / paper['process_cpu_s']:.2f} | {paper['load_start'][0]} / "
            f"{paper['load_end'][0]} | {paper['final_loss']:.5f} | {'met' if minutes < 3 else 'not met'} |",
        ]
    record = {"header": header, "params": params, "runs": runs, "rate": rate, "cpu_rate": cpu_rate}
    record["paper_schedule"] = {"precision": args.paper_schedule, **(paper or {})}
    write_report(Path(args.out), "training", record, lines)


if __name__ == "__main__":
    main()
