"""Shared fixtures: real components started by the tests themselves.

- a temporary Prefect server for the whole session (``prefect_test_harness``);
- a real ``distributed.LocalCluster`` with two worker processes;
- a real S3 endpoint on loopback: moto's server in its own process (GDAL's /vsis3/ writes hang against
  the in-process threaded server, see shared/ENVIRONMENT.md);
- tiny GeoTIFFs with a real CRS and transform, written with a fixed seed, and the real scenes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EOSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# The SpaceNet sample's grid, for hand-made rasters compared with it.
SPACENET_CRS = "EPSG:32616"
SPACENET_TRANSFORM = Affine(0.5, 0.0, 733601.0, 0.0, -0.5, 3725139.0)

REAL_SCENES = {
    "naip": SHARED_DATA / "naip" / "m_4709963_se_14_1_20090818.tif",
    "landsat": SHARED_DATA / "landsat" / "RGB.byte.tif",
    "aerial": SHARED_DATA / "aerial" / "cogeo.tif",
    "spacenet": SHARED_DATA / "spacenet" / "sample_geotiff.tif",
}


def pytest_collection_modifyitems(config, items):
    """Run `gpu` tests only where CUDA exists; say so explicitly instead of counting them as passed."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (runs on GPU machines only)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared data folder is missing: {SHARED_DATA} (set EOSEG_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spacenet_dir() -> Path:
    """The SpaceNet sample's folder; the test is skipped where the shared data do not hold it."""
    folder = SHARED_DATA / "spacenet"
    if not (folder / "sample_geotiff.tif").exists():
        pytest.skip(f"SpaceNet sample not found in {folder}; set EOSEG_SHARED_DATA to the shared data folder")
    return folder


@pytest.fixture(scope="session")
def prefect_server():
    """One real temporary Prefect server for the session (every flow run in the tests goes to it)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def dask_address():
    """Scheduler address of a real LocalCluster: 2 worker processes x 1 thread."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.WARNING,
    ) as cluster:
        yield cluster.scheduler_address


@pytest.fixture()
def mosaic_pieces_1024(monkeypatch):
    """Mosaic pieces of 1024 px (``EOSEG_MOSAIC_PIECE_SIZE``; default 4096), so that the small maps of the
    tests that interrupt, resume or spread a mosaic over workers have several pieces."""
    monkeypatch.setenv("EOSEG_MOSAIC_PIECE_SIZE", "1024")


@pytest.fixture()
def dask_client(dask_address):
    from distributed import Client

    with Client(dask_address, set_as_default=False) as client:
        yield client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "eoseg-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "eoseg-test-secret-value",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on loopback in its own process; AWS_* variables point eoseg at it."""
    executable = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [executable, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    saved = {key: os.environ.get(key) for key in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        import urllib.request

        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:  # refused, reset or timed out: not up yet
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_bucket(s3_endpoint, request):
    """A fresh, empty bucket on the loopback endpoint; returns its s3:// URI."""
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    name = "eoseg-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40]
    fs.mkdir(name)
    fs.invalidate_cache()
    yield f"s3://{name}"
    fs.rm(f"s3://{name}", recursive=True)


def write_geotiff(
    path: Path, array: np.ndarray, *, crs: str | None = "EPSG:32616", nodata=None, transform=None, **profile
) -> Path:
    """Write ``array`` (bands, rows, cols) as a small tiled GeoTIFF with a real georeference."""
    import rasterio
    from affine import Affine

    array = array if array.ndim == 3 else array[None]
    transform = transform or Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)
    options = {
        "driver": "GTiff",
        "width": array.shape[2],
        "height": array.shape[1],
        "count": array.shape[0],
        "dtype": str(array.dtype),
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
    }
    options.update(profile)
    with rasterio.open(path, "w", **options) as dataset:
        dataset.write(array)
    return path


@pytest.fixture()
def tiny_scene(tmp_path) -> Path:
    """A 3-band 70 x 90 uint8 GeoTIFF with a nodata collar, fixed seed."""
    rng = np.random.default_rng(7)
    array = rng.integers(1, 255, size=(3, 70, 90), dtype=np.uint8)
    array[:, :5, :] = 0
    return write_geotiff(tmp_path / "tiny.tif", array, nodata=0)


def train_tiny_clusterer(store: str | Path, model: str | Path) -> None:
    """A clusterer trained in seconds (2 iterations on 8 patches), for tests about what is done with one."""
    from eoseg.train.stage import train_on_stores

    train_on_stores(
        "clusterer",
        [str(store)],
        str(model),
        params={"epochs": 1, "iterations": 2, "batch_size": 4, "patch_size": 32},
        max_patches=8,
    )


@contextmanager
def open_map_on_scene_grid(map_path: str | Path, scene_path: str | Path) -> Iterator[Any]:
    """Open a map that must be a valid COG on exactly the scene's grid (CRS, transform, width, height)."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    assert cog_validate(str(map_path), quiet=True) == (True, [], [])
    with rasterio.open(scene_path) as scene, rasterio.open(map_path) as out:
        assert (out.crs, out.transform, out.width, out.height) == (
            scene.crs,
            scene.transform,
            scene.width,
            scene.height,
        )
        yield out


def class_patches(height: int, width: int, seed: int, *, num_classes: int = 6) -> np.ndarray:
    """uint8 labels: class-like 8 px patches (0..num_classes-1), noise, a nodata (255) corner."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, num_classes, size=(-(-height // 8), -(-width // 8)), dtype=np.uint8)
    labels = coarse.repeat(8, axis=0).repeat(8, axis=1)[:height, :width].copy()
    noise = rng.random(labels.shape) < 0.3
    labels[noise] = rng.integers(0, num_classes, size=int(noise.sum()), dtype=np.uint8)
    labels[:40, :70] = 255
    return labels


def write_label_store(uri: str, labels: np.ndarray, chunk: int, *, num_classes: int = 6) -> Any:
    """A finished label store of ``labels`` (2-D uint8, nodata 255) with ``chunk`` px chunks, as `eoseg
    predict` writes one (EPSG:32614, 0.5 m pixels); returns its StoreInfo."""
    from eoseg.geometry import make_geobox
    from eoseg.store.layout import StoreInfo, create_store, read_store_info, write_chunk
    from eoseg.store.lifecycle import mark_complete

    transform = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)
    info = StoreInfo(
        kind="labels", geobox=make_geobox(labels.shape, tuple(transform)[:6], "EPSG:32614"), band_count=1,
        dtype="uint8", chunk_rows=chunk, chunk_cols=chunk, nodata=255, band_names=("class",),
        band_descriptions=("class label",), source_uri="synthetic.tif", num_classes=num_classes,
        model={"family": "clusterer", "checkpoint": "model.pt"},
    )  # fmt: skip
    create_store(uri, info)
    for row in range(-(-labels.shape[0] // chunk)):
        for col in range(-(-labels.shape[1] // chunk)):
            block = labels[row * chunk : (row + 1) * chunk, col * chunk : (col + 1) * chunk]
            write_chunk(uri, info.variable, (row, col), block)
    mark_complete(uri, info)
    return read_store_info(uri)


class StoppedHalfWay(Exception):
    """Stands for a run stopped half way (a kill, a lost machine): not an eoseg error, so no stage discards
    its partial output."""


def interrupted_mosaic(store: str, target: str, *, pieces: int, **options: Any) -> None:
    """Run ``mosaic_to_cog(store, target, **options)`` here; stop it once ``pieces`` pieces are written."""
    from eoseg.compute import stage as contract
    from eoseg.mosaic.cog import mosaic_to_cog

    run_chunks = contract.map_chunks

    def first_pieces_then_stopped(function: Any, items: Any, **map_options: Any) -> Any:
        run_chunks(function, list(items)[:pieces], **map_options)
        raise StoppedHalfWay

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contract, "map_chunks", first_pieces_then_stopped)
        with pytest.raises(StoppedHalfWay):
            mosaic_to_cog(store, target, show_progress=False, **options)
