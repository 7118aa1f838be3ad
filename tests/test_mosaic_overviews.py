"""The mosaic's overviews are built piece by piece in the parallel stage, and are those of the whole band.

Each piece (a 1024 px region, or the chunk size when that is a multiple of 1024) builds its own overviews
at every COG factor (eoseg/mosaic/pieces.py); the levels whole in 512 px tiles are copied from the pieces,
the coarser ones written from a VRT of the pieces' overviews. As no block of pixels straddles two pieces,
the COG's overviews must equal GDAL's overviews of the whole band in one file, for nearest and mode
resampling, whatever the store's chunk size."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import interrupted_mosaic
from rasterio.enums import Resampling
from rio_cogeo.cogeo import cog_validate

from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.tile.stage import tile_scene

HEIGHT, WIDTH = 2048, 2560  # overviews 2, 4 and 8 (the smallest within one 512 px block)
TRANSFORM = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4200000.0)

# The tests count, interrupt and spread pieces: 1024 px pieces give these small maps several.
pytestmark = pytest.mark.usefixtures("mosaic_pieces_1024")


def _scene(path, rng):
    """A 2-band uint8 scene of class-like patches (values 1..9), nodata 0 in one corner."""
    coarse = rng.integers(1, 10, size=(2, HEIGHT // 8, WIDTH // 8), dtype=np.uint8)
    pixels = coarse.repeat(8, axis=1).repeat(8, axis=2)
    noise = rng.random(pixels.shape) < 0.3
    pixels[noise] = rng.integers(1, 10, size=int(noise.sum()), dtype=np.uint8)
    pixels[:, :100, :300] = 0
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 2, "dtype": "uint8",
               "crs": "EPSG:32614", "transform": TRANSFORM, "nodata": 0}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)
    return pixels


def _whole_band_overviews(band, path, resampling):
    """GDAL's overviews of ``band`` built over the whole band in one GeoTIFF."""
    profile = {"driver": "GTiff", "width": WIDTH, "height": HEIGHT, "count": 1, "dtype": "uint8", "nodata": 0,
               "crs": "EPSG:32614", "transform": TRANSFORM}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(band, 1)
        out.build_overviews([2, 4, 8], Resampling[resampling])
    return [_level(path, level) for level in (0, 1, 2)]


def _level(path, level):
    with rasterio.open(path, overview_level=level) as dataset:
        return dataset.read(1)


@pytest.mark.parametrize("resampling", ["nearest", "mode"])
def test_cog_overviews_built_per_chunk_equal_the_whole_band_overviews(resampling, tmp_path):
    pixels = _scene(tmp_path / "scene.tif", np.random.default_rng(7))
    store = tmp_path / "scene.zarr"
    tile_scene(str(tmp_path / "scene.tif"), str(store), chunk_size=512, show_progress=False)

    cog = tmp_path / "band1.tif"
    summary = mosaic_to_cog(str(store), str(cog), band=1, overview_resampling=resampling, show_progress=False)

    assert summary.overview_levels == (2, 4, 8)
    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(cog) as out:
        assert (out.width, out.height, out.transform, out.nodata) == (WIDTH, HEIGHT, TRANSFORM, 0)
        assert out.overviews(1) == [2, 4, 8]
        np.testing.assert_array_equal(out.read(1), pixels[0])
    expected = _whole_band_overviews(pixels[0], tmp_path / "whole.tif", resampling)
    for level, want in enumerate(expected):
        got = _level(cog, level)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert not list(tmp_path.glob(".band1.tif*")), "the staging folder is removed once published"


@pytest.mark.parametrize("chunk_size", [660, 256])  # not a multiple of 8; smaller than a COG block
def test_other_chunk_sizes_give_the_same_band_and_overviews(chunk_size, tmp_path):
    pixels = _scene(tmp_path / "scene.tif", np.random.default_rng(8))
    store = tmp_path / "scene.zarr"
    tile_scene(str(tmp_path / "scene.tif"), str(store), chunk_size=chunk_size, show_progress=False)

    cog = tmp_path / "band2.tif"
    summary = mosaic_to_cog(str(store), str(cog), band=2, show_progress=False)

    assert summary.overview_levels == (2, 4, 8)
    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(cog) as out:
        np.testing.assert_array_equal(out.read(1), pixels[1])
    # 1024 px pieces whatever the chunks: the overviews are still those of the whole band
    for level, want in enumerate(_whole_band_overviews(pixels[1], tmp_path / "whole.tif", "nearest")):
        np.testing.assert_array_equal(_level(cog, level), want)


def test_odd_sized_scene_keeps_every_pixel_and_overviews_cover_the_edge(tmp_path):
    """1100 x 1390 px, 512 px chunks: edge pieces are partial; overviews round up (no edge pixel lost)."""
    rng = np.random.default_rng(9)
    pixels = rng.integers(1, 10, size=(1, 1100, 1390), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": 1390, "height": 1100, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32614", "transform": TRANSFORM, "nodata": 0}  # fmt: skip
    with rasterio.open(tmp_path / "odd.tif", "w", **profile) as out:
        out.write(pixels)
    store = tmp_path / "odd.zarr"
    tile_scene(str(tmp_path / "odd.tif"), str(store), chunk_size=512, show_progress=False)

    cog = tmp_path / "odd_cog.tif"
    mosaic_to_cog(str(store), str(cog), band=1, show_progress=False)

    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(cog) as out:
        np.testing.assert_array_equal(out.read(1), pixels[0])
    for level, factor in enumerate((2, 4)):
        overview = _level(cog, level)
        assert overview.shape == (-(-1100 // factor), -(-1390 // factor))
        # nearest: every overview pixel is a pixel of the f x f block it stands for
        for row, col in [(0, 0), (overview.shape[0] - 1, overview.shape[1] - 1), (100, 200)]:
            block = pixels[0, row * factor : (row + 1) * factor, col * factor : (col + 1) * factor]
            assert overview[row, col] in block


def test_interrupted_mosaic_resumes_its_pieces_with_overviews_only_for_the_same_resampling(tmp_path, caplog):
    pixels = _scene(tmp_path / "scene.tif", np.random.default_rng(10))
    store = tmp_path / "scene.zarr"
    tile_scene(str(tmp_path / "scene.tif"), str(store), chunk_size=512, show_progress=False)
    whole = _whole_band_overviews(pixels[0], tmp_path / "whole.tif", "mode")
    cog = tmp_path / "map.tif"
    caplog.set_level("INFO", logger="eoseg")

    interrupted_mosaic(str(store), str(cog), pieces=3, band=1, overview_resampling="nearest")
    assert not cog.exists()
    # Another resampling: the nearest pieces' overviews are not reused, every piece is written again.
    interrupted_mosaic(str(store), str(cog), pieces=2, band=1, overview_resampling="mode")
    assert "mosaic: 6 of 6 chunks to compute (0 done)" in caplog.messages  # 1024 px pieces of 2048 x 2560
    mosaic_to_cog(str(store), str(cog), band=1, overview_resampling="mode", show_progress=False)
    assert "mosaic: 4 of 6 chunks to compute (2 done)" in caplog.messages

    assert cog_validate(str(cog), quiet=True) == (True, [], [])
    with rasterio.open(cog) as out:
        np.testing.assert_array_equal(out.read(1), pixels[0])
    for level, want in enumerate(whole):
        np.testing.assert_array_equal(_level(cog, level), want)
