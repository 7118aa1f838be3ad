"""Bad input gets a clear error naming the file, and leaves no output (finished or partial) behind."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from conftest import REAL_SCENES, write_geotiff

from eoseg.errors import (
    BandCountError,
    ConfigurationError,
    CorruptSceneError,
    CorruptStoreError,
    EmptySceneError,
    IncompleteStoreError,
    MissingCRSError,
    OutputExistsError,
    SceneNotFoundError,
    UnsupportedDtypeError,
)
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.tile.stage import tile_scene


def assert_nothing_written(folder, *, keep=()):
    """No output and no hidden partial output in ``folder`` besides the inputs in ``keep``."""
    leftovers = sorted(p.name for p in folder.iterdir() if p.name not in keep)
    assert leftovers == [], f"left behind: {leftovers}"


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.tif"
    with pytest.raises(SceneNotFoundError, match=re.escape("nope.tif: scene not found")):
        tile_scene(str(missing), str(tmp_path / "out.zarr"), show_progress=False)
    assert_nothing_written(tmp_path)


def test_empty_file(tmp_path):
    empty = tmp_path / "upload.tif"
    empty.write_bytes(b"")
    with pytest.raises(EmptySceneError, match=r"upload.tif: the file is empty \(0 bytes\)"):
        tile_scene(str(empty), str(tmp_path / "out.zarr"), show_progress=False)
    assert_nothing_written(tmp_path, keep={"upload.tif"})


def test_not_a_raster(tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(np.random.default_rng(0).bytes(50_000))
    with pytest.raises(
        CorruptSceneError, match=re.escape("garbage.tif: GDAL cannot read this file as a raster")
    ):
        tile_scene(str(garbage), str(tmp_path / "out.zarr"), show_progress=False)
    assert_nothing_written(tmp_path, keep={"garbage.tif"})


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_upload(tmp_path, shared_data, fraction):
    """A real NAIP scene cut short, as by an interrupted upload."""
    source = REAL_SCENES["naip"].read_bytes()
    truncated = tmp_path / "naip_truncated.tif"
    truncated.write_bytes(source[: int(len(source) * fraction)])
    with pytest.raises(CorruptSceneError, match=r"naip_truncated\.tif: .*truncated or corrupt") as raised:
        tile_scene(str(truncated), str(tmp_path / "out.zarr"), chunk_size=256, show_progress=False)
    assert "previous exception" not in str(raised.value)  # GDAL's own reason, not rasterio's pointer to it
    assert_nothing_written(tmp_path, keep={"naip_truncated.tif"})


def test_missing_crs_is_refused_unless_allowed(tmp_path):
    scene = write_geotiff(tmp_path / "nocrs.tif", np.ones((2, 40, 50), np.uint16), crs=None)
    with pytest.raises(
        MissingCRSError,
        match=r"nocrs\.tif: the raster has no coordinate reference system.*--allow-ungeoreferenced",
    ):
        tile_scene(str(scene), str(tmp_path / "out.zarr"), show_progress=False)
    assert_nothing_written(tmp_path, keep={"nocrs.tif"})

    info = tile_scene(str(scene), str(tmp_path / "out.zarr"), allow_ungeoreferenced=True, show_progress=False)
    assert info.crs_wkt is None
    cog = tmp_path / "out.tif"
    mosaic_to_cog(str(tmp_path / "out.zarr"), str(cog), band=2, show_progress=False)
    import rasterio

    with rasterio.open(cog) as out:
        assert out.crs is None
        np.testing.assert_array_equal(out.read(1), np.ones((40, 50), np.uint16))


def test_all_nodata_scene(tmp_path):
    scene = write_geotiff(tmp_path / "blank.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    with pytest.raises(EmptySceneError, match=re.escape("blank.tif: every pixel is nodata")):
        tile_scene(str(scene), str(tmp_path / "out.zarr"), chunk_size=32, show_progress=False)
    assert_nothing_written(tmp_path, keep={"blank.tif"})


def test_unsupported_dtype(tmp_path):
    scene = write_geotiff(tmp_path / "complex.tif", np.ones((1, 16, 16), np.complex64))
    with pytest.raises(
        UnsupportedDtypeError, match=re.escape("complex.tif: pixel type complex64 is not supported")
    ):
        tile_scene(str(scene), str(tmp_path / "out.zarr"), show_progress=False)
    assert_nothing_written(tmp_path, keep={"complex.tif"})


def test_existing_outputs_are_refused_unless_overwrite(tiny_scene, tmp_path):
    store = tmp_path / "out.zarr"
    tile_scene(str(tiny_scene), str(store), show_progress=False)
    with pytest.raises(
        OutputExistsError, match=re.escape("out.zarr: output already exists; pass --overwrite")
    ):
        tile_scene(str(tiny_scene), str(store), show_progress=False)
    tile_scene(str(tiny_scene), str(store), overwrite=True, show_progress=False)

    cog = tmp_path / "out.tif"
    cog.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=re.escape("out.tif: output already exists")):
        mosaic_to_cog(str(store), str(cog), band=1, show_progress=False)
    assert cog.read_bytes() == b"precious"
    mosaic_to_cog(str(store), str(cog), band=1, overwrite=True, show_progress=False)
    assert cog.stat().st_size > 100


def test_band_choice_errors(tiny_scene, tmp_path):
    store = tmp_path / "out.zarr"
    tile_scene(str(tiny_scene), str(store), show_progress=False)
    with pytest.raises(BandCountError, match=re.escape("--band 5 is out of range: the store has bands 1..3")):
        mosaic_to_cog(str(store), str(tmp_path / "x.tif"), band=5, show_progress=False)
    with pytest.raises(ConfigurationError, match="choose which one to write with --band"):
        mosaic_to_cog(str(store), str(tmp_path / "x.tif"), show_progress=False)
    assert not (tmp_path / "x.tif").exists()


def test_unfinished_store_is_refused_by_readers(tiny_scene, tmp_path):
    from eoseg.scene.inspect import inspect_scene
    from eoseg.store.layout import create_store
    from eoseg.tile.stage import _store_info_for

    store = tmp_path / "half.zarr"
    create_store(str(store), _store_info_for(inspect_scene(str(tiny_scene)), 32))
    with pytest.raises(IncompleteStoreError, match=re.escape("half.zarr: the store was not finished")):
        mosaic_to_cog(str(store), str(tmp_path / "x.tif"), band=1, show_progress=False)
    assert not (tmp_path / "x.tif").exists()


def test_failure_during_mosaic_leaves_no_file(tiny_scene, tmp_path):
    """A chunk that cannot be decoded half way through: no COG, no temporary file remains."""
    store = tmp_path / "out.zarr"
    tile_scene(str(tiny_scene), str(store), chunk_size=32, show_progress=False)
    chunk_files = sorted(p for p in (store / "image" / "c").rglob("*") if p.is_file())
    chunk_files[len(chunk_files) // 2].write_bytes(b"not a compressed chunk")
    target = tmp_path / "maps" / "out.tif"
    with pytest.raises(CorruptStoreError):
        mosaic_to_cog(str(store), str(target), band=1, show_progress=False)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_corrupt_store_chunk_during_tiling_of_real_scene_cleans_up(tmp_path, shared_data):
    """Truncation caught while tiling (past the header probe) removes the partial store."""
    data = REAL_SCENES["landsat"].read_bytes()
    broken = tmp_path / "landsat_cut.tif"
    broken.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(CorruptSceneError, match=re.escape("landsat_cut.tif")):
        tile_scene(str(broken), str(tmp_path / "out.zarr"), chunk_size=128, show_progress=False)
    assert_nothing_written(tmp_path, keep={"landsat_cut.tif"})
    shutil.rmtree(tmp_path / "out.zarr", ignore_errors=True)
