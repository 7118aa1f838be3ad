"""Distributed inference scaling on this machine (issue 5): workers, memory per worker, pixels.

For scenes built from real NAIP pieces (1x, 4x, 16x the pixels), runs eoseg's predict stage (Zarr to
Zarr, scene-level attention pooling, a small trained clusterer) on a fresh LocalCluster for each case
and reports wall time, megapixels/s, and the peak RSS of each worker process (``VmHWM`` read from
inside the worker, so it is the true peak, not a sample). Also 1 vs 2 worker processes on the 4x scene.
Then a paper estimate for a 50-gigapixel city from the measured per-worker figures.

Run: ``python benchmarks/bench_scaling.py [--sizes 1,4,16] [--out-dir /tmp/eoseg-bench]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_machine import cpu_model, ram_gib

RESULTS = Path(__file__).resolve().parent / "results"
TILES = {1: (2, 2), 4: (4, 4), 16: (8, 8)}  # NAIP pieces (934 x 724 px each) per side


def _peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM); ru_maxrss can report a parent's peak in a forked child."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _machine() -> str:
    return f"{cpu_model(platform.processor())}, {os.cpu_count()} cores, {ram_gib():.0f} GiB RAM"


def run_case(store: str, model: str, out: str, workers: int, precision: str = "auto") -> dict:
    from distributed import Client

    from eoseg.compute.cluster import ClusterSpec, dask_cluster
    from eoseg.predict.stage import predict_store
    from eoseg.store.layout import read_store_info

    info = read_store_info(store)
    load_before = os.getloadavg()[0]
    with (
        dask_cluster(ClusterSpec(n_workers=workers, threads_per_worker=1)) as address,
        Client(address, set_as_default=False) as client,
    ):
        started = time.perf_counter()
        labels = predict_store(
            store, model, out, client=client, overwrite=True, precision=precision, show_progress=False
        )
        seconds = time.perf_counter() - started
        peaks = sorted(client.run(_peak_rss_mib).values())
    megapixels = info.height * info.width / 1e6
    return {
        "workers": workers,
        "precision": labels.model["precision"] if labels.model else precision,
        "megapixels": round(megapixels, 2),
        "chunks": len(info.grid),
        "seconds": round(seconds, 1),
        "mp_per_s": round(megapixels / seconds, 3),
        "peak_rss_per_worker_mib": [round(p) for p in peaks],
        "load_before": round(load_before, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,4,16", help="scene sizes to run, in multiples of the 1x scene")
    parser.add_argument("--out-dir", default="/tmp/eoseg-bench/scaling")
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (eo_models.precision)")
    args = parser.parse_args(argv)
    from build_large_scene import build_naip_mosaic

    from eoseg.tile.stage import tile_scene
    from eoseg.train.stage import train_on_stores

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = {}
    for size in sizes:
        scene = out / f"naip_{size}x.tif"
        if not scene.exists():
            build_naip_mosaic(str(scene), tiles_x=TILES[size][0], tiles_y=TILES[size][1])
        stores[size] = str(out / f"naip_{size}x.zarr")
        if not Path(stores[size]).exists():
            tile_scene(str(scene), stores[size], chunk_size=args.chunk_size, show_progress=False)
    model = str(out / "model.pt")
    train_on_stores(
        "clusterer",
        [stores[sizes[0]]],
        model,
        params={"epochs": 1, "iterations": 5, "batch_size": 8},
        max_patches=32,
        overwrite=True,
    )

    rows = []
    for size in sizes:
        row = run_case(
            stores[size], model, str(out / f"labels_{size}x.zarr"), workers=2, precision=args.precision
        )
        rows.append({"case": f"{size}x scene, 2 workers", **row})
        print(rows[-1], flush=True)
    scale_size = 4 if 4 in sizes else sizes[0]
    one = run_case(
        stores[scale_size], model, str(out / "labels_1w.zarr"), workers=1, precision=args.precision
    )
    rows.append({"case": f"{scale_size}x scene, 1 worker", **one})
    print(rows[-1], flush=True)

    two = next(r for r in rows if r["case"] == f"{scale_size}x scene, 2 workers")
    base = rows[0]
    per_worker_mp_s = two["mp_per_s"] / 2
    summary = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "chunk_size": args.chunk_size,
        "rows": rows,
        "speedup_2_vs_1_workers": round(two["mp_per_s"] / one["mp_per_s"], 2),
        "time_per_megapixel_ratio_largest_vs_smallest": round(
            (rows[len(sizes) - 1]["seconds"] / rows[len(sizes) - 1]["megapixels"])
            / (base["seconds"] / base["megapixels"]),
            2,
        ),
        "peak_rss_growth_largest_vs_smallest": round(
            max(rows[len(sizes) - 1]["peak_rss_per_worker_mib"]) / max(base["peak_rss_per_worker_mib"]), 2
        ),
        "cpu_worker_mp_per_s": round(per_worker_mp_s, 3),
    }
    lines = [
        f"# Distributed inference scaling ({summary['machine']}, {summary['date']}, chunks "
        f"{args.chunk_size} px, scene-level attention pooling, precision {rows[0]['precision']})",
        "",
        "| case | megapixels | chunks | seconds | MP/s | peak RSS per worker (MiB) | load before |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['megapixels']} | {r['chunks']} | {r['seconds']} | {r['mp_per_s']} | "
            f"{r['peak_rss_per_worker_mib']} | {r['load_before']} |"
        )
    lines += [
        "",
        f"- 2 vs 1 worker speed-up: {summary['speedup_2_vs_1_workers']}x",
        f"- seconds per megapixel, largest vs smallest scene: {summary['time_per_megapixel_ratio_largest_vs_smallest']}"
        " (1.0 = linear in pixels)",
        f"- peak worker RSS, largest vs smallest scene: {summary['peak_rss_growth_largest_vs_smallest']}x (flat = 1.0)",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "scaling.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
