"""Fixed cost of one `eoseg` command: the whole `eoseg tile` of the small Landsat scene, as a user runs it.

Cases, each run ``--repeat`` times in fresh processes, interleaved (so load changes hit every case alike):

- ``direct``: ``eoseg tile`` with no Prefect API configured (the default without a server: the stage is
  called directly; one chunk, so no Dask cluster);
- ``prefect-temporary``: ``eoseg --prefect tile`` with no API configured: Prefect starts its temporary
  server for the run (what every command did before);
- ``prefect-server``: ``eoseg tile`` with ``PREFECT_API_URL`` set to a running ``prefect server start``
  (started once by this script, before the timings): the stage runs directly and the run is recorded
  there through Prefect's REST API (``cli.prefect_record``, no Prefect import);
- ``prefect-server --prefect``: the same with ``--prefect``: the full ``tile-scene`` flow (task runs,
  retries), what a configured server meant for every command before;
- ``refuse ...``: bad invocations (`eoseg run` of a missing file, `eoseg tile` onto an existing store
  without ``--overwrite``), refused by the preflight before the heavy imports (``cli.preflight``);
- ``python -c 'import cli.main'``: the CLI's import alone;
- ``gdal_translate -of Zarr``: GDAL's conversion of the same scene, the floor for the work itself.

The load average (``uptime``) is recorded before and after every run, and each command's CPU seconds
(user + system, its child processes included), which a shared machine's load changes much less than
the wall time; compare ratios from one run only.
A run that fails (Prefect's temporary server times out after 20 s on a loaded machine) is listed as
failed and left out of the median.

    python benchmarks/bench_command_overhead.py [--repeat 3] [--no-server] [--no-temporary]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_machine import cpu_model, ram_gib, write_report

REPO = Path(__file__).resolve().parents[1]
SCENE = (
    Path(os.environ.get("EOSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "landsat" / "RGB.byte.tif"
)
EOSEG = [sys.executable, "-m", "cli.main"]


def load_average() -> float:
    return os.getloadavg()[0]


def _children_cpu() -> float:
    """User + system CPU seconds of this script's finished child processes: on a machine shared with
    other jobs the wall time grows with the load, the CPU a command needs much less."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], *, refused: bool = False) -> dict[str, float]:
    """One run's wall seconds and the load around it; ``refused``: exit code 2 is the expected outcome."""
    before, cpu_before = load_average(), _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    run = {
        "seconds": seconds,
        "cpu_seconds": _children_cpu() - cpu_before,
        "load_before": before,
        "load_after": load_average(),
    }
    if result.returncode != (2 if refused else 0):  # e.g. Prefect's temporary server timing out
        run["failed"] = result.stderr.strip().splitlines()[-1][-300:] if result.stderr.strip() else "failed"
    return run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_prefect_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``prefect server start`` on a free port; returns the process and its API URL once healthy."""
    import urllib.request

    port = _free_port()
    prefect = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("prefect server did not become healthy in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-server", action="store_true", help="skip the prefect-server cases")
    parser.add_argument(
        "--no-temporary", action="store_true", help="skip the case that starts Prefect's temporary server"
    )
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="eoseg-overhead-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    base.update(
        PYTHONPATH=str(REPO),
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    store = str(work / "landsat.zarr")
    tile = [*EOSEG, "tile", str(SCENE), "--out", store, "--overwrite"]
    cases: dict[str, tuple[list[str], dict[str, str]]] = {
        "direct (no Prefect API configured)": (tile, base),
        "prefect-temporary (--prefect, no API: temporary server)": (
            [*EOSEG, "--prefect", "tile", str(SCENE), "--out", store, "--overwrite"],
            base,
        ),
        "python -c 'import cli.main'": ([sys.executable, "-c", "import cli.main"], base),
        "python -c pass (the interpreter's start)": ([sys.executable, "-c", "pass"], base),
        "refuse: `eoseg run` of a missing file": (
            [*EOSEG, "run", str(work / "missing.tif"), "--out", str(work / "map.tif")],
            base,
        ),
        "refuse: `eoseg tile` onto an existing store": ([*EOSEG, "tile", str(SCENE), "--out", store], base),
    }
    expected_failures = {name for name in cases if name.startswith("refuse")}
    if args.no_temporary:
        del cases["prefect-temporary (--prefect, no API: temporary server)"]
    if shutil.which("gdal_translate"):
        gdal = ["gdal_translate", "-q", "-of", "Zarr", "-co", "FORMAT=ZARR_V2", "-co", "BLOCKSIZE=1024,1024"]
        gdal += [
            "-co",
            "COMPRESS=BLOSC",
            "-co",
            "BLOSC_CNAME=zstd",
            "-co",
            "BLOSC_CLEVEL=1",
            "-co",
            "BLOSC_SHUFFLE=BIT",
        ]
        cases["gdal_translate -of Zarr"] = ([*gdal, str(SCENE), str(work / "gdal.zarr")], base)
    server = None
    if not args.no_server:
        server, url = start_prefect_server(base)
        cases["prefect-server (PREFECT_API_URL set: run recorded)"] = (tile, dict(base, PREFECT_API_URL=url))
        cases["prefect-server --prefect (the full flow)"] = (
            [*EOSEG, "--prefect", "tile", str(SCENE), "--out", store, "--overwrite"],
            dict(base, PREFECT_API_URL=url),
        )
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    try:
        for name, (command, env) in cases.items():  # warm the file cache and bytecode once
            timed(command, env, refused=name in expected_failures)
            shutil.rmtree(work / "gdal.zarr", ignore_errors=True)
        for _ in range(args.repeat):
            for name, (command, env) in cases.items():
                runs[name].append(timed(command, env, refused=name in expected_failures))
                shutil.rmtree(work / "gdal.zarr", ignore_errors=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    medians = {
        name: statistics.median([r["seconds"] for r in rs if "failed" not in r] or [float("nan")])
        for name, rs in runs.items()
    }
    loads = [r[key] for rs in runs.values() for r in rs for key in ("load_before", "load_after")]
    machine = f"{cpu_model()}, {os.cpu_count()} cores, {ram_gib()} GiB"
    direct = medians["direct (no Prefect API configured)"]
    lines = [
        "# Fixed cost per command: `eoseg tile` of the Landsat scene (791 x 718 x 3, one chunk)",
        "",
        f"Machine: {machine}. Load average during the runs: {min(loads):.2f}-{max(loads):.2f} "
        f"(shared machine). Median of {args.repeat} fresh processes per case, interleaved.",
        "",
        "| case | median wall s | runs (s) | ratio to direct | median CPU s (user + sys) |",
        "|---|---:|---|---:|---:|",
    ]
    for name, rs in runs.items():
        values = ", ".join(f"{r['seconds']:.2f}" + (" (failed)" if "failed" in r else "") for r in rs)
        cpu = statistics.median([r["cpu_seconds"] for r in rs if "failed" not in r] or [float("nan")])
        lines.append(
            f"| {name} | {medians[name]:.2f} | {values} | {medians[name] / direct:.2f}x | {cpu:.2f} |"
        )
    lines += [
        "",
        "Where the seconds of a run recorded in Prefect went before (`python -X importtime`, log timestamps;"
        " issue 12 point 0): importing Prefect (its client alone pulls in the settings, schemas and engine"
        " context) ~1.5-2 s idle and ~4 s at load 4, the flow engine's state calls and log shipping ~1 s"
        " around ~0.6 s of work. Now the stage runs directly and the run is recorded by four REST calls"
        " (`cli.prefect_record`): the recorded case costs what the direct one does, plus milliseconds.",
        "On a loaded machine every figure grows with the load; compare the cases of one run.",
    ]
    report = {"machine": machine, "repeat": args.repeat, "runs": runs, "medians": medians}
    write_report(args.results, "command_overhead", report, lines)


if __name__ == "__main__":
    main()
