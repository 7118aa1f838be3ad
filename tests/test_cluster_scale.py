"""Scale-out on real Dask processes: GPU-resource dispatch, external scheduler, lost workers, resumption."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA, train_tiny_clusterer

from eoseg.compute.cluster import ClusterSpec, connect, dask_cluster
from eoseg.predict.stage import predict_store
from eoseg.store.layout import open_data_array, read_store_info
from eoseg.store.lifecycle import chunks_done
from eoseg.tile.stage import tile_scene

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_server")]
BIN = Path(sys.executable).parent
NAIP_YEARS = sorted((SHARED_DATA / "naip").glob("*.tif"))


def build_naip_mosaic(path: Path, tiles_x: int, tiles_y: int) -> Path:
    """A larger real scene: NAIP years side by side under the first scene's georeference."""
    with rasterio.open(NAIP_YEARS[0]) as first:
        profile = first.profile | {
            "width": first.width * tiles_x,
            "height": first.height * tiles_y,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
        height, width = first.height, first.width
    with rasterio.open(path, "w", **profile) as out:
        for index in range(tiles_x * tiles_y):
            row, col = divmod(index, tiles_x)
            with rasterio.open(NAIP_YEARS[index % len(NAIP_YEARS)]) as piece:
                block = piece.read(window=((0, height), (0, width)), boundless=True, fill_value=0)
            out.write(block, window=((row * height, (row + 1) * height), (col * width, (col + 1) * width)))
    return path


@pytest.fixture(scope="module")
def big_store_and_model(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("scale")
    scene = build_naip_mosaic(folder / "naip_2x2.tif", 2, 2)  # 1868 x 1448 px, 4 bands
    store = folder / "naip_2x2.zarr"
    tile_scene(str(scene), str(store), chunk_size=128, show_progress=False)  # 15 x 12 = 180 chunks
    model = folder / "model.pt"
    train_tiny_clusterer(store, model)
    reference = folder / "reference.zarr"
    predict_store(
        str(store), str(model), str(reference), show_progress=False
    )  # single process, local threads
    return store, model, reference


def labels_of(store: Path) -> np.ndarray:
    info = read_store_info(str(store))
    return np.asarray(open_data_array(str(store), info)[...])


def test_gpu_annotated_work_runs_only_on_the_gpu_worker(big_store_and_model, tmp_path):
    from distributed import get_task_stream

    store, model, reference = big_store_and_model
    with dask_cluster(ClusterSpec(n_workers=2, gpu_workers=1)) as address, connect(address) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        gpu = {a for a, w in workers.items() if w["resources"].get("GPU")}
        assert len(workers) == 2 and len(gpu) == 1
        with get_task_stream(client) as stream:
            predict_store(
                str(store),
                str(model),
                str(tmp_path / "labels.zarr"),
                client=client,
                use_gpu=True,
                show_progress=False,
            )
        ran_on = {task["worker"] for task in stream.data if task["key"].startswith(("predict-", "pool-"))}
        assert ran_on == gpu, f"GPU-annotated chunks ran on {ran_on}, GPU worker is {gpu}"
        assert len([t for t in stream.data if t["key"].startswith("predict-")]) == 180
    np.testing.assert_array_equal(labels_of(tmp_path / "labels.zarr"), labels_of(reference))


def test_training_goes_to_the_gpu_worker(big_store_and_model, tmp_path):
    from eoseg.config import ClustererTrainingOptions
    from flows.train_flows import train_clusterer_flow

    store, _, _ = big_store_and_model
    options = ClustererTrainingOptions(epochs=1, iterations=1, batch_size=4, patch_size=32, max_patches=4)
    spec = ClusterSpec(n_workers=2, gpu_workers=1)
    summary = train_clusterer_flow([str(store)], str(tmp_path / "m.pt"), training=options, cluster=spec)
    assert summary["ran_on"].startswith("tcp://")  # a Dask worker, not this process
    assert (tmp_path / "m.pt").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def external_cluster():
    """`dask scheduler` and `dask worker` started as separate processes on loopback."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = [
        subprocess.Popen(
            [
                str(BIN / "dask"),
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--name",
                f"external-{i}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(2)
    ]
    try:
        from distributed import Client

        with Client(address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
        yield address, workers
    finally:
        for process in [*workers, scheduler]:
            process.kill()
            process.wait(timeout=30)


def test_flow_against_an_external_scheduler_matches_the_local_default(
    big_store_and_model, tmp_path, external_cluster
):
    from eoseg.config import PredictOptions
    from flows.segment_flows import predict_flow

    store, model, reference = big_store_and_model
    address, _ = external_cluster
    predict_flow(
        str(store),
        str(model),
        str(tmp_path / "labels.zarr"),
        options=PredictOptions(),
        cluster=ClusterSpec(address=address),
    )
    np.testing.assert_array_equal(labels_of(tmp_path / "labels.zarr"), labels_of(reference))


def _wait_for_chunks(staging: Path, running: Callable[[], bool], *, at_least: int, below: int) -> int | None:
    """Poll a store being written until ``at_least`` to ``below`` chunks are flagged done; returns how many
    (None if the run ended first or 300 s passed). Counts the flag files (one per chunk), so a half-written
    array is never read."""
    flags = staging / "chunk_done" / "c"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and running():
        done = sum(1 for path in flags.rglob("*") if path.is_file() and not path.name.startswith("."))
        if at_least <= done < below:
            return done
        time.sleep(0.05)
    return None


def test_killing_a_worker_mid_inference_does_not_fail_the_run(
    big_store_and_model, tmp_path, external_cluster
):
    store, model, reference = big_store_and_model
    address, workers = external_cluster
    labels = tmp_path / "labels.zarr"
    staging = tmp_path / ".labels.zarr.partial"

    def run() -> None:
        with connect(address) as client:
            predict_store(str(store), str(model), str(labels), client=client, show_progress=False)

    with ThreadPoolExecutor(max_workers=1) as pool:
        prediction = pool.submit(run)
        killed_at = _wait_for_chunks(staging, lambda: not prediction.done(), at_least=20, below=150)
        if killed_at is not None:
            workers[0].send_signal(signal.SIGKILL)
        prediction.result(timeout=300)  # the run's own error, if it failed
    assert killed_at is not None, "inference finished before a worker could be killed"
    assert workers[0].wait(timeout=10) == -signal.SIGKILL
    np.testing.assert_array_equal(labels_of(labels), labels_of(reference))


def test_interrupted_run_recomputes_only_missing_chunks(big_store_and_model, tmp_path):
    from prefect.settings import PREFECT_API_URL

    store, model, reference = big_store_and_model
    labels = tmp_path / "labels.zarr"
    staging = tmp_path / ".labels.zarr.partial"
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    command = [
        str(BIN / "eoseg"),
        "--workers",
        "2",
        "predict",
        str(store),
        "--model",
        str(model),
        "--out",
        str(labels),
    ]
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    if _wait_for_chunks(staging, lambda: first.poll() is None, at_least=30, below=150) is None:
        pytest.fail("the run finished before it could be interrupted")
    os.killpg(first.pid, signal.SIGKILL)  # the flow process and its local cluster
    first.wait(timeout=30)
    done_at_kill = int(chunks_done(str(staging)).sum())
    assert not labels.exists() and staging.exists()

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    match = re.search(r"predicting (\d+) of (\d+) chunks", second.stdout + second.stderr)
    assert match, second.stdout[-3000:]
    recomputed, total = int(match.group(1)), int(match.group(2))
    print(f"\nkilled after {done_at_kill}/{total} chunks; the re-run computed {recomputed}")
    assert total == 180 and recomputed == total - done_at_kill
    np.testing.assert_array_equal(labels_of(labels), labels_of(reference))
