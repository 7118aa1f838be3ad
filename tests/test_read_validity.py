"""`read_valid_window` compares integer pixels with nodata itself where GDAL's mask band is only that
comparison (or all valid): pixels, fill and validity must equal what GDAL's mask bands give."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from eoseg.scene.validity import _nodata_comparisons, model_band_indexes, read_valid_window


def _write(path: Path, dtype: str, nodata: float | None, *, alpha: bool = False) -> Path:
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    rng = np.random.default_rng(8)
    low, high = (info.min, info.max) if info else (-5, 5)
    pixels = rng.integers(low, high, size=(3, 40, 50), endpoint=True).astype(dtype)
    if nodata is not None:
        pixels[:, :6] = int(nodata) if info else nodata  # a collar of nodata in every band
        pixels[1, 20:24, 10:30] = int(nodata) if info else nodata  # and some in one band only
    transform = from_origin(500000, 5200000, 10, 10)
    with rasterio.open(
        path, "w", driver="GTiff", width=50, height=40, count=3 + alpha, dtype=dtype, crs="EPSG:32614",
        transform=transform, nodata=nodata,
    ) as dataset:  # fmt: skip
        dataset.write(pixels, [1, 2, 3])
        if alpha:
            mask = np.full((40, 50), 255, np.uint8)
            mask[:, :9] = 0
            dataset.write(mask, 4)
            dataset.colorinterp = [*dataset.colorinterp[:3], rasterio.enums.ColorInterp.alpha]
    return path


def _per_band_nodata_vrt(path: Path, tiff: Path) -> Path:
    """A VRT of the three bands of ``tiff`` with nodata 0, 7 and 200 (GeoTIFF has one value for all)."""
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{band}"><NoDataValue>{nodata}</NoDataValue>'
        f"<SimpleSource><SourceFilename>{tiff}</SourceFilename><SourceBand>{band}</SourceBand>"
        "</SimpleSource></VRTRasterBand>"
        for band, nodata in ((1, 0), (2, 7), (3, 200))
    )
    path.write_text(f'<VRTDataset rasterXSize="50" rasterYSize="40">{bands}</VRTDataset>')
    return path


def _reference(dataset, window, fill):
    """The rule as GDAL's mask bands give it (what :func:`read_valid_window` did before the shortcut)."""
    bands = list(model_band_indexes(dataset))
    block = dataset.read(bands, window=window)
    band_valid = dataset.read_masks(bands, window=window) > 0
    if np.issubdtype(block.dtype, np.floating):
        band_valid &= np.isfinite(block)
    if fill is not None:
        block[~band_valid] = fill
    return block, np.all(band_valid, axis=0)


CASES = {  # name: (dtype, nodata, alpha, fill, whether the comparison replaces GDAL's masks)
    "uint8 nodata 0": ("uint8", 0, False, 0, True),
    "uint16 nodata 65535": ("uint16", 65535, False, 65535, True),
    "int16 nodata -1": ("int16", -1, False, -1, True),
    "int32 nodata -9999, other fill": ("int32", -9999, False, 3, True),
    "uint8 without nodata": ("uint8", None, False, None, True),
    "uint8 fractional nodata": ("uint8", 0.5, False, 0.5, False),
    "float32 nodata": ("float32", -1.0, False, -1.0, False),
    "uint8 alpha band": ("uint8", None, True, None, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_validity_equals_gdal_masks(name, tmp_path):
    dtype, nodata, alpha, fill, compared = CASES[name]
    path = _write(tmp_path / "scene.tif", dtype, nodata, alpha=alpha)
    with rasterio.open(path) as dataset:
        bands = model_band_indexes(dataset)
        assert (_nodata_comparisons(dataset, bands, np.dtype(dtype)) is not None) == compared
        for window in (None, Window(3, 2, 30, 25)):
            block, valid = read_valid_window(dataset, window, indexes=bands, fill=fill)
            expected_block, expected_valid = _reference(dataset, window, fill)
            np.testing.assert_array_equal(block, expected_block)
            np.testing.assert_array_equal(valid, expected_valid)
            assert block.dtype == expected_block.dtype and valid.dtype == bool
    if nodata is not None and compared:
        assert not valid.all() and valid.any()


def test_per_band_nodata_values_and_a_fill_of_the_first_band(tmp_path):
    vrt = _per_band_nodata_vrt(tmp_path / "scene.vrt", _write(tmp_path / "scene.tif", "uint8", None))
    with rasterio.open(vrt) as dataset:
        assert _nodata_comparisons(dataset, (1, 2, 3), np.dtype("uint8")) == [0, 7, 200]
        block, valid = read_valid_window(dataset, indexes=(1, 2, 3), fill=0)
        expected_block, expected_valid = _reference(dataset, None, 0)
    np.testing.assert_array_equal(block, expected_block)
    np.testing.assert_array_equal(valid, expected_valid)
    assert not valid.all()
