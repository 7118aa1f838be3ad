"""Speed of the single-scene clusterer in eoseg: training throughput and the predict stage's overhead.

Two questions, each answered against a plain reference that has none of eoseg's machinery:

* **Training** (``eoseg.train.stage.train_on_stores``): patch-iterations per second (each of the J
  updates on a batch of B patches counts B) on the SpaceNet scene (1 band) and one NAIP scene (4 bands),
  against a *plain PyTorch loop*: the same model, losses, optimiser, batches and shuffles
  (``eo_models.clusterer.train.clusterer_training_step``) on the same patches already in memory as one
  tensor: no Zarr, no normalisation per read, no checkpoint written. Ratio = eoseg / plain.
* **Inference** (``eoseg.predict.stage.predict_store``, Zarr -> Zarr): megapixels per second on a scene built
  from real NAIP pieces (four years side by side by default), against the *bare forward*:
  ``Predictor.predict`` on the whole scene held in memory (one process, 2 torch threads). The stage runs
  with ``attention_pooling="tile"`` (one pass) and ``"scene"`` (two passes: pooled descriptors first, then
  the labels), on Dask's local threads (``client=None``) and on a ``LocalCluster`` of 2 worker processes x
  1 thread. Ratio = stage / bare. Target (the issue): the stage's overhead (I/O, halos, Dask) costs at most
  30 % of the bare forward throughput, i.e. ratio >= 0.7 for the one-pass mode. The two-pass mode runs the
  five convolutions twice, so ~0.5 is its natural ceiling.

Every case runs in a fresh Python subprocess (this script re-invoked with ``--one``), imports done before
the clock starts. The machine is shared: the 1-minute load average is recorded at the start and end of
every measurement; before each case the script waits (polling, up to ``--max-wait``) for the load to fall to
``--max-load`` and for the CPU to be idle right now (a 3 s sample of /proc/stat), and a case that started above
the load limit is run again (``--attempts``); so is one during which other processes took more than
``--max-others`` of the CPU (from /proc/stat: the whole machine's busy CPU time minus our own processes').
The table shows the loads and that share for the kept attempt.

Usage::

    .venv/bin/python benchmarks/bench_clusterer_speed.py                  # everything, ~15 min on 2 idle cores
    .venv/bin/python benchmarks/bench_clusterer_speed.py --only train     # or: --only infer
    .venv/bin/python benchmarks/bench_clusterer_speed.py --grid 3x3       # a larger inference scene

Writes ``benchmarks/results/clusterer_speed.json`` (every raw measurement) and ``clusterer_speed.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_machine import cpu_model, ram_gib, write_report

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("EOSEG_SHARED_DATA", "/work/shared/data"))
SPACENET = DATA / "spacenet" / "sample_geotiff.tif"
NAIP_DIR = DATA / "naip"
DEFAULT_WORKDIR = os.environ.get("EOSEG_BENCH_DIR", "/tmp/eoseg-bench-clusterer")


# --------------------------------------------------------------------------------------------------
# Machine state (shared with bench_clusterer_quality.py)
# --------------------------------------------------------------------------------------------------


def loads() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def running_tasks() -> str:
    """``running/total`` scheduling entities from /proc/loadavg (an instantaneous view, unlike the averages)."""
    try:
        return Path("/proc/loadavg").read_text().split()[3]
    except OSError:
        return "?"


def busy_share_now(sample_s: float = 3.0) -> float:
    """Share of the machine's CPU in use over the next ``sample_s`` seconds (we run nothing meanwhile)."""
    before = machine_busy_seconds()["busy"]
    time.sleep(sample_s)
    return (machine_busy_seconds()["busy"] - before) / (sample_s * (os.cpu_count() or 1))


def wait_for_quiet(
    max_load: float, max_wait_s: float, max_busy: float = 0.15, poll_s: float = 10.0, log=print
) -> float:
    """Poll until the 1-minute load average is <= ``max_load`` and the CPU is idle right now (other
    processes use at most ``max_busy`` of it over a 3 s sample), or ``max_wait_s`` passed.

    The load average lags by a minute and still counts our own previous run; the instantaneous sample
    does not. Returns the seconds waited.
    """
    started = time.monotonic()
    announced = False
    while time.monotonic() - started < max_wait_s:
        busy = busy_share_now()
        if os.getloadavg()[0] <= max_load and busy <= max_busy:
            break
        if not announced:
            log(
                f"    load {loads()} (limit {max_load}), CPU {busy:.0%} busy (limit {max_busy:.0%}): waiting up "
                f"to {max_wait_s:.0f} s for the machine to quieten"
            )
            announced = True
        time.sleep(poll_s)
    return round(time.monotonic() - started, 1)


def machine_header() -> dict:
    import torch

    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.is_available(),
        "load_at_start": loads(),
    }


def header_lines(header: dict) -> list[str]:
    return [
        f"date: {header['date']}",
        f"machine: {header['cpu']}, {header['cores']} cores, {header['ram_gib']} GiB RAM, CUDA: {header['cuda']}",
        (
            f"python {header['python']}, torch {header['torch']}, torch.get_num_threads() = {header['torch_threads']} "
            f"(interop {header['torch_interop_threads']})"
        ),
        f"load averages (1/5/15 min): at start {header['load_at_start']}, at end {header.get('load_at_end')}",
    ]


def markdown_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    widths = [
        max(len(str(c)), *(len(str(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)
    ]
    out = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|"
        + "|".join(":" + "-" * (w + 1) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|",
    ]
    for r in rows:
        out.append(
            "| "
            + " | ".join(
                str(v).ljust(w) if i == 0 else str(v).rjust(w)
                for i, (v, w) in enumerate(zip(r, widths, strict=True))
            )
            + " |"
        )
    return out


def run_subprocess_case(script: Path, case: dict, *, timeout_s: float = 1800) -> dict:
    """Run ``script --one JSON`` in a fresh interpreter; its last stdout line is the JSON result."""
    command = [sys.executable, str(script), "--one", json.dumps(case)]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"case {case} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")
    last = [line for line in completed.stdout.splitlines() if line.startswith("{")][-1]
    return json.loads(last)


def measure_with_load_policy(
    run, *, max_load: float, max_wait_s: float, attempts: int, max_others: float = 1.0, log=print
) -> dict:
    """Wait for a quiet machine, run, and run again if the machine was busy.

    ``run()`` returns a dict with ``load_start`` (the 1-minute load when its clock started) and, if it
    measured it, ``others_share`` (the share of the CPU that other processes took during the run). An
    attempt is *busy* when its load at the start was above ``max_load`` or others took more than
    ``max_others``. The kept result is the first attempt that was not busy, else the least busy one;
    every attempt is listed under ``attempts``.
    """

    def busy(result: dict) -> bool:
        return result["load_start"][0] > max_load or result.get("others_share", 0.0) > max_others

    tried = []
    for attempt in range(1, attempts + 1):
        waited = wait_for_quiet(max_load, max_wait_s, max_busy=min(max_others, 1.0), log=log)
        result = run()
        result["waited_s"] = waited
        result["attempt"] = attempt
        tried.append(result)
        if not busy(result):
            break
        log(
            f"    busy: load {result['load_start'][0]} at the start (limit {max_load}), others took "
            f"{result.get('others_share', 0.0):.0%} of the CPU (limit {max_others:.0%}): measuring again"
        )
    quiet = [r for r in tried if not busy(r)]
    kept = dict(
        quiet[0] if quiet else min(tried, key=lambda r: (r.get("others_share", 0.0), r["load_start"][0]))
    )
    kept["busy"] = busy(kept)
    keys = ("load_start", "load_end", "others_share", "attempt", "patches_per_s", "first_seconds")
    kept["attempts"] = [{k: r[k] for k in keys if k in r} for r in tried]
    return kept


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def build_naip_grid(out_path: Path, tiles_x: int, tiles_y: int) -> dict:
    """Lay NAIP years side by side (row-major, cycling through the years) under the first one's georeference.

    Written with rasterio window writes, one cell at a time (each source cropped to the common size).
    """
    import rasterio
    from rasterio.windows import Window

    paths = sorted(glob.glob(str(NAIP_DIR / "*.tif")))
    if not paths:
        raise FileNotFoundError(f"no NAIP scenes in {NAIP_DIR}")
    shapes = []
    for path in paths:
        with rasterio.open(path) as src:
            shapes.append((src.height, src.width))
    cell_h, cell_w = min(h for h, _ in shapes), min(w for _, w in shapes)
    with rasterio.open(paths[0]) as first:
        profile = {
            "driver": "GTiff",
            "width": tiles_x * cell_w,
            "height": tiles_y * cell_h,
            "count": first.count,
            "dtype": first.dtypes[0],
            "crs": first.crs,
            "transform": first.transform,
            "nodata": first.nodata,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "DEFLATE",
            "interleave": "pixel",
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(f".{out_path.name}.partial")
    used = []
    with rasterio.open(partial, "w", **profile) as dst:
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                path = paths[(ty * tiles_x + tx) % len(paths)]
                used.append(Path(path).name)
                with rasterio.open(path) as src:
                    cell = src.read(window=Window(0, 0, cell_w, cell_h))
                dst.write(cell, window=Window(tx * cell_w, ty * cell_h, cell_w, cell_h))
    os.replace(partial, out_path)
    return {
        "path": str(out_path),
        "width": profile["width"],
        "height": profile["height"],
        "bands": profile["count"],
        "sources": used,
    }


def tile_once(scene: str, store: str, chunk_size: int) -> None:
    from eoseg.tile.stage import tile_scene

    if not Path(store).exists():
        tile_scene(scene, store, chunk_size=chunk_size, show_progress=False)


# --------------------------------------------------------------------------------------------------
# Cases (run in a fresh subprocess)
# --------------------------------------------------------------------------------------------------


def machine_busy_seconds() -> dict:
    """Cumulative CPU seconds of the whole machine (all processes, all cores) from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    return {"busy": (user + nice + system + irq + softirq) / tick, "steal": steal / tick}


def others_share(before: dict, after: dict, own_cpu_s: float, wall_s: float) -> dict:
    """Share of the machine's CPU capacity that *other* processes used while we measured (0 = none).

    ``busy`` CPU time of the whole machine minus our own processes' CPU time, over wall x cores; the
    hypervisor's steal time is reported separately. A direct measure of interference, unlike the load
    average (which lags by a minute and counts our own previous run).
    """
    capacity = wall_s * (os.cpu_count() or 1)
    others = max(0.0, after["busy"] - before["busy"] - own_cpu_s)
    return {
        "others_share": round(others / capacity, 3),
        "steal_share": round((after["steal"] - before["steal"]) / capacity, 3),
    }


def _cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


def case_train(case: dict) -> dict:
    import inspect

    import numpy as np
    import torch

    from eo_models.clusterer.losses import random_derangement
    from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
    from eo_models.clusterer.train import (
        ClustererTrainingParams,
        _build_optimizer,
        batch_indices_for_epoch,
        clusterer_training_step,
    )
    from eoseg.train.patches import ZarrPatchSource
    from eoseg.train.stage import train_on_stores

    params = dict(case["params"], device="cpu")
    training = ClustererTrainingParams(**params)
    from eo_models.precision import prepare_model, resolve_precision, to_memory_format

    precision = resolve_precision(training.precision, torch.device("cpu"))
    store, max_patches = case["store"], case["max_patches"]
    result: dict = {"torch_threads": torch.get_num_threads()}
    if case["mode"] == "eoseg":
        model_path = os.path.join(case["workdir"], f"speed_{case['scene']}_{os.getpid()}.pt")
        result["load_start"] = loads()
        busy0, cpu0, started = machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
        summary = train_on_stores(
            "clusterer", [store], model_path, params=params, max_patches=max_patches, overwrite=True
        )
        seconds = time.perf_counter() - started
        result.update(cpu_s=_cpu_seconds() - cpu0, load_end=loads())
        result.update(others_share(busy0, machine_busy_seconds(), result["cpu_s"], seconds))
        os.remove(model_path)
        result.update(
            patches=summary["patches"],
            seconds=seconds,
            loop_seconds=summary["seconds"],
            final_loss=summary["final_loss"],
        )
    else:  # plain PyTorch: the same patches, in memory as one tensor; the same loop as train_clusterer
        source = ZarrPatchSource(store, training.patch_size, max_patches=max_patches, seed=training.seed)
        patches = torch.from_numpy(source.read(list(range(len(source)))))
        in_channels = patches.shape[1]
        result["load_start"] = loads()
        busy0, cpu0, started = machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(training.seed)
            model = SingleSceneClusterer(
                ClustererConfig(in_channels=in_channels, num_classes=training.num_classes)
            )
        prepare_model(model.train(), precision)
        optimizer = _build_optimizer(training, model)
        generator = np.random.default_rng(training.seed)
        # The training step takes the derangement (one forward, features[permutation]) in the current
        # eo_models, the shuffled batch (a second forward) in the first version; follow whichever is there.
        takes_permutation = "permutation" in inspect.signature(clusterer_training_step).parameters
        result["step_signature"] = "permutation" if takes_permutation else "shuffled batch"
        losses_seen = []
        for _ in range(training.epochs):
            for indices in batch_indices_for_epoch(len(patches), training.batch_size, generator):
                batch = to_memory_format(patches[torch.from_numpy(indices)], precision)
                total = torch.zeros(())
                for _ in range(training.iterations):
                    permutation = torch.as_tensor(random_derangement(len(indices), generator))
                    second = permutation if takes_permutation else batch[permutation]
                    losses = clusterer_training_step(model, optimizer, batch, second, precision=precision)
                    total += losses.clustering + losses.contrastive
                losses_seen.append(total.item() / training.iterations)
        seconds = time.perf_counter() - started
        result.update(cpu_s=_cpu_seconds() - cpu0, load_end=loads())
        result.update(others_share(busy0, machine_busy_seconds(), result["cpu_s"], seconds))
        result.update(patches=len(patches), seconds=seconds, loop_seconds=seconds, final_loss=losses_seen[-1])
    patch_iterations = result["patches"] * training.epochs * training.iterations
    result["patch_iterations"] = patch_iterations
    result["patches_per_s"] = patch_iterations / result["seconds"]
    result["loop_patches_per_s"] = patch_iterations / result["loop_seconds"]
    return result


def case_infer(case: dict) -> dict:
    import numpy as np
    import torch

    from eoseg.predict import stage as inference
    from eoseg.store.layout import read_store_info

    repeats = case["repeats"]
    info = read_store_info(case["store"])
    megapixels = info.height * info.width / 1e6
    result: dict = {"megapixels": megapixels, "runs": []}
    if case.get("torch_threads"):
        torch.set_num_threads(case["torch_threads"])
    result["torch_threads_main"] = torch.get_num_threads()

    if case["mode"] == "bare":
        from eo_models.predict import load_predictor
        from eoseg.store.layout import read_image_window

        # The model bands and validity as the stage sees them (an alpha band is a mask, not a band).
        block, valid = read_image_window(case["store"], info, slice(0, info.height), slice(0, info.width))
        result["load_start"] = loads()
        started = time.perf_counter()
        predictor = load_predictor(case["model"], device="cpu", precision=case.get("precision", "fp32"))
        result["model_load_s"] = time.perf_counter() - started
        for _ in range(repeats):
            load0, busy0, cpu0, t0 = loads(), machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
            if case.get("tile"):  # the same forward, tile by tile over the in-memory array (no halo, no I/O)
                size = case["tile"]
                labels = np.empty(block.shape[1:], np.uint8)
                for row in range(0, block.shape[1], size):
                    for col in range(0, block.shape[2], size):
                        window = (slice(row, row + size), slice(col, col + size))
                        labels[window] = predictor.predict(block[(slice(None), *window)], valid[window])
            else:
                labels = predictor.predict(block, valid)
            seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
            run = {"seconds": seconds, "cpu_s": cpu, "load_start": load0, "load_end": loads()}
            run.update(others_share(busy0, machine_busy_seconds(), cpu, seconds))
            result["runs"].append(run)
        result["load_end"] = loads()
        result["label_histogram"] = np.bincount(labels.ravel(), minlength=8).tolist()
        result["others_share"] = max(run["others_share"] for run in result["runs"])
        result["first_seconds"] = result["model_load_s"] + result["runs"][0]["seconds"]
        return result

    from eoseg.compute.cluster import ClusterSpec, connect, dask_cluster

    def workers_cpu(client) -> float:
        """CPU seconds used so far by the cluster's worker processes (0 without a cluster)."""
        if client is None:
            return 0.0

        def worker_cpu():
            import resource

            usage = resource.getrusage(resource.RUSAGE_SELF)
            return usage.ru_utime + usage.ru_stime

        return sum(client.run(worker_cpu).values())

    def timed_runs(client) -> None:
        for index in range(repeats):
            labels_uri = os.path.join(case["workdir"], f"labels_{os.getpid()}_{index}.zarr")
            workers0 = workers_cpu(client)
            load0, busy0, cpu0, t0 = loads(), machine_busy_seconds(), _cpu_seconds(), time.perf_counter()
            inference.predict_store(
                case["store"],
                case["model"],
                labels_uri,
                client=client,
                attention_pooling=case["pooling"],
                precision=case.get("precision", "fp32"),
                show_progress=False,
            )
            seconds, busy1, main_cpu = time.perf_counter() - t0, machine_busy_seconds(), _cpu_seconds() - cpu0
            run = {"seconds": seconds, "cpu_s_main": main_cpu, "load_start": load0, "load_end": loads()}
            run["cpu_s_workers"] = workers_cpu(client) - workers0
            run["cpu_s"] = main_cpu + run["cpu_s_workers"]
            run.update(others_share(busy0, busy1, run["cpu_s"], seconds))
            result["runs"].append(run)
            shutil.rmtree(labels_uri, ignore_errors=True)

    if case["executor"] == "threads":
        result["load_start"] = loads()
        timed_runs(None)
        result["torch_threads_workers"] = [torch.get_num_threads()] * 2
        result["model_loads"] = inference.model_load_counts()
    else:
        started = time.perf_counter()
        with (
            dask_cluster(ClusterSpec(n_workers=2, threads_per_worker=1)) as address,
            connect(address) as client,
        ):
            result["cluster_startup_s"] = time.perf_counter() - started

            def worker_state():
                import os as _os

                import torch as _torch

                return {
                    "torch_threads": _torch.get_num_threads(),
                    "OMP_NUM_THREADS": _os.environ.get("OMP_NUM_THREADS"),
                }

            def worker_loads():
                from eoseg.predict.stage import model_load_counts

                return model_load_counts()

            state = client.run(worker_state)
            result["worker_state"] = state
            result["torch_threads_workers"] = [s["torch_threads"] for s in state.values()]
            result["load_start"] = loads()
            timed_runs(client)
            result["model_loads"] = client.run(worker_loads)
    result["load_end"] = loads()
    result["first_seconds"] = result["runs"][0]["seconds"]
    result["others_share"] = max(run["others_share"] for run in result["runs"])
    return result


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def prepare_inputs(args, workdir: Path) -> dict:
    from eo_models.checkpoint import save_checkpoint
    from eo_models.clusterer.train import ClustererTrainingParams, train_clusterer
    from eoseg.train.patches import ZarrPatchSource

    naip_one = min(glob.glob(str(NAIP_DIR / "*.tif")))
    inputs = {
        "spacenet": {"scene": str(SPACENET), "store": str(workdir / "spacenet.zarr")},
        "naip": {"scene": naip_one, "store": str(workdir / "naip_one.zarr")},
    }
    for item in inputs.values():
        tile_once(item["scene"], item["store"], 1024)
    tiles_x, tiles_y = (int(v) for v in args.grid.lower().split("x"))
    big = workdir / f"naip_grid_{tiles_x}x{tiles_y}.tif"
    if not big.exists():
        built = build_naip_grid(big, tiles_x, tiles_y)
    else:
        import rasterio

        with rasterio.open(big) as src:
            built = {"path": str(big), "width": src.width, "height": src.height, "bands": src.count}
    big_store = workdir / f"naip_grid_{tiles_x}x{tiles_y}_c{args.chunk_size}.zarr"
    tile_once(str(big), str(big_store), args.chunk_size)
    model = workdir / "naip_grid_model.pt"
    if not model.exists():
        # A real (briefly trained) checkpoint; speed does not depend on how well it is trained.
        params = ClustererTrainingParams(epochs=1, iterations=2, batch_size=4, device="cpu")
        source = ZarrPatchSource(str(big_store), params.patch_size, max_patches=8, seed=0)
        checkpoint = train_clusterer(
            source,
            in_channels=source.band_count,
            params=params,
            band_mean=source.band_mean,
            band_std=source.band_std,
        )
        save_checkpoint(str(model), checkpoint)
    inputs["infer"] = {"scene": str(big), "store": str(big_store), "model": str(model), **built}
    return inputs


def fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def load_str(result: dict) -> str:
    start, end = result.get("load_start"), result.get("load_end")
    others = f", others {result['others_share']:.0%}" if "others_share" in result else ""
    return f"{start[0]:.2f} -> {end[0]:.2f}{others}" + (" (busy)" if result.get("busy") else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("train", "infer"), help="run one half only")
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR)
    parser.add_argument("--results", default=str(HERE / "results"))
    parser.add_argument("--grid", default="2x2", help="inference scene: NAIP years side by side, COLSxROWS")
    parser.add_argument(
        "--chunk-size", type=int, default=1024, help="tile store chunk edge (eoseg's default 1024)"
    )
    parser.add_argument("--train-repeats", type=int, default=3, help="fresh-process runs per training case")
    parser.add_argument(
        "--infer-repeats",
        type=int,
        default=5,
        help="runs per inference case in one process (run 1 is cold: model load, warm-up)",
    )
    parser.add_argument("--iterations", type=int, default=5, help="J for the training cases")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="precisions to measure (eo_models.precision)"
    )
    parser.add_argument("--max-patches", type=int, default=32)
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="re-run a case when other processes took more than this share of the CPU during it",
    )
    parser.add_argument(
        "--max-wait", type=float, default=600, help="seconds to wait for a quiet machine per case"
    )
    parser.add_argument(
        "--attempts", type=int, default=4, help="runs of a case that started on a busy machine"
    )
    parser.add_argument(
        "--no-experiments",
        action="store_true",
        help="skip the extra rows (threaded stage with 1 torch thread)",
    )
    args = parser.parse_args()

    if args.one:
        case = json.loads(args.one)
        result = case_train(case) if case["kind"] == "train" else case_infer(case)
        print(json.dumps(result))
        return

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    header = machine_header()
    print("\n".join(header_lines(header)))
    print(f"preparing inputs in {workdir} ...", flush=True)
    inputs = prepare_inputs(args, workdir)
    script = Path(__file__).resolve()
    policy = {
        "max_load": args.max_load,
        "max_wait_s": args.max_wait,
        "attempts": args.attempts,
        "max_others": args.max_others,
    }
    report: dict = {"header": header, "args": vars(args), "inputs": inputs, "train": [], "infer": []}

    def run_case(case: dict) -> dict:
        def once():
            return run_subprocess_case(script, case)

        return measure_with_load_policy(once, **policy)

    # ---- training --------------------------------------------------------------------------------
    train_params = {"epochs": 1, "iterations": args.iterations, "batch_size": 16, "patch_size": 64}
    if args.only in (None, "train"):
        for scene, precision, mode in [
            (scene, precision, mode)
            for scene in ("spacenet", "naip")
            for precision in args.precisions.split(",")
            for mode in ("eoseg", "plain")
        ]:
            runs = []
            for repeat in range(args.train_repeats):
                print(f"  train {scene} {mode} run {repeat + 1}/{args.train_repeats} ...", flush=True)
                case = {
                    "kind": "train",
                    "scene": scene,
                    "mode": mode,
                    "store": inputs[scene]["store"],
                    "params": {**train_params, "precision": precision},
                    "max_patches": args.max_patches,
                    "workdir": str(workdir),
                }
                result = run_case(case)
                print(
                    f"    {result['patches_per_s']:.2f} patch-it/s in {result['seconds']:.1f} s, "
                    f"load {load_str(result)}",
                    flush=True,
                )
                runs.append(result)
            report["train"].append(
                {
                    "scene": scene,
                    "mode": mode,
                    "precision": precision,
                    "runs": runs,
                    "median_patches_per_s": statistics.median(r["patches_per_s"] for r in runs),
                }
            )

    # ---- inference -------------------------------------------------------------------------------
    if args.only in (None, "infer"):
        infer = inputs["infer"]
        base = {
            "kind": "infer",
            "scene": infer["scene"],
            "store": infer["store"],
            "model": infer["model"],
            "workdir": str(workdir),
            "repeats": args.infer_repeats,
        }
        cases = [("bare forward (whole array, 1 process)", {"mode": "bare", "torch_threads": 2})]
        for precision in args.precisions.split(","):
            cases += [
                (
                    f"bare forward, {args.chunk_size} px tiles in memory, {precision}",
                    {"mode": "bare", "torch_threads": 2, "tile": args.chunk_size, "precision": precision},
                ),
                (
                    f"stage tile, threads, {precision}",
                    {"mode": "stage", "pooling": "tile", "executor": "threads"},
                ),
                (
                    f"stage scene, threads, {precision}",
                    {"mode": "stage", "pooling": "scene", "executor": "threads"},
                ),
                (
                    f"stage tile, LocalCluster 2x1, {precision}",
                    {"mode": "stage", "pooling": "tile", "executor": "cluster"},
                ),
                (
                    f"stage scene, LocalCluster 2x1, {precision}",
                    {"mode": "stage", "pooling": "scene", "executor": "cluster"},
                ),
            ]
            for _, extra in cases:
                extra.setdefault("precision", precision)
        if not args.no_experiments:
            cases += [
                (
                    "experiment: stage tile, threads, torch 1 thread",
                    {"mode": "stage", "pooling": "tile", "executor": "threads", "torch_threads": 1},
                ),
                ("experiment: bare forward, torch 1 thread", {"mode": "bare", "torch_threads": 1}),
            ]
        for name, extra in cases:
            print(f"  infer: {name} ...", flush=True)
            result = run_case({**base, **extra})
            result["name"], result["case"] = name, extra
            steady = [r["seconds"] for r in result["runs"][1:]] or [result["runs"][0]["seconds"]]
            result["steady_seconds"] = statistics.median(steady)
            result["first_mp_per_s"] = result["megapixels"] / result["first_seconds"]
            result["steady_mp_per_s"] = result["megapixels"] / result["steady_seconds"]
            print(
                f"    first {result['first_seconds']:.1f} s, steady {result['steady_seconds']:.1f} s = "
                f"{result['steady_mp_per_s']:.3f} MP/s, load {load_str(result)}",
                flush=True,
            )
            report["infer"].append(result)

    header["load_at_end"] = loads()
    as_json, as_markdown = write_report(Path(args.results), "clusterer_speed", report, render(report))
    print(f"\nwrote {as_json} and {as_markdown}")


def render(report: dict) -> list[str]:
    header = report["header"]
    lines = ["# Clusterer speed", ""]
    lines += [f"- {line}" for line in header_lines(header)]
    lines.append(
        f"- a case is re-run (up to {report['args']['attempts']} attempts) when the 1-minute load was > "
        f"{report['args']['max_load']} when it started or other processes took more than "
        f"{report['args']['max_others']:.0%} of the CPU during it; `load` = 1-minute load average at start -> "
        "end of the kept run, `others` = share of the machine's CPU that other processes used during it (the "
        "highest over the case's runs; from /proc/stat); `(busy)` = every attempt was busy, the least busy is shown"
    )
    lines.append("")
    if report["train"]:
        params = report["args"]
        lines += [
            "## Training throughput (CPU)",
            "",
            (
                f"Default parameters except a short run: patch 64, batch B = 16, I = 1 epoch, "
                f"J = {params['iterations']}, max_patches = {params['max_patches']}, Adam 1e-3, K = 8. "
                "Throughput = patch-iterations per second (each of the J updates on a batch of B patches "
                "counts B). `eoseg` = `train_on_stores` end to end (patch index over the Zarr store, "
                "reads, normalisation, training loop, checkpoint written); `plain` = the same model, losses, "
                "optimiser, batches and derangements on the same patches already in memory as one tensor. "
                f"Median of {params['train_repeats']} fresh-process runs. `cpu/wall` = CPU seconds of the "
                "process per wall second (2.0 = both cores busy for this run). `final loss` = the last batch's "
                "mean L + L': equal for both loops when they do the same computation."
            ),
            "",
        ]
        rows = []
        by_key = {(t["scene"], t["mode"], t.get("precision", "fp32")): t for t in report["train"]}
        for entry in report["train"]:
            precision = entry.get("precision", "fp32")
            plain = by_key.get((entry["scene"], "plain", precision))
            ratio = entry["median_patches_per_s"] / plain["median_patches_per_s"] if plain else None
            runs = entry["runs"]
            bands = "1-band uint16 900x900" if entry["scene"] == "spacenet" else "4-band uint8 934x724"
            rows.append(
                [
                    f"{entry['scene']} ({bands})",
                    f"{entry['mode']}, {precision}",
                    runs[0]["patches"],
                    runs[0]["patch_iterations"],
                    " / ".join(f"{r['seconds']:.1f}" for r in runs),
                    fmt(entry["median_patches_per_s"]),
                    fmt(ratio) if entry["mode"] == "eoseg" else "1.00",
                    " / ".join(f"{r['cpu_s'] / r['seconds']:.2f}" for r in runs),
                    f"{runs[0]['final_loss']:.5f}",
                    "; ".join(load_str(r) for r in runs),
                ]
            )
        lines += markdown_table(
            [
                "scene",
                "loop",
                "patches",
                "patch-its",
                "wall s (runs)",
                "patch-its/s",
                "eoseg/plain",
                "cpu/wall",
                "final loss",
                "load",
            ],
            rows,
        )
        lines.append("")
    if report["infer"]:
        infer = report["inputs"]["infer"]

        def find(**wanted):
            return next(
                (r for r in report["infer"] if all(r["case"].get(k) == v for k, v in wanted.items())), None
            )

        bare = find(mode="bare", torch_threads=2, tile=None)
        bare_rate = bare["steady_mp_per_s"] if bare else None

        def tiled_rate_for(precision):
            tiled = find(mode="bare", torch_threads=2, tile=report["args"]["chunk_size"], precision=precision)
            return tiled["steady_mp_per_s"] if tiled else None

        def fp32_stage_rate(case):
            twin = find(**{**case, "precision": "fp32"})
            return twin["steady_mp_per_s"] if twin else None

        lines += [
            "## Inference throughput (CPU)",
            "",
            (
                f"Scene: {infer['width']} x {infer['height']} px ({infer['width'] * infer['height'] / 1e6:.2f} MP), "
                f"{infer['bands']} bands uint8, NAIP years side by side (`{Path(infer['scene']).name}`); "
                f"tile store chunks {report['args']['chunk_size']} px, halo 16 px (the clusterer's). "
                "`first` = the first run in a fresh process (model load, torch/oneDNN warm-up; for the stage "
                "also the model load in every worker); `steady` = median of the later runs in the same "
                "process/cluster (the model cached). Cluster start-up is not timed (warm cluster). "
                "`ratio` = MP/s / the bare forward's steady MP/s (whole array in memory, as the issue "
                "defines the reference); `ratio tiled` = the same against the bare forward over the in-memory "
                "array in chunk-sized tiles (no halo, no I/O, no Dask), which is faster than the whole-array "
                "forward on this CPU (smaller activations stay in cache). Target: ratio >= 0.70 for the "
                "one-pass (`tile`) mode; the `scene` mode runs the convolutions twice (pooling pass + "
                "labelling pass), so ~0.5 is its ceiling. `target` gives the verdict against both references "
                "(whole / tiled)."
            ),
            "",
        ]
        rows = []
        for r in report["infer"]:
            threads = r.get("torch_threads_workers")
            if r["case"]["mode"] == "bare":
                threads_s = f"{r['torch_threads_main']} (1 process)"
            elif r["case"]["executor"] == "threads":
                threads_s = f"2 dask threads x {r['torch_threads_main']} torch"
            else:
                threads_s = f"2 workers x 1 thread x {threads} torch"
            ratio_first = r["first_mp_per_s"] / bare_rate if bare_rate else None
            ratio_steady = r["steady_mp_per_s"] / bare_rate if bare_rate else None
            tiled_rate = tiled_rate_for(r["case"].get("precision", "fp32"))
            fp32_tiled = tiled_rate_for("fp32")
            ratio_tiled = r["steady_mp_per_s"] / tiled_rate if tiled_rate else None
            ratio_fp32_tiled = r["steady_mp_per_s"] / fp32_tiled if fp32_tiled else None
            fp32_twin = fp32_stage_rate(r["case"]) if r["case"]["mode"] == "stage" else None
            ratio_fp32_stage = r["steady_mp_per_s"] / fp32_twin if fp32_twin else None
            verdict = ""
            if r["case"]["mode"] == "stage" and not r["name"].startswith("experiment"):
                target = 0.7 if r["case"]["pooling"] == "tile" else 0.5

                def word(ratio, target=target):
                    return "-" if ratio is None else ("PASS" if ratio >= target else "MISS")

                verdict = f"{word(ratio_steady)} / {word(ratio_tiled)} (>= {target})"
            r["ratios"] = {
                "first": ratio_first,
                "steady": ratio_steady,
                "steady_vs_tiled": ratio_tiled,
                "steady_vs_fp32_tiled": ratio_fp32_tiled,
                "steady_vs_fp32_stage": ratio_fp32_stage,
            }
            rows.append(
                [
                    r["name"],
                    threads_s,
                    fmt(r["first_seconds"], 1),
                    fmt(r["steady_seconds"], 1),
                    fmt(r["first_mp_per_s"], 3),
                    fmt(r["steady_mp_per_s"], 3),
                    fmt(ratio_first),
                    fmt(ratio_steady),
                    fmt(ratio_tiled),
                    fmt(ratio_fp32_tiled),
                    fmt(ratio_fp32_stage),
                    verdict,
                    load_str(r),
                ]
            )
        lines += markdown_table(
            [
                "case",
                "threads",
                "first s",
                "steady s",
                "first MP/s",
                "steady MP/s",
                "ratio first",
                "ratio steady",
                "ratio tiled",
                "vs bare fp32 tiled",
                "vs fp32 stage",
                "target",
                "load",
            ],
            rows,
        )
        lines.append("")
        lines.append(
            "For `scene` the target column is the two-pass ceiling of 0.5, not the issue's 0.7 (which is "
            "for the one-pass mode)."
        )
        lines.append("")
    return lines


if __name__ == "__main__":
    main()
