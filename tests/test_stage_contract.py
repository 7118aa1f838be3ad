"""Every chunked stage (tile, predict, mosaic) keeps one contract, locally and on S3.

For each stage and each place (a local path, the loopback S3 endpoint) a run is interrupted once some
chunks are flagged done; the same run again computes only the missing chunks (its log says how many) and
produces exactly what an uninterrupted run produces; run once more it is refused, naming ``--overwrite``;
with ``--overwrite`` it starts over.

Two cases do this through the CLI with a real SIGKILL of the ``eoseg`` process and its local cluster
(slow): ``tile`` on S3 (a store staged at the target itself) and ``mosaic`` locally (a file staged as
pieces); they also prove the CLI's refusal (one line, exit code 2). The other four stage x place
combinations are interrupted in this process (the stage stops after some chunks, leaving what a killed
run leaves) and resumed, refused and overwritten through the stage functions: the same lifecycle code,
without starting a process and a cluster four times per case. (``predict`` killed through the CLI, locally,
is also tested in tests/test_cluster_scale.py.)
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from conftest import REAL_SCENES, class_patches, train_tiny_clusterer, write_geotiff, write_label_store
from rio_cogeo.cogeo import cog_validate

from eoseg.errors import IncompleteStoreError
from eoseg.io import storage
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.predict.stage import predict_store
from eoseg.store.layout import open_data_array, read_store_info
from eoseg.store.lifecycle import chunks_done, file_staging_dir, store_staging_uri
from eoseg.tile.stage import tile_scene

pytestmark = pytest.mark.usefixtures("prefect_server", "mosaic_pieces_1024")
EOSEG = str(Path(sys.executable).parent / "eoseg")
CHUNK = 16  # small chunks: many of them, so that a kill lands half way
SIZE = 256  # 16 x 16 = 256 chunks
SMALL_SIZE = 96  # 6 x 6 = 36 chunks
PROGRESS = re.compile(r"(tile|predict|mosaic): (\d+) of (\d+) chunks to compute \((\d+) done\)")


def _prepare_inputs(folder: Path, size: int) -> dict[str, str]:
    """A ``size``-pixel square crop of a real NAIP scene, its store, a tiny clusterer, its label store."""
    with rasterio.open(REAL_SCENES["naip"]) as naip:
        pixels = naip.read(window=((0, size), (0, size)))
        transform, crs = naip.transform, naip.crs
    scene = write_geotiff(
        folder / "naip_crop.tif",
        pixels,
        crs=crs.to_wkt(),
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=128,
        blockysize=128,
    )
    store = folder / "naip_crop.zarr"
    tile_scene(str(scene), str(store), chunk_size=CHUNK, show_progress=False)
    model = folder / "model.pt"
    train_tiny_clusterer(store, model)
    labels = folder / "labels.zarr"
    predict_store(str(store), str(model), str(labels), show_progress=False)
    # The mosaic works in pieces of at least 1024 px (eoseg/mosaic/pieces.py): a larger label store gives
    # it as many pieces as needed for an interruption half way (16 from SIZE, 4 from SMALL_SIZE).
    map_side = 4096 if size >= SIZE else 2048
    write_label_store(str(folder / "map_labels.zarr"), class_patches(map_side, map_side, seed=size), 512)
    return {
        "scene": str(scene),
        "store": str(store),
        "model": str(model),
        "labels": str(labels),
        "folder": str(folder),
        "chunks": str((size // CHUNK) ** 2),
        "map_labels": str(folder / "map_labels.zarr"),
        "pieces": str((map_side // 1024) ** 2),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data) -> dict[str, str]:
    """Many chunks (256), so that a SIGKILL lands half way through a real run."""
    return _prepare_inputs(tmp_path_factory.mktemp("contract"), SIZE)


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory, shared_data) -> dict[str, str]:
    """Few chunks (36), for the interruptions in this process: each stage runs three times per case."""
    return _prepare_inputs(tmp_path_factory.mktemp("contract-small"), SMALL_SIZE)


def _store_contents(uri: str) -> dict[str, Any]:
    info = read_store_info(uri)
    attrs = {k: v for k, v in info.to_attrs().items() if k != "created"}
    return {"attrs": attrs, "data": np.asarray(open_data_array(uri, info)[...]), "done": chunks_done(uri)}


def _cog_contents(uri: str) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        local = storage.fetch_to_local(uri, scratch)
        assert cog_validate(local, quiet=True) == (True, [], [])
        with rasterio.open(local) as cog:
            tags = {k: v for k, v in cog.tags().items() if k != "EOSEG_CREATED"}
            return {
                "data": cog.read(),
                "profile": dict(cog.profile),
                "tags": tags,
                "colormap": cog.colormap(1),
                "overviews": cog.overviews(1),
            }


def _count_files(uri: str, under: str) -> int:
    """How many finished objects lie below ``uri/under`` (local folder or S3 prefix), without reading them.

    Hidden names (``.NAME.partial-TOKEN``, a piece being written) do not count.
    """
    prefix = f"{uri}/{under}"
    if storage.is_s3(uri):
        filesystem = storage.s3_filesystem()
        filesystem.invalidate_cache()
        paths = filesystem.find(prefix) if filesystem.exists(prefix) else []
    else:
        paths = (
            [str(path) for path in Path(prefix).rglob("*") if path.is_file()] if Path(prefix).exists() else []
        )
    return sum(1 for path in paths if not path.rsplit("/", 1)[-1].startswith("."))


@dataclass(frozen=True)
class StageCase:
    """How to run one stage through the CLI and in this process, where its progress shows, what it holds."""

    name: str
    suffix: str
    command: Callable[[dict[str, str], str], list[str]]
    run: Callable[[dict[str, str], str, bool], object]  # (inputs, target, overwrite): the stage function
    contents: Callable[[str], dict[str, Any]]
    progress: Callable[[str], int]  # chunks done so far, from the staging output of a target


STAGES = {
    "tile": StageCase(
        "tile",
        ".zarr",
        lambda i, out: ["tile", i["scene"], "--out", out, "--chunk-size", str(CHUNK)],
        lambda i, out, overwrite: tile_scene(
            i["scene"], out, chunk_size=CHUNK, overwrite=overwrite, show_progress=False
        ),
        _store_contents,
        lambda out: _count_files(store_staging_uri(out), "chunk_done/c"),
    ),
    "predict": StageCase(
        "predict",
        ".zarr",
        lambda i, out: ["predict", i["store"], "--model", i["model"], "--out", out],
        lambda i, out, overwrite: predict_store(
            i["store"], i["model"], out, overwrite=overwrite, show_progress=False
        ),
        _store_contents,
        lambda out: _count_files(store_staging_uri(out), "chunk_done/c"),
    ),
    "mosaic": StageCase(
        "mosaic",
        ".tif",
        lambda i, out: ["mosaic", i["map_labels"], "--out", out],
        lambda i, out, overwrite: mosaic_to_cog(
            i["map_labels"], out, overwrite=overwrite, show_progress=False
        ),
        _cog_contents,
        lambda out: _count_files(file_staging_dir(storage.normalise_uri(out)), "pieces"),
    ),
}
# (stage, place) interrupted by a real SIGKILL through the CLI; the others are interrupted in this process.
KILLED_THROUGH_THE_CLI = [("tile", "s3"), ("mosaic", "local")]
INTERRUPTED_IN_PROCESS = [
    (stage, where)
    for stage in STAGES
    for where in ("local", "s3")
    if (stage, where) not in KILLED_THROUGH_THE_CLI
]


def _target(stage: StageCase, where: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if where == "s3":
        return f"{request.getfixturevalue('s3_bucket')}/x{stage.suffix}"
    return str(tmp_path / f"x{stage.suffix}")


def _expected(stage: StageCase, inputs: dict[str, str]) -> dict[str, Any]:
    """What an uninterrupted run of the stage produces (computed once per module)."""
    reference = str(Path(inputs["folder"]) / f"reference-{stage.name}{stage.suffix}")
    if not Path(reference).exists():
        stage.run(inputs, reference, False)
    return stage.contents(reference)


def _refusal(out: str) -> str:
    return f"{storage.normalise_uri(out)}: output already exists; pass --overwrite to replace it"


def _environment() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), COLUMNS="200")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EOSEG, "--workers", "2", *args],
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _kill_half_way(args: list[str], progress: Callable[[], int], total: int, *, poll_s: float) -> int:
    """Start ``eoseg ARGS``; SIGKILL it and its local cluster once some chunks are done; returns how many."""
    process = subprocess.Popen(
        [EOSEG, "--workers", "2", *args],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if total * 0.1 <= progress() < total * 0.9:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                time.sleep(1.0)  # requests the killed processes had already sent are answered by now
                return progress()
            time.sleep(poll_s)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    pytest.fail(f"`eoseg {args[0]}` finished (exit {process.returncode}) before it could be interrupted")


def _looks_finished(out: str) -> bool:
    """Whether a reader would take ``out`` for a finished output."""
    out = storage.normalise_uri(out)
    if not storage.exists(out):
        return False
    if not out.endswith(".zarr"):
        return True
    try:
        return read_store_info(out).complete
    except IncompleteStoreError:
        return False


def _assert_same(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(actual[key], value, err_msg=key)
        else:
            assert actual[key] == value, key


@pytest.mark.slow
@pytest.mark.parametrize(("stage_name", "where"), KILLED_THROUGH_THE_CLI)
def test_stage_killed_resumes_refuses_and_overwrites_through_the_cli(
    stage_name, where, inputs, request, tmp_path
):
    stage = STAGES[stage_name]
    out = _target(stage, where, request, tmp_path)
    expected = _expected(stage, inputs)
    total = int(inputs["pieces" if stage_name == "mosaic" else "chunks"])

    # killed half way, then run again: only the missing chunks are computed, output as if never stopped
    done_at_kill = _kill_half_way(
        stage.command(inputs, out),
        lambda: stage.progress(out),
        total,
        poll_s=0.05 if storage.is_s3(out) and stage.suffix == ".zarr" else 0.005,
    )
    assert not _looks_finished(out), "an interrupted output must not look finished"
    resumed = _run(stage.command(inputs, out))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    counts = [
        m.groups() for m in PROGRESS.finditer(resumed.stdout + resumed.stderr) if m.group(1) == stage.name
    ]
    assert counts == [(stage.name, str(total - done_at_kill), str(total), str(done_at_kill))], counts
    print(
        f"\n{stage.name} ({where}): killed with {done_at_kill}/{total} chunks done; the re-run computed "
        f"{total - done_at_kill}"
    )
    _assert_same(stage.contents(out), expected)

    # a finished output is refused with one line naming the option
    refused = _run(stage.command(inputs, out))
    assert refused.returncode == 2
    errors = [
        line
        for line in re.sub(r"\x1b\[[0-9;]*m", "", refused.stderr).splitlines()
        if line.startswith("error: ")
    ]
    assert errors == [f"error: {_refusal(out)}"], refused.stderr[-3000:]

    # --overwrite starts over and gives the same output again
    again = _run([*stage.command(inputs, out), "--overwrite"])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{stage.name}: {total} of {total} chunks to compute (0 done)" in again.stdout + again.stderr
    _assert_same(stage.contents(out), expected)


class _Killed(Exception):
    """Stands for SIGKILL in this process: not an eoseg error, so no stage discards its partial output."""


def _interrupt(stage: StageCase, inputs: dict[str, str], out: str, *, chunks: int) -> None:
    """Run the stage in this process and stop it once ``chunks`` chunks are written and flagged done."""
    from eoseg.compute import stage as contract

    run_chunks = contract.map_chunks

    def first_chunks_then_killed(function: Callable[..., Any], items: Any, **options: Any) -> Any:
        if options.get("label") != stage.name:  # e.g. predict's scene-wide context pass runs whole
            return run_chunks(function, items, **options)
        run_chunks(function, list(items)[:chunks], **options)
        raise _Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contract, "map_chunks", first_chunks_then_killed)
        with pytest.raises(_Killed):
            stage.run(inputs, out, False)


@pytest.mark.parametrize(("stage_name", "where"), INTERRUPTED_IN_PROCESS)
def test_stage_interrupted_resumes_refuses_and_overwrites(stage_name, where, small_inputs, request, tmp_path):
    from eoseg.errors import OutputExistsError

    stage = STAGES[stage_name]
    out = _target(stage, where, request, tmp_path)
    expected = _expected(stage, small_inputs)
    total = int(small_inputs["pieces" if stage_name == "mosaic" else "chunks"])
    done_at_kill = total // 3

    _interrupt(stage, small_inputs, out, chunks=done_at_kill)
    assert stage.progress(out) == done_at_kill
    assert not _looks_finished(out), "an interrupted output must not look finished"
    with _Messages() as messages:
        stage.run(small_inputs, out, False)
    assert f"{stage.name}: {total - done_at_kill} of {total} chunks to compute ({done_at_kill} done)" in (
        messages
    )
    _assert_same(stage.contents(out), expected)

    with pytest.raises(OutputExistsError, match=re.escape(_refusal(out))):
        stage.run(small_inputs, out, False)

    with _Messages() as messages:
        stage.run(small_inputs, out, True)
    assert f"{stage.name}: {total} of {total} chunks to compute (0 done)" in messages
    _assert_same(stage.contents(out), expected)


class _Messages(logging.Handler):
    """The messages of the ``eoseg`` loggers (Prefect may stop them propagating to pytest's handler)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> list[str]:
        logger = logging.getLogger("eoseg")
        self._level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(self)
        return self.messages

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("eoseg")
        logger.removeHandler(self)
        logger.setLevel(self._level)


def _interrupted_tile(scene: str, target: str, chunk_size: int, chunks: int) -> int:
    """A store as a killed run leaves it: ``chunks`` chunks written and flagged; returns the total."""
    from eoseg.scene.inspect import inspect_scene
    from eoseg.store.lifecycle import open_store_output
    from eoseg.tile.stage import TileChunkJob, _store_info_for, tile_chunk

    info = inspect_scene(scene)
    output = open_store_output(target, _store_info_for(info, chunk_size), overwrite=False)
    windows = list(output.info.grid.windows())
    for index, window in windows[:chunks]:
        tile_chunk(TileChunkJob(info.uri, output.staging, index, window, info.nodata))
    return len(windows)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_tile_flow_resumes_an_interrupted_store_and_refuses_a_finished_one(
    where, tiny_scene, tmp_path, request
):
    """The flow leaves "exists / resume / overwrite" to the stage: a partial store on S3 (at the target
    itself) is resumed, not refused as existing."""
    from eoseg.compute.cluster import ClusterSpec
    from eoseg.config import TileOptions
    from eoseg.errors import OutputExistsError
    from flows.storage_flows import tile_scene_flow

    target = f"{request.getfixturevalue('s3_bucket')}/x.zarr" if where == "s3" else str(tmp_path / "x.zarr")
    reference = str(tmp_path / "reference.zarr")
    tile_scene(str(tiny_scene), reference, chunk_size=16, show_progress=False)
    total = _interrupted_tile(str(tiny_scene), target, 16, chunks=7)
    # a cluster of threads in this process: quick to start, and it sees the loopback S3 credentials
    options, cluster = (
        TileOptions(chunk_size=16),
        ClusterSpec(processes=False, n_workers=1, threads_per_worker=2),
    )
    with _Messages() as messages:
        tile_scene_flow(str(tiny_scene), target, options=options, cluster=cluster)
    assert f"tile: {total - 7} of {total} chunks to compute (7 done)" in messages
    _assert_same(_store_contents(target), _store_contents(reference))
    with pytest.raises(OutputExistsError, match=r"x.zarr: output already exists; pass --overwrite"):
        tile_scene_flow(str(tiny_scene), target, options=options, cluster=cluster)
    with _Messages() as messages:
        tile_scene_flow(str(tiny_scene), target, options=options, cluster=cluster, overwrite=True)
    assert f"tile: {total} of {total} chunks to compute (0 done)" in messages
    _assert_same(_store_contents(target), _store_contents(reference))


def test_tile_flow_without_a_cluster_runs_on_threads_like_the_direct_command(tiny_scene, tmp_path):
    """No Dask cluster is started for the tile flow's GIL-releasing work unless one is given (as `eoseg tile`
    without Prefect); the store is the one tile_scene writes."""
    from eoseg.config import TileOptions
    from flows.storage_flows import tile_scene_flow

    reference, target = str(tmp_path / "reference.zarr"), str(tmp_path / "x.zarr")
    tile_scene(str(tiny_scene), reference, chunk_size=16, show_progress=False)
    with _Messages() as messages:
        tile_scene_flow(str(tiny_scene), target, options=TileOptions(chunk_size=16))
    assert "30 chunks of GIL-releasing work: running on threads in this process" in " ".join(messages)
    _assert_same(_store_contents(target), _store_contents(reference))


def test_a_store_of_another_input_at_the_s3_target_is_started_over(tiny_scene, tmp_path, s3_bucket):
    other = write_geotiff(tmp_path / "other.tif", np.full((3, 70, 90), 9, np.uint8), nodata=0)
    target = f"{s3_bucket}/x.zarr"
    _interrupted_tile(str(other), target, 16, chunks=3)
    with _Messages() as messages:
        info = tile_scene(str(tiny_scene), target, chunk_size=16, show_progress=False)
    assert any("an unfinished store of another input or grid is there; starting over" in m for m in messages)
    assert info.source_uri == str(tiny_scene) and chunks_done(target).all()


def test_something_else_at_an_s3_target_is_refused(tiny_scene, s3_bucket):
    from eoseg.errors import OutputExistsError

    storage.s3_filesystem().pipe_file(f"{s3_bucket}/x.zarr/notes.txt", b"not a store")
    for overwrite in (False, True):  # --overwrite replaces only a Zarr store
        with pytest.raises(OutputExistsError, match=r"x.zarr: exists and is not a Zarr store; --overwrite"):
            tile_scene(
                str(tiny_scene),
                f"{s3_bucket}/x.zarr",
                chunk_size=16,
                overwrite=overwrite,
                show_progress=False,
            )
    assert storage.s3_filesystem().cat(f"{s3_bucket}/x.zarr/notes.txt") == b"not a store"
    storage.s3_filesystem().pipe_file(
        f"{s3_bucket}/y.zarr/zarr.json", b'{"zarr_format": 3, "node_type": "group"}'
    )
    with pytest.raises(OutputExistsError, match=r"something that is not an eoseg store .* exists there"):
        tile_scene(str(tiny_scene), f"{s3_bucket}/y.zarr", chunk_size=16, show_progress=False)
    tile_scene(str(tiny_scene), f"{s3_bucket}/y.zarr", chunk_size=16, overwrite=True, show_progress=False)
    assert read_store_info(f"{s3_bucket}/y.zarr").complete


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda attrs: attrs.update(layout_version=99),
            "layout version 99, newer than the 2 this eoseg reads",
        ),
        (lambda attrs: attrs.update(layout_version=0), "layout version 0, older than the 1 this eoseg reads"),
        (
            lambda attrs: (attrs.pop("layout_version"), attrs.pop("transform")),
            "predates versioned layouts and lacks transform",
        ),
    ],
    ids=["newer", "older", "unversioned-incompatible"],
)
def test_stores_of_other_layouts_are_refused_with_the_retile_command(change, message, tiny_scene, tmp_path):
    import zarr

    from eoseg.store.versions import StoreLayoutError

    store = tmp_path / "old.zarr"
    tile_scene(str(tiny_scene), str(store), show_progress=False)
    group = zarr.open_group(str(store), mode="r+")
    attrs = dict(group.attrs["eoseg"])
    change(attrs)
    group.attrs["eoseg"] = attrs
    hint = f"re-tile it with `eoseg tile {tiny_scene} --out {store} --overwrite`"
    with pytest.raises(StoreLayoutError, match=re.escape(message) + ".*" + re.escape(hint)):
        read_store_info(str(store))
    with pytest.raises(StoreLayoutError):
        mosaic_to_cog(str(store), str(tmp_path / "x.tif"), band=1, show_progress=False)


def test_an_unversioned_compatible_store_is_read(tiny_scene, tmp_path):
    import zarr

    store = tmp_path / "old.zarr"
    expected = tile_scene(str(tiny_scene), str(store), show_progress=False)
    group = zarr.open_group(str(store), mode="r+")
    attrs = dict(group.attrs["eoseg"])
    attrs.pop("layout_version")
    group.attrs["eoseg"] = attrs
    # Read as layout 1, the layout of stores written before versions were checked (validity from nodata).
    assert read_store_info(str(store)) == replace(expected, layout_version=1)
    mosaic_to_cog(str(store), str(tmp_path / "x.tif"), band=1, show_progress=False)
