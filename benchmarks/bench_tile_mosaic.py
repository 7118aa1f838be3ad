"""Benchmark eoseg's tile stage (GeoTIFF -> Zarr v3) and mosaic stage (Zarr -> COG) against GDAL.

Run ``python benchmarks/bench_tile_mosaic.py`` (``make bench``); see ``benchmarks/README.md``.

Scenes are mosaics of the real NAIP scenes (``benchmarks/build_large_scene.py``) at 0.25x, 1x (>= 8000 x
8000 px) and optionally 4x the pixel count, kept under ``--workdir`` (default ``/tmp/eoseg-bench``).
Every measurement runs in a fresh Python subprocess (this script with ``--one CASE``), so one run's peak
RSS cannot leak into the next; the child prints one JSON line that the parent collects. Peak RSS is the
kernel's high-water mark of each process's address space (``VmHWM`` in ``/proc/PID/status``), cross-checked
by a psutil sampler that walks the process tree every 0.1 s (which also gives the peak of the tree's
*total* RSS).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_machine import cpu_model, ram_gib
from build_large_scene import SIZES, build_named

MiB = 2**20
GiB = 2**30
CHUNK_SIZE = 1024
STORE_CLEVEL = 1  # the store's Blosc zstd level (eoseg.store.layout.create_store); GDAL is run at the same
EOSEG = [sys.executable, "-m", "cli.main"]
RESULT_DIR = HERE / "results"

# Targets from the issue.
TARGET_TILE_VS_GDAL = 1.0  # eoseg tile time <= gdal_translate -of Zarr time
TARGET_TILE_RSS = 1 * GiB  # peak RSS of every process
TARGET_RSS_FLAT = 1.25  # "flat": peak RSS grows by at most 25 % when the scene grows 4x
TARGET_MOSAIC_VS_GDAL = 1.2  # eoseg mosaic time <= 1.2 x gdal_translate -of COG time

TILE_CASES = ("tile-command", "tile-threads", "tile-cluster", "gdal-zarr", "rasterio-read")
MOSAIC_CASES = ("mosaic-command", "mosaic-eoseg", "gdal-cog", "gdal-cog-mt")
PROFILE_CASES = ("tile-breakdown",)  # not timed against GDAL: where a tile chunk's time goes
CASE_LABELS = {
    "tile-command": "eoseg tile (whole command, no Prefect API: direct)",
    "tile-threads": "eoseg tile_scene, Dask threads (client=None)",
    "tile-cluster": "eoseg tile_scene, LocalCluster 2 procs x 1 thread",
    "mosaic-command": "eoseg mosaic --band 1 (whole command, direct)",
    "gdal-zarr": "ref: gdal_translate -of Zarr (1 process)",
    "rasterio-read": "ref: rasterio read of the whole file",
    "mosaic-eoseg": "eoseg mosaic_to_cog(band=1)",
    "gdal-cog": "ref: gdal_translate -of COG (band-1 GeoTIFF)",
    "gdal-cog-mt": "ref: same, -co NUM_THREADS=ALL_CPUS",
}


# --------------------------------------------------------------------------------------------------------
# Memory sampling
# --------------------------------------------------------------------------------------------------------


class TreeSampler:
    """Every ``interval`` s: RSS of this process and all its descendants (max per pid, max of the sum)."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.root = psutil.Process()
        self.peak_by_pid: dict[int, int] = {}
        self.hwm_by_pid: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        psutil = self._psutil
        total = 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            hwm = vm_hwm(process.pid)
            if hwm > self.hwm_by_pid.get(process.pid, 0):
                self.hwm_by_pid[process.pid] = hwm
            if rss > self.peak_by_pid.get(process.pid, 0):
                self.peak_by_pid[process.pid] = rss
            if process.pid not in self.names:
                try:
                    self.names[process.pid] = " ".join(process.cmdline()[:3])[:80]
                except psutil.Error:
                    self.names[process.pid] = "?"
        self.peak_total = max(self.peak_total, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def vm_hwm(pid: int | str = "self") -> int:
    """Peak RSS ("high-water mark") of a process's address space, in bytes, from ``/proc/PID/status``.

    Not ``getrusage().ru_maxrss``: Linux carries the parent's peak into a child's ``ru_maxrss`` across
    fork/vfork + exec, so a fresh subprocess of a big parent reports the parent's peak. ``VmHWM`` belongs to
    the address space, which ``exec`` replaces, so it is the process's own peak.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def self_maxrss() -> int:
    return vm_hwm("self")


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    times = os.times()
    return times.user + times.system


def children_cpu_seconds() -> float:
    times = os.times()
    return times.children_user + times.children_system


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


# --------------------------------------------------------------------------------------------------------
# One measurement (runs in a fresh subprocess)
# --------------------------------------------------------------------------------------------------------


def _paths(workdir: Path, size: str) -> dict[str, Path]:
    d = workdir / size
    return {
        "dir": d,
        "scene": workdir / f"naip_{size}.tif",
        "store_threads": d / "eoseg_threads.zarr",
        "store_cluster": d / "eoseg_cluster.zarr",
        "store_command": d / "eoseg_command.zarr",
        "cog_command": d / "eoseg_command_cog.tif",
        "gdal_zarr": d / "gdal.zarr",
        "band1": d / "band1.tif",
        "cog_eoseg": d / "eoseg_cog.tif",
        "cog_gdal": d / "gdal_cog.tif",
        "cog_gdal_mt": d / "gdal_cog_mt.tif",
    }


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _direct_env() -> dict[str, str]:
    """A user's environment with no Prefect API configured: eoseg runs its stages directly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    return dict(env, PREFECT_HOME=str(Path(tempfile.gettempdir()) / "eoseg-bench-prefect-home"),
                PYTHONPATH=str(HERE.parent))  # fmt: skip


def tile_breakdown(scene: str, store: Path, chunk_size: int) -> dict:
    """Where the tile stage's time goes: every chunk of ``scene`` tiled in turn in one thread (not the main
    thread: numcodecs' Blosc then compresses single-threaded, as in the stage's chunk threads), with each
    step of :func:`eoseg.tile.stage.tile_chunk` (read, moments, :func:`eoseg.store.layout.write_chunk`
    of image and valid, the done flag) timed on its own: wall seconds and the thread's CPU seconds,
    summed over the chunks (CPU seconds are the steadier figure on a busy machine)."""
    import threading

    import numpy as np

    from eoseg.scene.sources import open_scene_sources
    from eoseg.store.layout import VALID_VARIABLE, write_chunk
    from eoseg.store.lifecycle import mark_chunk_done, open_store_output
    from eoseg.tile.stage import BandMoments, TileChunkJob, _store_info_for, read_tile_window

    names = ("open scene + create store", "read window + validity (GDAL decode)", "band moments",
             "write image chunk (blosc zstd)", "write valid chunk", "chunk_done flag")  # fmt: skip
    steps, steps_cpu = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    chunks: list[int] = []

    def run() -> None:
        marks = [(time.perf_counter(), time.thread_time())]

        def step(name: str) -> None:
            marks.append((time.perf_counter(), time.thread_time()))
            steps[name] += marks[-1][0] - marks[-2][0]
            steps_cpu[name] += marks[-1][1] - marks[-2][1]

        source = open_scene_sources(scene).scene
        output = open_store_output(str(store), _store_info_for(source, chunk_size), overwrite=True)
        step(names[0])
        for index, window in output.info.grid.windows():
            job = TileChunkJob(source.uri, output.staging, index, window, source.nodata, source.band_indexes)
            block, valid = read_tile_window(source.uri, window, job=job)
            step(names[1])
            BandMoments.of_block(block, valid)
            step(names[2])
            write_chunk(output.staging, "image", (0, *index), block)
            step(names[3])
            write_chunk(output.staging, VALID_VARIABLE, index, valid.view(np.uint8))
            step(names[4])
            mark_chunk_done(output.staging, index)
            step(names[5])
        chunks.append(len(output.info.grid))
        _remove(Path(output.staging))

    _remove(store)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    thread = threading.Thread(target=run, name="eoseg-chunk-breakdown")
    thread.start()
    thread.join()
    wall = time.perf_counter() - start
    _remove(store)
    return {"wall_s": wall, "cpu_s": cpu_seconds() - cpu0, "peak_rss": self_maxrss(), "steps_s": steps,
            "steps_cpu_s": steps_cpu, "chunks": chunks[0]}  # fmt: skip


def _run_command(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run an external command under the tree sampler: wall and CPU time, and its peak RSS.

    The peak is the last ``VmHWM`` (a running maximum) read from the process while it ran, every 0.02 s.
    """
    cpu0 = children_cpu_seconds()
    with TreeSampler(interval=0.02) as sampler:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env, cwd=HERE.parent)
        code = process.wait()
        wall = time.perf_counter() - start
    if code != 0:
        raise subprocess.CalledProcessError(code, command)
    return {"wall_s": wall, "cpu_s": children_cpu_seconds() - cpu0,
            "peak_rss": sampler.hwm_by_pid.get(process.pid, 0),
            "max_process_rss": max(sampler.hwm_by_pid.values(), default=0),
            "peak_rss_sampled_total": sampler.peak_total}  # fmt: skip


def _warm_worker() -> None:
    import rasterio  # noqa: F401
    import xarray  # noqa: F401
    import zarr  # noqa: F401

    import eoseg.tile.stage  # noqa: F401


def _timed(function) -> dict:
    """Wall and CPU seconds of ``function()`` in this process, under the tree sampler."""
    baseline = current_rss()
    cpu0 = cpu_seconds()
    with TreeSampler() as sampler:
        start = time.perf_counter()
        value = function()
        wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "cpu_s": cpu_seconds() - cpu0,
        "baseline_rss": baseline,
        "peak_rss": self_maxrss(),
        "peak_rss_sampled_total": sampler.peak_total,
        "_value": value,
    }


def run_case(case: str, size: str, workdir: Path, chunk_size: int) -> dict:
    p = _paths(workdir, size)
    p["dir"].mkdir(parents=True, exist_ok=True)
    scene = str(p["scene"])
    result: dict = {"case": case, "size": size, "loadavg_1min": os.getloadavg()[0]}
    if case == "tile-threads":
        from eoseg.tile.stage import tile_scene

        _remove(p["store_threads"])
        result.update(
            _timed(
                lambda: tile_scene(scene, str(p["store_threads"]), chunk_size=chunk_size, show_progress=False)
            )
        )
        result.pop("_value")
    elif case == "tile-cluster":
        from eoseg.compute.cluster import ClusterSpec, connect, dask_cluster
        from eoseg.tile.stage import tile_scene

        _remove(p["store_cluster"])
        t0 = time.perf_counter()
        with (
            dask_cluster(ClusterSpec(n_workers=2, threads_per_worker=1)) as address,
            connect(address) as client,
        ):
            # Workers import what a tile task needs before the clock starts (a warm, long-lived cluster).
            client.run(_warm_worker)
            worker_pids = client.run(os.getpid)
            startup = time.perf_counter() - t0
            baseline = current_rss()
            worker_baseline = client.run(current_rss)
            worker_cpu0 = client.run(cpu_seconds)
            cpu0 = cpu_seconds()
            with TreeSampler() as sampler:
                start = time.perf_counter()
                tile_scene(
                    scene, str(p["store_cluster"]), chunk_size=chunk_size, client=client, show_progress=False
                )
                wall = time.perf_counter() - start
            client_cpu = cpu_seconds() - cpu0
            worker_cpu = client.run(cpu_seconds)
            worker_peak = client.run(self_maxrss)
        _remove(p["store_cluster"])  # only the threaded store is kept (for the mosaic)
        workers = {address: {"pid": worker_pids[address], "peak_rss": worker_peak[address],
                             "peak_rss_sampled": sampler.peak_by_pid.get(worker_pids[address], 0),
                             "baseline_rss": worker_baseline[address]}
                   for address in worker_pids}  # fmt: skip
        others = {pid: rss for pid, rss in sampler.peak_by_pid.items()
                  if pid != os.getpid() and pid not in worker_pids.values()}  # fmt: skip
        result.update(
            wall_s=wall, startup_s=startup, baseline_rss=baseline, peak_rss=self_maxrss(),
            cpu_s=client_cpu + sum(worker_cpu[a] - worker_cpu0[a] for a in worker_cpu), client_cpu_s=client_cpu,
            peak_rss_sampled=sampler.peak_by_pid.get(os.getpid(), 0),
            workers=list(workers.values()),
            max_worker_rss=max(w["peak_rss"] for w in workers.values()),
            other_children={str(pid): {"rss": rss, "cmd": sampler.names.get(pid, "?")} for pid, rss in others.items()},
            peak_rss_sampled_total=sampler.peak_total,
        )  # fmt: skip
    elif case == "tile-command":
        _remove(p["store_command"])
        result.update(
            _run_command([*EOSEG, "tile", scene, "--out", str(p["store_command"])], env=_direct_env())
        )
        _remove(p["store_command"])
    elif case == "tile-breakdown":
        result.update(tile_breakdown(scene, workdir / size / "breakdown.zarr", chunk_size))
    elif case == "gdal-zarr":
        _remove(p["gdal_zarr"])
        result.update(_run_command([
            "gdal_translate", "-q", "-of", "Zarr", "-co", "FORMAT=ZARR_V2",
            "-co", f"BLOCKSIZE={chunk_size},{chunk_size}", "-co", "COMPRESS=BLOSC", "-co", "BLOSC_CNAME=zstd",
            "-co", f"BLOSC_CLEVEL={STORE_CLEVEL}", "-co", "BLOSC_SHUFFLE=BIT", scene, str(p["gdal_zarr"]),
        ]))  # fmt: skip
        result["output_bytes"] = _du(p["gdal_zarr"])
        _remove(p["gdal_zarr"])
    elif case == "rasterio-read":
        import rasterio

        def read_all():
            with rasterio.open(scene) as dataset:
                return int(dataset.read().nbytes)

        result.update(_timed(read_all))
        result["array_bytes"] = result.pop("_value")
    elif case == "mosaic-eoseg":
        from eoseg.mosaic.cog import mosaic_to_cog

        if not p["store_threads"].exists():
            raise SystemExit(f"{p['store_threads']}: run tile-threads first")
        _remove(p["cog_eoseg"])
        result.update(
            _timed(
                lambda: mosaic_to_cog(
                    str(p["store_threads"]), str(p["cog_eoseg"]), band=1, show_progress=False
                )
            )
        )
        result.pop("_value")
        result["output_bytes"] = p["cog_eoseg"].stat().st_size
    elif case == "mosaic-command":
        if not p["store_threads"].exists():
            raise SystemExit(f"{p['store_threads']}: run tile-threads first")
        _remove(p["cog_command"])
        command = [*EOSEG, "mosaic", str(p["store_threads"]), "--band", "1", "--out", str(p["cog_command"])]
        result.update(_run_command(command, env=_direct_env()))
        result["output_bytes"] = p["cog_command"].stat().st_size
        _remove(p["cog_command"])
    elif case in ("gdal-cog", "gdal-cog-mt"):
        ensure_band1(p)
        out = p["cog_gdal" if case == "gdal-cog" else "cog_gdal_mt"]
        _remove(out)
        command = ["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "PREDICTOR=YES",
                   "-co", "BLOCKSIZE=512", "-co", "OVERVIEW_RESAMPLING=NEAREST"]  # fmt: skip
        if case == "gdal-cog-mt":
            command += ["-co", "NUM_THREADS=ALL_CPUS"]
        result.update(_run_command([*command, str(p["band1"]), str(out)]))
        result["output_bytes"] = out.stat().st_size
        _remove(out)
    else:
        raise SystemExit(f"unknown case {case!r}")
    return result


def ensure_band1(p: dict[str, Path]) -> None:
    """GDAL's mosaic input: band 1 of the scene as a tiled, uncompressed GeoTIFF (made outside timing)."""
    if p["band1"].exists():
        return
    p["dir"].mkdir(parents=True, exist_ok=True)
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(p["scene"]) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1,
                   "dtype": src.dtypes[0], "crs": src.crs, "transform": src.transform, "nodata": src.nodata,
                   "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "NONE"}  # fmt: skip
        tmp = p["band1"].with_suffix(".partial.tif")
        with rasterio.open(tmp, "w", **profile) as dst:
            for row0 in range(0, src.height, 512):
                window = Window(0, row0, src.width, min(512, src.height - row0))
                dst.write(src.read(1, window=window), 1, window=window)
        os.replace(tmp, p["band1"])


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------------------------
# Parent: environment, orchestration, report
# --------------------------------------------------------------------------------------------------------


def environment() -> dict:
    import dask
    import distributed
    import numpy
    import rasterio
    import zarr

    import eoseg

    try:
        gdal_translate = subprocess.run(["gdal_translate", "--version"], capture_output=True, text=True,
                                        check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        gdal_translate = None
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "python": platform.python_version(),
        "eoseg": eoseg.__version__,
        "rasterio": rasterio.__version__,
        "gdal_in_rasterio": rasterio.__gdal_version__,
        "gdal_translate": gdal_translate,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "zarr": zarr.__version__,
        "numpy": numpy.__version__,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_child(case: str, size: str, workdir: Path, chunk_size: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--one", case, "--size", size,
               "--workdir", str(workdir), "--chunk-size", str(chunk_size)]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr[-4000:])
        raise RuntimeError(f"case {case} at {size} failed (exit {completed.returncode})")
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def median_of(runs: list[dict]) -> dict:
    """The run with the median wall time (all runs are kept in ``runs_*``)."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["runs_wall_s"] = [r["wall_s"] for r in runs]
    chosen["runs_cpu_s"] = [r.get("cpu_s") for r in runs]
    chosen["runs_peak_rss"] = [r["peak_rss"] for r in runs]
    chosen["runs_loadavg_1min"] = [r.get("loadavg_1min") for r in runs]
    return chosen


def report_run(size: str, case: str, m: dict, rep: int, repeat: int) -> None:
    print(
        f"[{size}] {rep}/{repeat} {case:14s} {m['wall_s']:7.2f} s  cpu {m.get('cpu_s', 0):6.1f} s  peak RSS "
        f"{mib(m['peak_rss']):>6s} MiB"
        + (f"  max worker {mib(m['max_worker_rss'])} MiB" if "max_worker_rss" in m else "")
        + f"  (load {m.get('loadavg_1min', 0):.1f})",
        flush=True,
    )


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _peak_any_process(m: dict) -> int:
    return max(m["peak_rss"], m.get("max_worker_rss") or 0, m.get("max_process_rss") or 0)


def _case_row(size: str, pixels: str, mpx: float, case: str, m: dict, **columns: object) -> dict:
    """One row of a table: a case's measurement at one scene size, then the table's own ``columns``."""
    return {"size": size, "pixels": pixels, "case": case, "label": CASE_LABELS[case], "wall_s": m["wall_s"],
            "cpu_s": m.get("cpu_s"), "mpx_s": mpx / m["wall_s"], "peak_rss": m["peak_rss"], **columns}  # fmt: skip


def _time_target(what: str, case: str, size: str, m: dict, gdal: dict, target: float) -> dict:
    """One time target: the case's wall-time ratio to GDAL's (and its CPU ratio), and the verdict."""
    ratio, cpu_ratio = m["wall_s"] / gdal["wall_s"], m["cpu_s"] / gdal["cpu_s"]
    return {"target": f"{what} [{case}, {size}]",
            "value": f"{ratio:.2f}x ({m['wall_s']:.1f} s vs {gdal['wall_s']:.1f} s; CPU {cpu_ratio:.2f}x)",
            "verdict": verdict(ratio <= target)}  # fmt: skip


def build_report(env: dict, scenes: dict, results: dict, sizes: list[str]) -> dict:
    """Rows for the tables plus the target verdicts (for the cases that were run)."""
    tile_rows, mosaic_rows, targets, breakdowns = [], [], [], []
    for size in sizes:
        scene = scenes[size]
        mpx = scene["width"] * scene["height"] / 1e6
        pixels = f"{scene['width']}x{scene['height']}"
        r = results[size]
        gdal_zarr = r.get("gdal-zarr")
        for case in (c for c in TILE_CASES if c in r):
            m = r[case]
            tile_rows.append(_case_row(
                size, pixels, mpx, case, m,
                max_worker_rss=m.get("max_worker_rss") or m.get("max_process_rss"),
                total_rss=m.get("peak_rss_sampled_total") if case in ("tile-cluster", "tile-command") else None,
                vs_gdal=m["wall_s"] / gdal_zarr["wall_s"] if case.startswith("tile") and gdal_zarr else None,
            ))  # fmt: skip
        if "tile-breakdown" in r:
            breakdowns.append({"size": size, "pixels": pixels, **r["tile-breakdown"]})
        gdal_cog = r.get("gdal-cog")
        for case in (c for c in MOSAIC_CASES if c in r):
            m = r[case]
            mosaic_rows.append(_case_row(
                size, pixels, mpx, case, m, output_mib=m.get("output_bytes", 0) / MiB,
                vs_gdal=m["wall_s"] / gdal_cog["wall_s"] if gdal_cog else None,
            ))  # fmt: skip
        for case in (c for c in ("tile-command", "tile-threads", "tile-cluster") if c in r):
            if gdal_zarr:
                targets.append(_time_target("tile time <= gdal_translate -of Zarr", case, size, r[case],
                                            gdal_zarr, TARGET_TILE_VS_GDAL))  # fmt: skip
            largest = _peak_any_process(r[case])
            total = r[case]["peak_rss_sampled_total"]
            targets.append({"target": f"tile peak RSS per process < 1 GiB [{case}, {size}]",
                            "value": f"{mib(largest)} MiB" + (f" (all processes together {mib(total)} MiB)"
                                                              if case != "tile-threads" else ""),
                            "verdict": verdict(largest < TARGET_TILE_RSS)})  # fmt: skip
        for case in (c for c in ("mosaic-command", "mosaic-eoseg") if c in r and gdal_cog):
            targets.append(_time_target("mosaic time <= 1.2x gdal_translate -of COG", case, size, r[case],
                                        gdal_cog, TARGET_MOSAIC_VS_GDAL))  # fmt: skip
    # Flat memory: each pair of sizes 4x apart in pixel count.
    order = [s for s in SIZES if s in sizes]
    for small, large in itertools.pairwise(order):
        for case in ("tile-command", "tile-threads", "tile-cluster"):
            if case not in results[small] or case not in results[large]:
                continue
            a, b = _peak_any_process(results[small][case]), _peak_any_process(results[large][case])
            targets.append({"target": f"tile peak RSS flat as scene grows 4x [{case}, {small} -> {large}]",
                            "value": f"{mib(a)} -> {mib(b)} MiB ({b / a:.2f}x; flat means <= {TARGET_RSS_FLAT}x)",
                            "verdict": verdict(b / a <= TARGET_RSS_FLAT)})  # fmt: skip
    return {
        "environment": env,
        "scenes": scenes,
        "tile": tile_rows,
        "tile_breakdown": breakdowns,
        "mosaic": mosaic_rows,
        "targets": targets,
    }


def _table(headers: list[str], rows: list[list[str]], aligns: str) -> list[str]:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def fmt(cells):
        return "  ".join(
            c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, aligns, strict=True)
        ).rstrip()

    return [fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def _md_table(headers: list[str], rows: list[list[str]], aligns: str) -> list[str]:
    sep = ["---:" if a == "r" else ":---" for a in aligns]
    return ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]  # fmt: skip


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _header_lines(env: dict, scenes: dict, bullet: str, repeats: dict | None = None) -> list[str]:
    out = [(f"{bullet}machine: {env['cpu']}, {env['cores']} cores, {env['ram_gib']} GiB RAM; load average at start "
           f"{env['loadavg_at_start']}"),
           (f"{bullet}versions: eoseg {env['eoseg']}, Python {env['python']}, rasterio {env['rasterio']} "
           f"(GDAL {env['gdal_in_rasterio']}), gdal_translate: {env['gdal_translate']}, dask "
           f"{env['dask']}, distributed {env['distributed']}, zarr {env['zarr']}, numpy {env['numpy']}")]  # fmt: skip
    for size, scene in scenes.items():
        out.append(
            f"{bullet}scene {size}: {scene['width']} x {scene['height']} px x {scene['bands']} bands uint8 "
            f"({scene['width'] * scene['height'] / 1e6:.1f} Mpx), {scene['bytes'] / MiB:.0f} MiB DEFLATE "
            f"GeoTIFF (256 px tiles), mosaic of the 10 real NAIP scenes"
            + (f"; median of {repeats[size]} run(s) per case" if repeats else "")
        )
    return out


def render(report: dict, *, markdown: bool) -> str:
    env = report["environment"]
    table = _md_table if markdown else _table
    head, sub, bullet = ("# ", "## ", "- ") if markdown else ("", "", "  ")
    out: list[str] = [f"{head}eoseg tile / mosaic benchmark ({env['date']})", ""]
    out += _header_lines(env, report["scenes"], bullet, report["repeat"])
    if report.get("loadavg_at_end"):
        out.append(
            f"{bullet}load average at end {report['loadavg_at_end']} (2 cores: above ~0.5 other work "
            "competes for the CPUs; then the CPU-seconds ratios are the steadier comparison)"
        )
    out.append("")
    out.append(
        f"{sub}Tile: GeoTIFF -> Zarr (chunks 4 x {report['chunk_size']} x {report['chunk_size']}, "
        f"Blosc zstd-{STORE_CLEVEL} bitshuffle, GDAL at the same codec)"
    )
    out.append("")
    headers = ["size", "pixels", "case", "wall s", "cpu s", "Mpx/s", "peak RSS MiB", "max worker MiB",
               "all procs MiB", "eoseg/gdal"]  # fmt: skip
    rows = [[r["size"], r["pixels"], r["label"], f"{r['wall_s']:.1f}", _secs(r["cpu_s"]), f"{r['mpx_s']:.1f}",
             mib(r["peak_rss"]), mib(r["max_worker_rss"]), mib(r["total_rss"]),
             "-" if r["vs_gdal"] is None else f"{r['vs_gdal']:.2f}x"] for r in report["tile"]]  # fmt: skip
    out += table(headers, rows, "lllrrrrrrr")
    out.append("")
    out.append(f"{sub}Mosaic: band 1 -> COG (512 px tiles, DEFLATE + predictor, nearest overviews)")
    out.append("")
    headers = [
        "size",
        "pixels",
        "case",
        "wall s",
        "cpu s",
        "Mpx/s",
        "peak RSS MiB",
        "output MiB",
        "eoseg/gdal",
    ]
    rows = [[r["size"], r["pixels"], r["label"], f"{r['wall_s']:.1f}", _secs(r["cpu_s"]), f"{r['mpx_s']:.1f}",
             mib(r["peak_rss"]), f"{r['output_mib']:.1f}",
             "-" if r["vs_gdal"] is None else f"{r['vs_gdal']:.2f}x"] for r in report["mosaic"]]  # fmt: skip
    out += table(headers, rows, "lllrrrrrr")
    out.append("")
    for breakdown in report.get("tile_breakdown", []):
        out.append(
            f"{sub}Tile breakdown, {breakdown['size']} ({breakdown['pixels']}, {breakdown['chunks']} chunks, "
            f"one thread, no Dask: {breakdown['wall_s']:.1f} s, {breakdown['cpu_s']:.1f} CPU s)"
        )
        out.append("")
        cpu = breakdown.get("steps_cpu_s", {})
        total_cpu = sum(cpu.values()) or 1.0
        rows = [[step, f"{seconds:.2f}", f"{100 * seconds / breakdown['wall_s']:.0f} %",
                 f"{cpu[step]:.2f}" if step in cpu else "-",
                 f"{100 * cpu[step] / total_cpu:.0f} %" if step in cpu else "-"]
                for step, seconds in breakdown["steps_s"].items()]  # fmt: skip
        out += table(["step (summed over chunks)", "wall s", "share", "CPU s", "CPU share"], rows, "lrrrr")
        out.append("")
    out.append(f"{sub}Targets (from the issue)")
    out.append("")
    rows = [[t["target"], t["value"], t["verdict"]] for t in report["targets"]]
    out += table(["target", "measured", "verdict"], rows, "lll")
    out.append("")
    notes = [
        (
            "whole command rows (eoseg tile / eoseg mosaic): the CLI as a user runs it with no Prefect API configured, "
            "imports, start-up and shutdown included, in a fresh process; cpu s and memory over its whole process tree."
        ),
        (
            "wall s: median wall time of --repeat runs (of 2, the faster), each in a fresh process; imports excluded; for the cluster, "
            "cluster start-up and worker imports excluded (startup_s in the JSON). cpu s: user+system CPU seconds of "
            "the same run (for the cluster: client + workers), less sensitive than wall time to other load."
        ),
        (
            "peak RSS MiB: the measuring process's VmHWM (GDAL rows: gdal_translate's). For the cluster: the "
            "client process (which also hosts the scheduler and nannies); max worker MiB: the largest worker's "
            "VmHWM; all procs MiB: peak of the summed RSS of the whole process tree, sampled every 0.1 s."
        ),
        (
            "eoseg/gdal: eoseg wall time / gdal_translate wall time (tile: -of Zarr with the same Blosc codec; "
            "mosaic: -of COG without NUM_THREADS). Every input is in the page cache."
        ),
    ]
    out += [f"{bullet}{n}" for n in notes]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="eoseg tile/mosaic benchmark vs GDAL")
    parser.add_argument(
        "--sizes",
        default="0.25x,1x",
        help=f"comma-separated, of {','.join(SIZES)} (default "
        "0.25x,1x; 4x needs ~8 GiB of disk and a few minutes more)",
    )
    parser.add_argument("--workdir", default=os.environ.get("EOSEG_BENCH_DIR", "/tmp/eoseg-bench"))
    parser.add_argument("--results", default=str(RESULT_DIR))
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median is reported)")
    parser.add_argument(
        "--repeat-4x", type=int, default=1, help="runs per case at 4x (default 1: ~5 min each)"
    )
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    parser.add_argument(
        "--cases",
        default=",".join((*TILE_CASES, *PROFILE_CASES, *MOSAIC_CASES)),
        help="comma-separated cases to run (default: all; the mosaic cases need tile-threads)",
    )
    parser.add_argument("--keep", action="store_true", help="keep stores and COGs under --workdir")
    parser.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="re-print and re-write the report from an earlier tile_mosaic.json",
    )
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--size", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)

    if args.one:
        result = run_case(args.one, args.size, workdir, args.chunk_size)
        print(json.dumps(result))
        return

    if args.render:
        old = json.loads(Path(args.render).read_text())
        sizes = [s for s in SIZES if s in old["raw"]]
        report = build_report(old["environment"], old["scenes"], old["raw"], sizes)
        report.update({k: old[k] for k in ("chunk_size", "repeat", "raw", "bench_wall_s", "loadavg_at_end")})
        _write_report(report, Path(args.results))
        return

    if shutil.which("gdal_translate") is None:
        raise SystemExit("gdal_translate not found: apt-get install -y gdal-bin (the GDAL reference timings)")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise SystemExit(f"unknown size(s) {unknown}; choose from {list(SIZES)}")
    sizes = [s for s in SIZES if s in sizes]
    wanted = {c.strip() for c in args.cases.split(",") if c.strip()}
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    need = {"0.25x": 0.5, "1x": 2.0, "4x": 8.0}
    if sum(need[s] for s in sizes) * GiB > free:
        raise SystemExit(
            f"{workdir}: {free / GiB:.1f} GiB free, about {sum(need[s] for s in sizes)} GiB needed"
        )

    env = environment()
    print(
        f"machine: {env['cpu']}, {env['cores']} cores, {env['ram_gib']} GiB; GDAL {env['gdal_in_rasterio']} "
        f"(rasterio), {env['gdal_translate']}; load average {env['loadavg_at_start']}",
        flush=True,
    )
    if env["loadavg_at_start"][0] > 0.5:
        print(
            f"warning: the machine is busy (load {env['loadavg_at_start'][0]}); timings will be noisy",
            flush=True,
        )
    out_dir = Path(args.results)
    bench_start = time.perf_counter()
    scenes, results, repeats = {}, {}, {}
    for size in sizes:
        t0 = time.perf_counter()
        scenes[size] = build_named(size, workdir)
        print(
            f"[{size}] scene {scenes[size]['width']} x {scenes[size]['height']} ready "
            f"({time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        ensure_band1(_paths(workdir, size))
        repeats[size] = args.repeat_4x if size == "4x" else args.repeat
        runs: dict[str, list[dict]] = {}
        for rep in range(repeats[size]):  # round-robin, so drifting load hits every case alike
            for case in (c for c in (*TILE_CASES, *PROFILE_CASES, *MOSAIC_CASES) if c in wanted):
                runs.setdefault(case, []).append(run_child(case, size, workdir, args.chunk_size))
                report_run(size, case, runs[case][-1], rep + 1, repeats[size])
        results[size] = {case: median_of(value) for case, value in runs.items()}
        if not args.keep:
            _remove(_paths(workdir, size)["dir"])
    report = build_report(env, scenes, results, sizes)
    report.update(chunk_size=args.chunk_size, repeat=repeats, raw=results,
                  bench_wall_s=time.perf_counter() - bench_start,
                  loadavg_at_end=[round(x, 2) for x in os.getloadavg()])  # fmt: skip
    _write_report(report, out_dir)


def _write_report(report: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "tile_mosaic.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "tile_mosaic.md").write_text(render(report, markdown=True))
    print()
    print(render(report, markdown=False))
    print(
        f"(benchmark took {report['bench_wall_s']:.0f} s; load average at end {report['loadavg_at_end']}; "
        f"results in {out_dir}/tile_mosaic.json and .md)"
    )


if __name__ == "__main__":
    main()
