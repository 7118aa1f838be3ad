"""Round trip of real GeoTIFFs from rasterio's own test suite: tile -> store -> mosaic, or a clean refusal.

The files (BSD, tests/data/rasterio/SOURCE.md) were made by other people for other tests: odd sizes
(2 x 3 px), NaN and finite float nodata, an alpha band, a rotated grid, no CRS, a non-EPSG CRS, the whole
globe in degrees. For each, every valid pixel, the CRS, the transform, the nodata value and the model
band count survive into a COG per band (a band's own nodata pixels stay nodata).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from eoseg.errors import EmptySceneError
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.store.layout import read_image_window
from eoseg.tile.stage import tile_scene

DATA = Path(__file__).parent / "data" / "rasterio"


@pytest.mark.parametrize(
    "name",
    [
        "alpha.tif",
        "float_nan.tif",
        "float_raster_with_nodata.tif",
        "rgb-byte-tenth.tif",
        "rotated.tif",
        "world.byte.tif",
    ],
)
def test_every_pixel_and_the_georeferencing_survive_tile_and_mosaic(name, tmp_path):
    scene, store = DATA / name, str(tmp_path / "scene.zarr")
    info = tile_scene(str(scene), store, chunk_size=512, allow_ungeoreferenced=True, show_progress=False)
    with rasterio.open(scene) as source:
        interps = [interp.name for interp in source.colorinterp]
        bands = [i for i in source.indexes if interps[i - 1] != "alpha"]
        pixels = source.read(bands)
        crs, transform, nodata = source.crs, source.transform, source.nodata
        # Valid: every band differs from nodata, is finite, and the alpha band (if any) is not 0.
        expected_valid = np.ones(pixels.shape[1:], dtype=bool)
        if nodata is not None and not np.isnan(nodata):
            expected_valid &= np.all(pixels != nodata, axis=0)
        if np.issubdtype(pixels.dtype, np.floating):
            expected_valid &= np.all(np.isfinite(pixels), axis=0)
        if "alpha" in interps:
            expected_valid &= source.read(interps.index("alpha") + 1) > 0
    assert info.band_count == len(bands)
    _, valid = read_image_window(store, info, slice(None), slice(None))
    assert np.array_equal(valid, expected_valid)
    for band in range(1, info.band_count + 1):
        cog = tmp_path / f"band{band}.tif"
        mosaic_to_cog(store, str(cog), band=band, show_progress=False)
        with rasterio.open(cog) as out:
            assert (out.crs, out.transform, out.shape) == (crs, transform, pixels.shape[1:])
            assert out.nodata == nodata or (np.isnan(out.nodata) and np.isnan(nodata))
            written = out.read(1)
        assert np.array_equal(written[valid], pixels[band - 1][valid])
        if nodata is not None and not np.isnan(nodata):  # every value of the band itself survives
            assert np.array_equal(written, pixels[band - 1])


def test_an_all_nodata_scene_is_refused_and_leaves_nothing(tmp_path):
    store = tmp_path / "scene.zarr"
    with pytest.raises(EmptySceneError, match=r"all-nodata.tif: every pixel is nodata"):
        tile_scene(str(DATA / "all-nodata.tif"), str(store), chunk_size=512, show_progress=False)
    assert list(tmp_path.iterdir()) == []
