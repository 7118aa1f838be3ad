"""Tile -> mosaic round trips on every real scene: pixels, CRS, transform and nodata survive exactly."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr
from conftest import REAL_SCENES
from rio_cogeo.cogeo import cog_validate

from eoseg.geometry import geobox_of
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.store.layout import read_store_info
from eoseg.tile.stage import tile_scene


@pytest.mark.parametrize("name", sorted(REAL_SCENES))
def test_round_trip_on_real_scene_is_exact(name, tmp_path, dask_client, shared_data):
    source = REAL_SCENES[name]
    store = tmp_path / f"{name}.zarr"
    info = tile_scene(str(source), str(store), chunk_size=256, client=dask_client, show_progress=False)

    with rasterio.open(source) as src:
        assert (info.height, info.width, info.band_count) == (src.height, src.width, src.count)
        assert info.complete and info.band_stats is not None
        assert info.geobox == geobox_of(src)  # CRS, transform and shape travel as one value
        for band in range(1, src.count + 1):
            cog = tmp_path / f"{name}_b{band}.tif"
            mosaic_to_cog(str(store), str(cog), band=band, show_progress=False)
            assert cog_validate(str(cog), quiet=True) == (True, [], [])
            with rasterio.open(cog) as out:
                np.testing.assert_array_equal(out.read(1), src.read(band))
                assert out.crs == src.crs
                assert out.transform == src.transform
                assert out.nodata == src.nodata
                assert (out.width, out.height) == (src.width, src.height)
                assert out.block_shapes == [(512, 512)]
                assert out.profile["compress"] == "deflate"
                assert out.tags()["EOSEG_SOURCE"] == str(source)


def test_store_layout_follows_cf_conventions(tmp_path, shared_data):
    import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
    import rioxarray  # noqa: F401  (registers the .rio accessor; eoseg writes stores without it)

    source = REAL_SCENES["landsat"]
    store = tmp_path / "landsat.zarr"
    tile_scene(str(source), str(store), chunk_size=300, show_progress=False)
    info = read_store_info(str(store))
    dataset = xr.open_zarr(store, consolidated=False, mask_and_scale=False, decode_coords="all")
    image = dataset["image"]
    assert image.dims == ("band", "y", "x")
    # decode_coords="all" moves the CF grid_mapping attribute into .encoding
    assert image.encoding.get("grid_mapping", image.attrs.get("grid_mapping")) == "spatial_ref"
    assert image.attrs["band_names"] == ["red", "green", "blue"]
    assert image.chunks == ((3,), (300, 300, 118), (300, 300, 191))
    with rasterio.open(source) as src:
        assert image.rio.crs == src.crs
        assert image.rio.transform() == src.transform
        # x/y are pixel centres
        assert float(dataset.x[0]) == pytest.approx(src.transform.c + src.transform.a / 2)
        assert float(dataset.y[0]) == pytest.approx(src.transform.f + src.transform.e / 2)
        assert "crs_wkt" in dataset["spatial_ref"].attrs
        # odc-geo reads the same grid: the store's georeferencing is the scene's GeoBox, exactly
        assert image.odc.geobox == geobox_of(src) == info.geobox
        np.testing.assert_array_equal(image.values, src.read())
    assert info.nodata == 0 and info.source_uri == str(source)
    # statistics cover valid pixels only: the zero collar, and any pixel where a band holds nodata 0
    with rasterio.open(source) as src:
        data = src.read().astype(np.float64)
        valid = np.all(data != 0, axis=0)
        np.testing.assert_allclose(info.band_stats["mean"], data[:, valid].mean(axis=1))
        np.testing.assert_allclose(info.band_stats["std"], data[:, valid].std(axis=1), rtol=1e-9)


def test_scene_smaller_than_one_chunk_works(tiny_scene, tmp_path):
    store = tmp_path / "tiny.zarr"
    info = tile_scene(str(tiny_scene), str(store), chunk_size=1024, show_progress=False)
    assert (info.chunk_rows, info.chunk_cols) == (70, 90)
    cog = tmp_path / "tiny_band3.tif"
    summary = mosaic_to_cog(str(store), str(cog), band=3, show_progress=False)
    assert summary.overview_levels == ()  # smaller than one 512 block: no overviews needed
    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(tiny_scene) as src, rasterio.open(cog) as out:
        np.testing.assert_array_equal(out.read(1), src.read(3))


def test_interrupted_tile_is_resumed_not_restarted(tmp_path, shared_data):
    """A store left unfinished (as by a killed run) is resumed: finished chunks are not read again."""
    from eoseg.scene.inspect import inspect_scene
    from eoseg.store.lifecycle import chunks_done, open_store_output
    from eoseg.tile.stage import TileChunkJob, _store_info_for, tile_chunk

    source = REAL_SCENES["naip"]
    target = tmp_path / "naip.zarr"
    scene = inspect_scene(str(source))
    output = open_store_output(str(target), _store_info_for(scene, 256), overwrite=False)
    assert not output.resuming and output.staging == str(tmp_path / ".naip.zarr.partial")
    # Simulate a run killed after two chunks: write them for real, flag them done.
    windows = list(output.info.grid.windows())
    for index, window in windows[:2]:
        tile_chunk(TileChunkJob(scene.uri, output.staging, index, window, scene.nodata))
    assert chunks_done(output.staging).sum() == 2
    assert not target.exists()

    resumed = tile_scene(str(source), str(target), chunk_size=256, show_progress=False)
    assert resumed.complete and target.exists() and not (tmp_path / ".naip.zarr.partial").exists()
    with rasterio.open(source) as src:
        stored = xr.open_zarr(target, consolidated=False, mask_and_scale=False)["image"].values
        np.testing.assert_array_equal(stored, src.read())
