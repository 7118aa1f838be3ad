"""One test per real-world raster situation of ``../shared/cases/`` (README there: what is right).

Each test builds the case's input with its ``make.py`` in a temporary folder (from the shared scenes;
``SHARED_DATA`` is passed on) and checks the "what is right" column through the stage functions, or
through the ``eoseg`` command where the point is what a user sees (one ``error:`` line, exit code 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA, train_tiny_clusterer, write_geotiff

from eoseg.errors import ConfigurationError, MissingCRSError
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.mosaic.colors import NODATA_LABEL
from eoseg.predict.stage import predict_store
from eoseg.store.layout import open_data_array, read_image_window, read_store_info
from eoseg.tile.stage import tile_scene
from eoseg.train.patches import ZarrPatchSource

CASES = SHARED_DATA.parent / "cases"
EVERYTHING = (slice(None), slice(None))


def build_case(name: str, folder: Path) -> Path:
    """Run the case's ``make.py`` in ``folder``; returns the ``input.tif`` it wrote."""
    make = CASES / name / "make.py"
    if not make.is_file():
        pytest.fail(f"case {name} not found in {CASES} (set EOSEG_SHARED_DATA to the shared data folder)")
    env = dict(os.environ, SHARED_DATA=str(SHARED_DATA))
    subprocess.run([sys.executable, str(make)], cwd=folder, env=env, check=True, capture_output=True)
    return folder / "input.tif"


def tiled(scene: Path, folder: Path, **options: Any) -> tuple[str, Any]:
    store = str(folder / "scene.zarr")
    info = tile_scene(str(scene), store, chunk_size=128, show_progress=False, **options)
    return store, info


def run_eoseg(*args: str) -> subprocess.CompletedProcess:
    """The installed ``eoseg`` command, as a user runs it (a refusal needs no Prefect server)."""
    executable = Path(sys.executable).parent / "eoseg"
    return subprocess.run([str(executable), *args], capture_output=True, text=True, timeout=120)


def labels_of(store: str, folder: Path) -> np.ndarray:
    """A tiny clusterer trained on the store, then its label map (y, x) of the store."""
    model, labels = folder / "model.pt", str(folder / "labels.zarr")
    train_tiny_clusterer(store, model)
    info = predict_store(store, str(model), labels, show_progress=False)
    return np.asarray(open_data_array(labels, info)[...])


def assert_patches_hold_no_invalid_pixel(store: str) -> None:
    """Every training patch has the band mean (0 after normalisation) at each invalid pixel."""
    source = ZarrPatchSource(store, 32, min_valid_fraction=0.25)
    info = read_store_info(store)
    patches = source.read(range(len(source)))
    for patch, window in zip(patches, source.windows, strict=True):
        _, valid = read_image_window(store, info, *window.slices)
        assert np.isfinite(patch).all()
        assert (patch[:, ~valid] == 0).all()


def assert_nodata_everywhere(store: str, info: Any, expected_valid: np.ndarray, folder: Path) -> None:
    """The store's validity is ``expected_valid``; statistics, training patches and the map follow it."""
    _, valid = read_image_window(store, info, *EVERYTHING)
    assert np.array_equal(valid, expected_valid) and not valid.all()
    assert info.band_stats["count"][0] == float(expected_valid.sum())
    assert_patches_hold_no_invalid_pixel(store)
    assert np.array_equal(labels_of(store, folder) == NODATA_LABEL, ~expected_valid)


def test_01_alpha_band_is_a_mask_not_a_band(tmp_path):
    scene = build_case("01_alpha_band", tmp_path)
    store, info = tiled(scene, tmp_path)
    with rasterio.open(scene) as source:
        alpha = source.read(4)
    assert (info.band_count, info.alpha_band, info.band_names) == (3, 4, ("red", "green", "blue"))
    block, valid = read_image_window(store, info, *EVERYTHING)
    assert block.shape == (3, 400, 400)
    assert np.array_equal(valid, alpha > 0)
    assert info.band_stats["count"] == [float((alpha > 0).sum())] * 3
    assert max(info.band_stats["max"]) < 250  # the fill under alpha = 0 is not in the statistics
    labels = labels_of(store, tmp_path)
    assert np.array_equal(labels == NODATA_LABEL, alpha == 0)


def test_02_internal_mask_is_nodata_everywhere(tmp_path):
    scene = build_case("02_internal_mask_ycbcr", tmp_path)
    store, info = tiled(scene, tmp_path)
    with rasterio.open(scene) as source:
        mask = source.dataset_mask() > 0
    assert_nodata_everywhere(store, info, mask, tmp_path)


def test_04_nan_in_one_band_is_invalid_in_every_band(tmp_path):
    scene = build_case("04_nan_in_one_band", tmp_path)
    store, info = tiled(scene, tmp_path)
    with rasterio.open(scene) as source:
        data = source.read()
    expected = np.all(np.isfinite(data) & (data != -9999.0), axis=0)
    assert not expected[200:210].any()  # the NaN lines of band 3 are invalid in every band
    for name in ("mean", "std", "min", "max"):
        assert np.isfinite(info.band_stats[name]).all(), name
    assert_nodata_everywhere(store, info, expected, tmp_path)


def test_06_rotated_grid_survives_store_and_cog(tmp_path):
    import odc.geo.xr  # noqa: F401  (registers .odc)
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    scene = build_case("06_rotated", tmp_path)
    store, _ = tiled(scene, tmp_path)
    with rasterio.open(scene) as source:
        transform = source.transform
    image = xr.open_zarr(store, consolidated=False).image
    assert image.rio.transform() == transform
    assert image.odc.geobox.affine == transform
    cog = tmp_path / "band1.tif"
    mosaic_to_cog(store, str(cog), band=1, show_progress=False)
    with rasterio.open(cog) as out:
        assert out.transform == transform


def test_07_gcp_only_is_refused_or_warped_by_option(tmp_path):
    scene = build_case("07_gcp_only", tmp_path)
    with pytest.raises(MissingCRSError, match=r"ground control points.*--warp-gcps.*gdalwarp"):
        tiled(scene, tmp_path)
    assert not (tmp_path / "scene.zarr").exists()
    store, info = tiled(scene, tmp_path, warp_gcps=True)
    with rasterio.open(scene) as source:
        gcps, gcp_crs = source.gcps
        raw = source.read(1)
    assert info.crs_wkt == gcp_crs.to_wkt()
    for gcp in gcps:  # the warped grid puts each control point where the GCP says
        col, row = ~info.geobox.affine @ (gcp.x, gcp.y)
        assert abs(col - gcp.col) < 0.01 and abs(row - gcp.row) < 0.01
    block, _ = read_image_window(store, info, *EVERYTHING)
    assert np.array_equal(block[0], raw)


def test_10_narrow_strip_tiles_and_mosaics_but_training_is_refused_first(tmp_path):
    scene = build_case("10_narrow_strip", tmp_path)
    store, _ = tiled(scene, tmp_path)
    cog = tmp_path / "band1.tif"
    mosaic_to_cog(store, str(cog), band=1, show_progress=False)
    with rasterio.open(cog) as out, rasterio.open(scene) as source:
        assert out.shape == (1, 900) and np.array_equal(out.read(1), source.read(1))
    with pytest.raises(ConfigurationError, match=r"scene.zarr: the scene \(900 x 1 px\).*at least 32 x 32"):
        train_tiny_clusterer(store, tmp_path / "model.pt")
    assert not (tmp_path / "model.pt").exists()
    result = run_eoseg("train", "clusterer", store, "--out", str(tmp_path / "model.pt"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {store}: the scene (900 x 1 px)")
    assert not (tmp_path / "model.pt").exists()


def test_10_narrow_strip_run_refuses_in_one_line_before_any_output(tmp_path):
    scene = build_case("10_narrow_strip", tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_eoseg("run", str(scene), "--out", str(tmp_path / "map.tif"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {scene}: the scene (900 x 1 px)") and "at least 64 x 64" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_11_scale_offset_and_descriptions_are_kept(tmp_path):
    scene = build_case("11_scale_offset", tmp_path)
    store, info = tiled(scene, tmp_path)
    metadata = info.band_metadata
    assert metadata["scale"] == [0.0001, 0.001] and metadata["offset"] == [0.0, -0.5]
    assert info.band_descriptions == ("ndvi", "nir_reflectance")
    with rasterio.open(scene) as source:
        raw = source.read()
    block, _ = read_image_window(store, info, *EVERYTHING)
    assert np.array_equal(block, raw)  # the store (and the model) hold the raw DN, documented
    cog = tmp_path / "band2.tif"
    mosaic_to_cog(store, str(cog), band=2, show_progress=False)
    with rasterio.open(cog) as out:
        assert (out.scales, out.offsets, out.descriptions) == ((0.001,), (-0.5,), ("nir_reflectance",))


def _sidecar_collar(scene: Path) -> np.ndarray:
    with rasterio.open(scene) as source:
        return np.any(source.read() == 0, axis=0)  # nodata 0 in the sidecar, for every band


def test_12_sidecar_nodata_is_honoured_locally(tmp_path):
    scene = build_case("12_sidecar_nodata", tmp_path)
    store, info = tiled(scene, tmp_path)
    _, valid = read_image_window(store, info, *EVERYTHING)
    assert info.nodata == 0
    assert np.array_equal(~valid, _sidecar_collar(scene)) and (~valid).sum() > 60_000


def test_12_sidecar_nodata_is_honoured_on_s3(tmp_path, s3_bucket):
    from eoseg.io import storage

    scene = build_case("12_sidecar_nodata", tmp_path)
    filesystem = storage.s3_filesystem()
    for name in ("input.tif", "input.tif.aux.xml"):
        filesystem.put_file(str(tmp_path / name), f"{s3_bucket}/scenes/{name}")
    store = f"{s3_bucket}/scene.zarr"
    info = tile_scene(f"{s3_bucket}/scenes/input.tif", store, chunk_size=256, show_progress=False)
    _, valid = read_image_window(store, info, *EVERYTHING)
    assert info.nodata == 0 and np.array_equal(~valid, _sidecar_collar(scene))


def test_13_float_nodata_is_declared_to_xarray_readers_and_zeros_stay_data(tmp_path):
    import odc.geo.xr  # noqa: F401
    import rioxarray  # noqa: F401
    import xarray as xr

    scene = build_case("13_float_finite_nodata", tmp_path)
    store, info = tiled(scene, tmp_path)
    nodata = float(np.finfo(np.float32).min)
    image = xr.open_zarr(store, consolidated=False).image
    assert image.rio.nodata == np.float32(nodata) and image.odc.nodata == nodata
    values = image.values
    assert not np.isnan(values).any()
    assert (values[0, 300:310, 300:310] == 0).all()
    _, valid = read_image_window(store, info, *EVERYTHING)
    assert valid[300:310, 300:310].all()
    with rasterio.open(scene) as source:
        assert np.array_equal(~valid, np.all(source.read() == nodata, axis=0))


def test_a_scene_without_nodata_declares_no_fill_value(tmp_path):
    import rioxarray  # noqa: F401
    import xarray as xr

    scene = write_geotiff(tmp_path / "float.tif", np.zeros((2, 40, 40), np.float32), nodata=None)
    store, _ = tiled(scene, tmp_path)
    image = xr.open_zarr(store, consolidated=False).image
    assert image.rio.nodata is None and "_FillValue" not in image.encoding
    assert (image.values == 0).all()


def test_tile_on_a_corrupt_file_prints_one_line_and_exits_2(tmp_path, shared_data):
    scene = tmp_path / "truncated.tif"
    scene.write_bytes((shared_data / "landsat" / "RGB.byte.tif").read_bytes()[:20_000])
    result = run_eoseg("tile", str(scene), "--out", str(tmp_path / "s.zarr"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {scene}: "), result.stderr
    assert not (tmp_path / "s.zarr").exists()
