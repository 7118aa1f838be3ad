"""A city of real pieces (issue 10, "Benchmarks"): N tiles of 1024 x 1024 against one big scene and the old
per-tile loop.

The scene is built of the ten NAIP years (``benchmarks/build_large_scene.py``), cropped to
``sqrt(N) * 1024`` px a side, and cut into N GeoTIFFs of 1024 x 1024 (tiled 256, DEFLATE, like the
source). One small clusterer is trained once (tiny config, on the first tile) and kept at
``WORKDIR/bench.pt``: every case predicts with the same weights and the same precision (``auto``). Cases,
each in a fresh Python subprocess with its own LocalCluster of 2 worker processes x 1 thread:

- ``big``:  tile -> predict -> mosaic of the single big scene (one store, one COG);
- ``city``: the same stages on the N tiles as one mosaic (one store on their union grid, one COG);
- ``loop``: the old way: each tile through tile -> predict -> mosaic on its own, one after another.

Per stage: wall seconds, and peak RSS (sampled every 0.1 s) of each Dask worker process and of the
calling process (the mosaic stage runs on threads there). The load average (1 min) is recorded before
and after each stage: the reference machine has 2 cores that other jobs share. The labels of ``city``
and ``loop`` are compared with those of ``big`` (share of equal pixels).

Run: ``python benchmarks/bench_city.py --tiles 16`` (then ``--tiles 64``); results are merged into
``benchmarks/results/city.json`` and ``city.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_machine import cpu_model, ram_gib
from bench_tile_mosaic import TreeSampler
from build_large_scene import build_naip_mosaic

MiB = 2**20
PIECE = 1024
CASES = ("big", "city", "loop")
STAGES = ("tile", "predict", "mosaic")
TRAINING = {"epochs": 1, "iterations": 3, "batch_size": 4, "patch_size": 32}
RESULTS = HERE / "results"


def prepare(workdir: Path, tiles: int) -> dict[str, Any]:
    """Build the big scene, cut it into ``tiles`` GeoTIFFs, train the shared checkpoint once."""
    import rasterio
    from rasterio.windows import Window

    side = math.isqrt(tiles)
    if side * side != tiles:
        raise SystemExit(f"--tiles must be a square number, got {tiles}")
    size = side * PIECE
    folder = workdir / f"n{tiles}"
    big = folder / "big.tif"
    if not big.exists():
        build_naip_mosaic(big, tiles_x=-(-size // 934), tiles_y=-(-size // 723), width=size, height=size)
    tile_dir = folder / "tiles"
    paths = sorted(str(p) for p in tile_dir.glob("tile_*.tif"))
    if len(paths) != tiles:
        tile_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        with rasterio.open(big) as scene:
            for i in range(side):
                for j in range(side):
                    window = Window(j * PIECE, i * PIECE, PIECE, PIECE)
                    profile = dict(scene.profile, width=PIECE, height=PIECE, photometric="MINISBLACK")
                    profile["transform"] = scene.window_transform(window)
                    path = tile_dir / f"tile_{i:02d}_{j:02d}.tif"
                    with rasterio.open(path, "w", **profile) as out:
                        out.write(scene.read(window=window))
                    paths.append(str(path))
    checkpoint = workdir / "bench.pt"
    if not checkpoint.exists():
        from eoseg.tile.stage import tile_scene
        from eoseg.train.stage import train_on_stores

        store = workdir / "train.zarr"
        tile_scene(paths[0], str(store), chunk_size=PIECE, overwrite=True)
        train_on_stores(
            "clusterer", [str(store)], str(checkpoint), params=TRAINING, max_patches=16, overwrite=True
        )
    return {
        "big": str(big),
        "tiles": paths,
        "checkpoint": str(checkpoint),
        "folder": str(folder),
        "size": size,
    }


def _stages(
    scene: str | list[str], out: Path, checkpoint: str, client: Any
) -> list[tuple[str, Callable[[], Any]]]:
    """The three stages of one run, as the segment-scene flow calls them (same chunk size, same cluster)."""
    from eoseg.mosaic.cog import mosaic_to_cog
    from eoseg.predict.stage import predict_store
    from eoseg.tile.stage import tile_scene

    store, labels, cog = (str(out.with_suffix(suffix)) for suffix in (".tiles.zarr", ".labels.zarr", ".tif"))
    return [
        ("tile", lambda: tile_scene(scene, store, chunk_size=PIECE, overwrite=True, client=client)),
        ("predict", lambda: predict_store(store, checkpoint, labels, overwrite=True, client=client)),
        ("mosaic", lambda: mosaic_to_cog(labels, cog, overwrite=True)),
    ]


def run_case(case: str, setup: dict[str, Any], stages_run: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """One case in this process: per stage, wall seconds and peak RSS per process (MiB); only the stages
    in ``stages_run`` (in order: predict needs the tile stage's store, mosaic predict's labels)."""
    from distributed import Client, LocalCluster

    folder = Path(setup["folder"]) / case
    folder.mkdir(parents=True, exist_ok=True)
    if case == "loop":
        runs = [(tile, folder / Path(tile).stem) for tile in setup["tiles"]]
    else:
        runs = [(setup["big"] if case == "big" else setup["tiles"], folder / case)]
    stages: dict[str, dict[str, Any]] = {
        name: {"seconds": 0.0, "peak_rss_mib": {}, "load_before": [], "load_after": []} for name in stages_run
    }
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, silence_logs=logging.WARNING
        ) as cluster,
        Client(cluster) as client,
    ):
        workers = {pid: f"worker {n}" for n, pid in enumerate(sorted(client.run(os.getpid).values()))}
        workers[os.getpid()] = "caller"
        started = time.perf_counter()
        for scene, out in runs:
            for name, stage in _stages(scene, out, setup["checkpoint"], client):
                if name not in stages:
                    continue
                record = stages[name]
                record["load_before"].append(os.getloadavg()[0])
                with TreeSampler() as sampler:
                    t0 = time.perf_counter()
                    stage()
                    record["seconds"] += time.perf_counter() - t0
                record["load_after"].append(os.getloadavg()[0])
                for pid, label in workers.items():
                    peak = sampler.peak_by_pid.get(pid, 0) / MiB
                    record["peak_rss_mib"][label] = round(
                        max(peak, record["peak_rss_mib"].get(label, 0.0)), 1
                    )
        total = time.perf_counter() - started
    for record in stages.values():
        record["seconds"] = round(record["seconds"], 2)
        for key in ("load_before", "load_after"):
            values = record.pop(key)
            record[f"{key}_mean"] = round(sum(values) / len(values), 2)
    maps = [str(out.with_suffix(".tif")) for _, out in runs]
    return {"case": case, "runs": len(runs), "total_s": round(total, 2), "stages": stages, "maps": maps}


def equal_share(maps: list[str], reference: str) -> float:
    """Share of the reference map's pixels that the maps (placed on its grid by their transforms) equal."""
    import numpy as np
    import rasterio
    from rasterio.windows import from_bounds

    with rasterio.open(reference) as ref:
        expected = ref.read(1)
        got = np.full_like(expected, 254)
        for path in maps:
            with rasterio.open(path) as piece:
                window = from_bounds(*piece.bounds, transform=ref.transform).round_offsets().round_lengths()
                got[window.toslices()] = piece.read(1)
    return float(np.mean(got == expected))


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="minutes"),
    }


def write_markdown(results: dict[str, Any]) -> None:
    lines = [
        "# A city of 1024 x 1024 tiles vs one big scene vs the old per-tile loop",
        "",
        "`python benchmarks/bench_city.py --tiles N`. Scene built of the ten NAIP years, cut into N tiles; one",
        "checkpoint (tiny training config, precision auto) for every case; LocalCluster of 2 worker processes x",
        "1 thread; chunks 1024 px. Peak RSS sampled every 0.1 s per process (worker 0, worker 1, the calling",
        "process, where the mosaic stage runs). `load` = 1-minute load average before -> after the stage (mean",
        "over the loop's tiles): the machine's 2 cores are shared with other jobs, so seconds vary with it.",
        "",
    ]
    for key in sorted(results["runs"], key=lambda k: (int(k.split()[0]), k)):
        run = results["runs"][key]
        cases = {row["case"]: row for row in run["cases"]}
        lines += [
            f"## {key} tiles ({run['size']} x {run['size']} px), {run['machine']['cpu']}, {run['machine']['cores']}"
            f" cores, {run['machine']['date']}; cases run in the order {', '.join(run.get('order', CASES))}",
            "",
            "| case | stage | seconds | vs big | peak RSS MiB (worker 0 / worker 1 / caller) | load |",
            "|---|---|---:|---:|---|---|",
        ]
        for case in CASES:
            if case not in cases:
                continue
            for stage in STAGES:
                if stage not in cases[case]["stages"]:
                    continue
                record = cases[case]["stages"][stage]
                base = cases.get("big", {}).get("stages", {}).get(stage, {}).get("seconds")
                ratio = f"{record['seconds'] / base:.2f}x" if base else "-"
                rss = " / ".join(
                    f"{record['peak_rss_mib'].get(p, 0):.0f}" for p in ("worker 0", "worker 1", "caller")
                )
                load = f"{record['load_before_mean']:.1f} -> {record['load_after_mean']:.1f}"
                lines.append(f"| {case} | {stage} | {record['seconds']:.1f} | {ratio} | {rss} | {load} |")
            base_total = cases.get("big", {}).get("total_s")
            ratio = f"{cases[case]['total_s'] / base_total:.2f}x" if base_total else "-"
            lines.append(f"| {case} | **all** | **{cases[case]['total_s']:.1f}** | {ratio} | | |")
        lines.append("")
        for case, share in run.get("equal_to_big", {}).items():
            lines.append(f"- labels of `{case}` equal to `big` on {share:.4%} of pixels")
        lines.append("")
    (RESULTS / "city.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--workdir", default="/tmp/eoseg-city-bench")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--stages", default=",".join(STAGES), help="e.g. `tile` alone for a large N")
    parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    setup = prepare(workdir, args.tiles)
    if args.one:
        print(json.dumps(run_case(args.one, setup, tuple(args.stages.split(",")))))
        return
    rows = []
    for case in args.cases.split(","):
        command = [sys.executable, __file__, "--tiles", str(args.tiles), "--workdir", str(workdir)]
        command += ["--stages", args.stages, "--one", case]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps({k: v for k, v in row.items() if k != "maps"}), flush=True)
        rows.append(row)
    by_case = {row["case"]: row for row in rows}
    equal = {}
    if "big" in by_case and "mosaic" in args.stages:
        for case in ("city", "loop"):
            if case in by_case:
                equal[case] = round(equal_share(by_case[case]["maps"], by_case["big"]["maps"][0]), 6)
    for row in rows:
        row.pop("maps")
    path = RESULTS / "city.json"
    results = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    key = base = str(args.tiles) if args.stages == ",".join(STAGES) else f"{args.tiles} ({args.stages} only)"
    while key in results["runs"]:  # a repetition (e.g. the cases in another order) is kept beside the first
        key = f"{base}, run {sum(k.startswith(base) for k in results['runs']) + 1}"
    results["runs"][key] = {
        "size": setup["size"], "machine": machine(), "training": TRAINING, "cases": rows, "equal_to_big": equal,
        "stages": args.stages.split(","), "order": args.cases.split(","),
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    print(json.dumps(equal))


if __name__ == "__main__":
    main()
