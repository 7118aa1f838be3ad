"""The mosaic's COG is assembled from pieces GDAL encoded, byte for byte, under a tifffile header.

What GDAL's COG driver wrote before (eoseg/mosaic/layout.py) is the reference: the same pixels, overviews,
georeferencing, nodata, colours, tags and TIFF structure, valid per rio-cogeo with no warning; for any
chunk size and map size; on S3 streamed by the flow process while Dask worker processes write the pieces
to an S3 prefix, with no local file of the COG's size; an interrupted run resumes from its pieces, and
pieces of an older format are never reused.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import tifffile
from affine import Affine
from conftest import class_patches, interrupted_mosaic, write_label_store
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

from eoseg.io import storage
from eoseg.mosaic.cog import describe_dataset, mosaic_to_cog
from eoseg.mosaic.colors import class_colormap
from eoseg.store.layout import StoreInfo
from eoseg.store.lifecycle import file_staging_dir

TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)
NUM_CLASSES = 6
STRUCTURE_TAGS_IGNORED = {273, 279, 324, 325}  # where the tiles are and how long: layout, not meaning
# Tags TIFF 6.0 gives a default (NewSubfileType 0, PlanarConfiguration 1, SampleFormat 1 = unsigned
# integer): written or left out, the file means the same; tifffile and GDAL differ only there.
TIFF_DEFAULTS = {254: 0, 284: 1, 339: 1}

# The tests count, interrupt and spread pieces: 1024 px pieces give these small maps several.
pytestmark = pytest.mark.usefixtures("mosaic_pieces_1024")


def _labels(height: int, width: int, seed: int) -> np.ndarray:
    return class_patches(height, width, seed, num_classes=NUM_CLASSES)


def _label_store(uri: str, labels: np.ndarray, chunk: int) -> StoreInfo:
    return write_label_store(uri, labels, chunk, num_classes=NUM_CLASSES)


def _reference_cog(labels: np.ndarray, info: StoreInfo, store: str, path: Path, resampling: str) -> Path:
    """What GDAL's COG driver writes for the same band and metadata (eoseg's writer before the pieces)."""
    source = path.with_suffix(".src.tif")
    profile = {"driver": "GTiff", "width": labels.shape[1], "height": labels.shape[0], "count": 1,
               "dtype": "uint8", "transform": TRANSFORM}  # fmt: skip
    with rasterio.open(source, "w", **profile) as dataset:
        dataset.write(labels, 1)
        describe_dataset(dataset, info, store, None)
    rasterio.shutil.copy(
        source, path, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", PREDICTOR="YES", LEVEL=6,
        OVERVIEW_RESAMPLING=resampling.upper(),
    )  # fmt: skip
    return path


def _level(path: str | Path, level: int | None) -> np.ndarray:
    options = {} if level is None else {"overview_level": level}
    with rasterio.open(path, **options) as dataset:
        return dataset.read(1)


def _ifd_tags(path: str | Path) -> list[dict[int, object]]:
    """Each IFD's tag values (as numbers and text; SHORT or LONG alike), TIFF defaults filled in."""

    def value(tag: tifffile.TiffTag) -> object:
        return np.asarray(tag.value).tolist() if not isinstance(tag.value, str) else tag.value

    with tifffile.TiffFile(path) as tiff:
        return [
            TIFF_DEFAULTS
            | {tag.code: value(tag) for tag in page.tags.values() if tag.code not in STRUCTURE_TAGS_IGNORED}
            for page in tiff.pages
        ]


def _same_map(got: str | Path, want: str | Path) -> None:
    """Pixels of every level, georeferencing, nodata, colours, description, tags and TIFF tags agree."""
    assert cog_validate(str(got), quiet=True) == (True, [], [])
    with rasterio.open(got) as a, rasterio.open(want) as b:
        for attribute in ("crs", "transform", "nodata", "shape", "dtypes"):
            assert getattr(a, attribute) == getattr(b, attribute), attribute
        assert a.overviews(1) == b.overviews(1)
        assert a.descriptions == b.descriptions == ("class",)
        assert a.colormap(1) == b.colormap(1)
        tags_a, tags_b = a.tags(), b.tags()
        assert tags_a.pop("EOSEG_CREATED") and tags_b.pop("EOSEG_CREATED")
        assert tags_a == tags_b
        assert a.profile["compress"] == b.profile["compress"] == "deflate"
        levels = len(a.overviews(1))
    for level in (None, *range(levels)):
        np.testing.assert_array_equal(_level(got, level), _level(want, level))
    tags_got, tags_want = _ifd_tags(got), _ifd_tags(want)
    for ifd in (*tags_got, *tags_want):
        ifd.pop(42112, None)  # GDAL_METADATA holds EOSEG_CREATED, compared above
    assert tags_got == tags_want


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_cog_equals_what_gdals_cog_driver_writes(resampling, tmp_path):
    labels = _labels(2048, 1536, seed=1)  # overviews 2 and 4; 1024 px pieces of 256 px chunks
    info = _label_store(str(tmp_path / "labels.zarr"), labels, chunk=256)
    cog = tmp_path / "map.tif"

    summary = mosaic_to_cog(str(tmp_path / "labels.zarr"), str(cog), overview_resampling=resampling,
                            show_progress=False)  # fmt: skip

    assert summary.overview_levels == (2, 4)
    np.testing.assert_array_equal(_level(cog, None), labels)
    reference = _reference_cog(labels, info, str(tmp_path / "labels.zarr"), tmp_path / "ref.tif", resampling)
    _same_map(cog, reference)
    with rasterio.open(cog) as out:
        assert out.colormap(1)[0] == class_colormap(NUM_CLASSES)[0]
        assert out.tags()["EOSEG_NUM_CLASSES"] == str(NUM_CLASSES)
        assert "TIFFTAG_XRESOLUTION" not in out.tags()
    assert not list(tmp_path.glob(".map.tif*")), "the staging folder is removed once published"


def test_default_4096_px_pieces_give_the_same_cog(monkeypatch, tmp_path, caplog):
    """The default piece size (EOSEG_MOSAIC_PIECE_SIZE unset: 4096 px): a 640 x 4608 map is 2 pieces."""
    monkeypatch.delenv("EOSEG_MOSAIC_PIECE_SIZE")
    labels = _labels(640, 4608, seed=6)
    info = _label_store(str(tmp_path / "labels.zarr"), labels, chunk=512)
    caplog.set_level("INFO", logger="eoseg")

    mosaic_to_cog(str(tmp_path / "labels.zarr"), str(tmp_path / "map.tif"), show_progress=False)

    assert "mosaic: 2 of 2 chunks to compute (0 done)" in caplog.messages
    reference = _reference_cog(labels, info, str(tmp_path / "labels.zarr"), tmp_path / "ref.tif", "nearest")
    _same_map(tmp_path / "map.tif", reference)


@pytest.mark.parametrize("chunk", [256, 512, 2048])
def test_odd_sized_map_round_trips_for_any_chunk_size(chunk, tmp_path):
    """1100 x 1390 px: partial edge pieces and tiles; a 2048 px chunk makes one piece of the whole map."""
    labels = _labels(1100, 1390, seed=2)
    _label_store(str(tmp_path / "labels.zarr"), labels, chunk=chunk)
    cog = tmp_path / "odd.tif"

    mosaic_to_cog(str(tmp_path / "labels.zarr"), str(cog), show_progress=False)

    with rasterio.open(cog) as out:
        assert out.overviews(1) == [2, 4]
        np.testing.assert_array_equal(out.read(1), labels)
    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    for level, factor in enumerate((2, 4)):
        overview = _level(cog, level)
        assert overview.shape == (-(-1100 // factor), -(-1390 // factor))  # rounded up, as eoseg always did
        # nearest: every overview pixel is a pixel of the f x f block it stands for
        for row, col in [(0, 0), (overview.shape[0] - 1, overview.shape[1] - 1), (100, 200)]:
            block = labels[row * factor : (row + 1) * factor, col * factor : (col + 1) * factor]
            assert overview[row, col] in block


def _set_tempdir(folder: str | None) -> str | None:
    """Point this process's ``tempfile`` at ``folder`` (None: the default); returns the previous one."""
    previous, tempfile.tempdir = tempfile.tempdir, folder
    return previous


class _LargestLocalFile:
    """Polls folders (the temporary directory every process of the run writes its scratch files to) and
    remembers the largest file seen."""

    def __init__(self, folders: list[str]) -> None:
        self.folders, self.largest, self._stop = folders, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for folder in self.folders:
                for root, _, names in os.walk(folder):
                    for name in names:
                        with contextlib.suppress(OSError):  # removed meanwhile
                            self.largest = max(self.largest, os.path.getsize(os.path.join(root, name)))
            self._stop.wait(0.005)

    def __enter__(self) -> _LargestLocalFile:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_s3_cog_pieces_on_s3_by_worker_processes_streamed_without_a_local_copy(
    s3_bucket, dask_client, tmp_path, caplog
):
    labels = np.random.default_rng(3).integers(0, 250, size=(2048, 2048), dtype=np.uint8)  # ~5 MB COG
    store = f"{s3_bucket}/labels.zarr"
    info = _label_store(store, labels, chunk=1024)
    target = f"{s3_bucket}/maps/map.tif"
    caplog.set_level("INFO", logger="eoseg")
    workers = set(dask_client.run(os.getpid).values())
    assert len(workers) == 2 and os.getpid() not in workers

    scratch = tmp_path / "scratch"  # this process's and the workers' temporary files, all of them
    scratch.mkdir()
    previous = _set_tempdir(str(scratch))
    dask_client.run(_set_tempdir, str(scratch))
    try:
        with _LargestLocalFile([str(scratch)]) as local:
            mosaic_to_cog(store, target, client=dask_client, show_progress=False)
    finally:
        _set_tempdir(previous)
        dask_client.run(_set_tempdir, previous)

    size = storage.size_of(target)
    assert size > 4 * 2**20
    assert local.largest > 0
    # the largest local file is one piece (a quarter of the map, and its overviews), never the COG
    assert local.largest < size / 2, f"a local file of {local.largest} bytes for a {size} byte COG"
    assert "mosaic: 4 of 4 chunks to compute (0 done)" in caplog.messages
    assert not storage.exists(file_staging_dir(target)), "the S3 staging prefix is removed once published"
    downloaded = tmp_path / "map.tif"
    storage.s3_filesystem().get_file(target, str(downloaded))
    reference = _reference_cog(labels, info, store, tmp_path / "ref.tif", "nearest")
    _same_map(downloaded, reference)
    with storage.gdal_env(target):
        assert cog_validate(storage.gdal_path(target), quiet=True) == (True, [], [])


def test_interrupted_s3_mosaic_resumes_from_the_pieces_on_s3(s3_bucket, dask_client, tmp_path, caplog):
    labels = _labels(2048, 2048, seed=4)
    store = f"{s3_bucket}/labels.zarr"
    _label_store(store, labels, chunk=512)
    target = f"{s3_bucket}/map.tif"
    caplog.set_level("INFO", logger="eoseg")

    interrupted_mosaic(store, target, pieces=3, client=dask_client)
    assert not storage.exists(target)
    pieces = storage.file_names(storage.join(file_staging_dir(target), "pieces"))
    assert len(pieces) == 3, pieces  # on S3, beside the target
    mosaic_to_cog(store, target, client=dask_client, show_progress=False)

    assert "mosaic: 1 of 4 chunks to compute (3 done)" in caplog.messages
    downloaded = tmp_path / "map.tif"
    storage.s3_filesystem().get_file(target, str(downloaded))
    np.testing.assert_array_equal(_level(downloaded, None), labels)
    assert cog_validate(str(downloaded), quiet=True) == (True, [], [])


def test_pieces_of_an_older_format_are_not_reused(tmp_path, caplog):
    labels = _labels(2048, 2048, seed=5)
    store = str(tmp_path / "labels.zarr")
    _label_store(store, labels, chunk=1024)
    target = str(tmp_path / "map.tif")
    caplog.set_level("INFO", logger="eoseg")
    interrupted_mosaic(store, target, pieces=2)
    staging = Path(file_staging_dir(target))
    plan = json.loads((staging / "plan.json").read_text())
    # What eoseg wrote before: uncompressed one-chunk pieces; the pieces left there must not be taken.
    plan["pieces"] = {"compress": "NONE", "overviews": [2, 4], "resampling": "nearest"}
    (staging / "plan.json").write_text(json.dumps(plan, sort_keys=True))
    for piece in (staging / "pieces").iterdir():
        piece.write_bytes(b"not a piece of this format")

    mosaic_to_cog(store, target, show_progress=False)

    assert "mosaic: 4 of 4 chunks to compute (0 done)" in caplog.messages
    np.testing.assert_array_equal(_level(target, None), labels)
    assert cog_validate(target, quiet=True) == (True, [], [])
    with rasterio.open(target) as out:
        out.read(1, out_shape=(512, 512), resampling=Resampling.nearest)  # reads the overviews


@pytest.mark.parametrize(("tile_bytes", "bigtiff"), [(1000, False), (2**22, True)])
def test_header_is_bigtiff_only_when_the_offsets_need_it(tile_bytes, bigtiff, tmp_path):
    """A 32768 x 32768 map (4096 tiles at full resolution): 4 MiB tiles make it over 4 GiB."""
    from eoseg.mosaic import layout

    template_path = tmp_path / "template.tif"
    with rasterio.open(template_path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8",
                       tiled=True, blockxsize=16, blockysize=16, compress="DEFLATE", predictor=2,
                       crs="EPSG:32614", transform=TRANSFORM, nodata=255) as dataset:  # fmt: skip
        dataset.update_tags(EOSEG_KIND="labels")
    shapes = [(32768 // f, 32768 // f) for f in (1, 2, 4)]
    counts = [[tile_bytes] * ((-(-h // 512)) * (-(-w // 512))) for h, w in shapes]

    header = layout.cog_header(layout.read_template(str(template_path)), shapes, counts, 512)

    assert header[:4] == (b"II+\x00" if bigtiff else b"II*\x00")
    with tifffile.TiffFile(io.BytesIO(header)) as tiff:
        pages = list(tiff.pages)
        assert [page.shape for page in pages] == shapes
        # data follows the header, smallest level first, each tile right after the one before
        assert pages[2].dataoffsets[0] == len(header)
        assert pages[0].dataoffsets[0] == len(header) + (len(counts[1]) + len(counts[2])) * tile_bytes
        assert list(pages[0].databytecounts) == counts[0]
        assert all(282 not in page.tags and 296 not in page.tags for page in pages)
        assert pages[0].tags[42113].value == "255"


def test_a_failed_s3_assembly_leaves_no_object(s3_bucket, tmp_path):
    """A tile that cannot be read aborts the multipart upload: nothing appears, not even a partial file."""
    from eoseg.mosaic import layout

    source = tmp_path / "tiles.bin"
    source.write_bytes(bytes(range(256)) * 8)
    target = f"{s3_bucket}/.map.tif.partial/assembled.tif"
    with pytest.raises(OSError, match="expected"):
        layout.assemble(target, b"II*\x00", [[(str(source), 0, 1024), (str(source), 2000, 100)]])
    assert not storage.exists(target)
    layout.assemble(target, b"II*\x00", [[(str(source), 0, 1024), (str(source), 1024, 100)]])
    with storage.open_file(target, "rb") as handle:
        assert handle.read() == b"II*\x00" + source.read_bytes()[:1124]


@pytest.mark.parametrize("where", ["s3", "local"])
def test_cli_mosaic_gives_an_s3_cogs_pieces_to_the_cluster(where, s3_bucket, dask_client, tmp_path):
    """`eoseg --cluster ADDRESS mosaic STORE s3://...`: the pieces are Dask tasks on the cluster's workers;
    a local COG's pieces are written by threads of the command (they must land on its disk)."""
    import subprocess
    import sys

    from distributed import get_task_stream

    store = f"{s3_bucket}/labels.zarr"
    _label_store(store, _labels(2048, 2048, seed=5), chunk=1024)
    target = f"{s3_bucket}/map.tif" if where == "s3" else str(tmp_path / "map.tif")
    command = [str(Path(sys.executable).parent / "eoseg"), "--cluster", dask_client.scheduler.address]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}  # the direct call
    with get_task_stream(dask_client) as stream:
        done = subprocess.run(
            [*command, "--no-prefect", "mosaic", store, "--out", target],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pieces = [task for task in stream.data if str(task["key"]).startswith("mosaic-")]
    assert len(pieces) == (4 if where == "s3" else 0), [task["key"] for task in stream.data]
    assert storage.exists(target)
