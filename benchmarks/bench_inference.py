"""Inference throughput of the predict stage against a bare PyTorch forward, fp32 and bf16, in one run.

The issue's targets (issue 12, point 2), each a ratio measured in this one process, interleaved round by
round so that the machine's load (shared, 2 cores) affects every case alike:

* predict stage, one pass (``attention_pooling="tile"``) in fp32 >= 0.9 x the bare fp32 forward;
* the same stage in bf16 >= 3 x the fp32 stage;
* the default two-pass scene pooling (``"scene"``) >= 0.5 x the one-pass stage of the same precision.

*Bare forward*: ``Predictor.predict`` on the scene's 1024 px tiles already in memory (the model bands and
validity read from the store once, before the clock), no halo, no I/O, no Dask. *Stage*:
``eoseg.predict.stage.predict_store`` Zarr -> Zarr on this process's threads (``client=None``, what the
direct ``eoseg predict`` runs for a small scene), model cached after the warm-up run. Each case runs once
untimed (warm-up: model load, oneDNN kernels), then ``--rounds`` times; the table gives the median.
A breakdown of one predict chunk (read with halo, normalise, forward, argmax, write) follows the table.

Usage::

    .venv/bin/python benchmarks/bench_inference.py            # 2 x 1 NAIP grid (1868 x 723 px), ~3 min
    .venv/bin/python benchmarks/bench_inference.py --grid 2x2 --rounds 3

Writes ``benchmarks/results/inference.json`` and ``inference.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from bench_clusterer_speed import build_naip_grid, loads
from bench_machine import cpu_model, write_report

HERE = Path(__file__).resolve().parent
CHUNK = 1024


def prepare(workdir: Path, grid: str) -> tuple[str, str]:
    """The NAIP grid scene tiled into a store of 1024 px chunks, and a clusterer briefly trained on it."""
    from eoseg.tile.stage import tile_scene
    from eoseg.train.stage import train_on_stores

    tiles_x, tiles_y = (int(v) for v in grid.split("x"))
    scene = workdir / f"naip_grid_{grid}.tif"
    store, model = workdir / f"naip_grid_{grid}.zarr", workdir / "clusterer.pt"
    if not scene.exists():
        build_naip_grid(scene, tiles_x, tiles_y)
    if not store.exists():
        tile_scene(str(scene), str(store), chunk_size=CHUNK, show_progress=False)
    if not model.exists():
        params = {
            "epochs": 1,
            "iterations": 5,
            "batch_size": 8,
            "patch_size": 64,
            "seed": 1,
            "precision": "fp32",
        }
        train_on_stores("clusterer", [str(store)], str(model), params=params, max_patches=32)
    return str(store), str(model)


def bare_forward(store: str, model: str, precision: str):
    """A callable running ``Predictor.predict`` over the in-memory scene in 1024 px tiles; returns labels."""
    from eo_models.predict import load_predictor
    from eoseg.store.layout import read_image_window, read_store_info

    info = read_store_info(store)
    block, valid = read_image_window(store, info, slice(0, info.height), slice(0, info.width))
    predictor = load_predictor(model, device="cpu", precision=precision)

    def run() -> np.ndarray:
        labels = np.empty(block.shape[1:], np.uint8)
        for row in range(0, block.shape[1], CHUNK):
            for col in range(0, block.shape[2], CHUNK):
                window = (slice(row, row + CHUNK), slice(col, col + CHUNK))
                labels[window] = predictor.predict(block[(slice(None), *window)], valid[window])
        return labels

    return run


def stage(store: str, model: str, workdir: Path, precision: str, pooling: str):
    """A callable running the predict stage into a fresh label store; returns its labels."""
    from eoseg.predict.stage import predict_store
    from eoseg.store.layout import open_data_array

    def run() -> np.ndarray:
        out = workdir / f"labels_{precision}_{pooling}.zarr"
        shutil.rmtree(out, ignore_errors=True)
        info = predict_store(
            store, model, str(out), attention_pooling=pooling, precision=precision, show_progress=False
        )
        return np.asarray(open_data_array(str(out), info)[...])

    return run


def chunk_breakdown(store: str, model: str, workdir: Path, precision: str) -> dict[str, float]:
    """Seconds per step of one predict chunk (the first, 1024 px + halo), as ``predict_chunk`` does them."""
    import torch

    from eo_models.precision import autocast
    from eoseg.predict.stage import cached_predictor
    from eoseg.store.layout import open_data_array, read_image_window, read_store_info

    info = read_store_info(store)
    predictor = cached_predictor(model, None, precision=precision)
    _, window = next(iter(info.grid.windows()))
    grown = window.grown(predictor.halo, height_limit=info.height, width_limit=info.width)
    steps: dict[str, float] = {}
    t0 = time.perf_counter()
    block, valid = read_image_window(store, info, *grown.slices)
    t1 = time.perf_counter()
    with torch.inference_mode(), autocast(predictor.precision, predictor.device):
        normalised = predictor._normalise(block[None], valid[None])
        t2 = time.perf_counter()
        logits = predictor.model(normalised)
        t3 = time.perf_counter()
        labels = logits.argmax(dim=1).to(torch.uint8).numpy()[0]
    t4 = time.perf_counter()
    out = workdir / "breakdown.zarr"
    import zarr

    array = zarr.create_array(
        str(out), shape=labels.shape, chunks=labels.shape, dtype="uint8", overwrite=True
    )
    t5 = time.perf_counter()
    array[...] = labels
    t6 = time.perf_counter()
    open_data_array(store, info)  # what opening a store's array costs (metadata read)
    t7 = time.perf_counter()
    steps.update(
        read=t1 - t0, normalise=t2 - t1, forward=t3 - t2, argmax=t4 - t3, write=t6 - t5, open_array=t7 - t6
    )
    shutil.rmtree(out, ignore_errors=True)
    return {k: round(v, 3) for k, v in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="2x1", help="NAIP years side by side, columns x rows (default 2x1)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default="/tmp/eoseg-bench-inference")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args()
    import torch

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store, model = prepare(workdir, args.grid)
    from eoseg.store.layout import read_store_info

    info = read_store_info(store)
    megapixels = info.height * info.width / 1e6
    cases = {
        "bare fp32": bare_forward(store, model, "fp32"),
        "bare bf16": bare_forward(store, model, "bf16"),
        "stage fp32, one pass": stage(store, model, workdir, "fp32", "tile"),
        "stage bf16, one pass": stage(store, model, workdir, "bf16", "tile"),
        "stage fp32, two-pass scene pooling": stage(store, model, workdir, "fp32", "scene"),
        "stage bf16, two-pass scene pooling": stage(store, model, workdir, "bf16", "scene"),
    }
    header = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load_at_start": loads(),
    }
    labels: dict[str, np.ndarray] = {}
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in cases}
    case_loads: dict[str, list[float]] = {name: [] for name in cases}
    for name, run in cases.items():  # warm-up: model loads, oneDNN kernel creation
        labels[name] = run()
        print(f"warm-up {name} done, load {loads()}", flush=True)
    for round_ in range(args.rounds):
        for name, run in cases.items():
            load = loads()[0]
            started, cpu = time.perf_counter(), time.process_time()
            run()
            seconds[name].append(time.perf_counter() - started)
            cpu_seconds[name].append(time.process_time() - cpu)
            case_loads[name].append(load)
            print(f"round {round_ + 1} {name}: {seconds[name][-1]:.2f} s, load {load}", flush=True)
    header["load_at_end"] = loads()
    rate = {name: megapixels / statistics.median(values) for name, values in seconds.items()}
    ratios = {
        "stage fp32 one pass / bare fp32 (target >= 0.9)": rate["stage fp32, one pass"] / rate["bare fp32"],
        "stage bf16 one pass / stage fp32 one pass (target >= 3)": rate["stage bf16, one pass"]
        / rate["stage fp32, one pass"],
        "stage bf16 two-pass / stage bf16 one pass (target >= 0.5)": rate[
            "stage bf16, two-pass scene pooling"
        ]
        / rate["stage bf16, one pass"],
        "stage fp32 two-pass / stage fp32 one pass (target >= 0.5)": rate[
            "stage fp32, two-pass scene pooling"
        ]
        / rate["stage fp32, one pass"],
        "bare bf16 / bare fp32": rate["bare bf16"] / rate["bare fp32"],
        "stage bf16 one pass / bare bf16": rate["stage bf16, one pass"] / rate["bare bf16"],
    }
    valid = labels["stage fp32, one pass"] != 255
    agreement = float((labels["stage fp32, one pass"][valid] == labels["stage bf16, one pass"][valid]).mean())
    breakdown = {p: chunk_breakdown(store, model, workdir, p) for p in ("fp32", "bf16")}
    rows = [
        f"| {name} | {' / '.join(f'{s:.2f}' for s in seconds[name])} | {megapixels / statistics.median(seconds[name]):.3f}"
        f" | {' / '.join(f'{s:.1f}' for s in cpu_seconds[name])}"
        f" | {' / '.join(f'{v:.2f}' for v in case_loads[name])} |"
        for name in cases
    ]
    lines = [
        "# Inference throughput: predict stage vs bare forward, fp32 and bf16 (one run)",
        "",
        f"- machine: {header['cpu']}, {header['cores']} cores, torch {header['torch']}, shared with other sessions",
        f"- load averages (1/5/15 min): at start {header['load_at_start']}, at end {header['load_at_end']}",
        f"- scene: {info.width} x {info.height} px ({megapixels:.2f} MP), {info.band_count} model bands, "
        f"{len(info.grid)} chunks of {CHUNK} px, halo 16 px; stage on this process's threads (client=None)",
        f"- each case: one warm-up run, then {args.rounds} rounds interleaved with the other cases; MP/s from the median",
        "",
        "| case | seconds per round | MP/s | CPU s of this process per round | 1-min load at each start |",
        "|:--|--:|--:|--:|--:|",
        *rows,
        "",
        "| ratio (same run) | value |",
        "|:--|--:|",
        *(f"| {name} | {value:.2f} |" for name, value in ratios.items()),
        "",
        f"bf16 vs fp32 one-pass stage labels: {100 * agreement:.4f} % of valid pixels agree.",
        "",
        "One predict chunk (the first 1024 px chunk + halo), seconds per step:",
        "",
        "| precision | " + " | ".join(breakdown["fp32"]) + " |",
        "|:--|" + "--:|" * len(breakdown["fp32"]),
        *(f"| {p} | " + " | ".join(str(v) for v in steps.values()) + " |" for p, steps in breakdown.items()),
    ]
    record = {"header": header, "megapixels": megapixels, "seconds": seconds, "cpu_seconds": cpu_seconds}
    record["loads"] = case_loads
    record.update(ratios=ratios, agreement=agreement, breakdown=breakdown)
    write_report(Path(args.out), "inference", record, lines)


if __name__ == "__main__":
    main()
