"""Which pixels of a scene hold data: one decision, from every source GDAL knows.

A raster marks missing data in several ways, and real files mix them: a nodata value (per band or per
dataset, also when it lives only in a ``.aux.xml``/``.aux`` sidecar), an alpha band (RGBA orthophotos),
an internal or external (``.msk``) mask (JPEG-compressed aerial COGs), and NaN or infinity in float
bands. GDAL combines all but the last into each band's *mask band* (RFC 15: ``GDALGetMaskBand``, which
rasterio reads with ``read_masks``); :func:`read_valid_window` takes GDAL's masks as they are and adds
the non-finite test GDAL does not make. A pixel is valid only where **every** model band is valid.

The alpha band itself is a mask, not a spectral band: :func:`model_band_indexes` leaves it out.
Sidecars are found because eoseg opens scenes with ``GDAL_DISABLE_READDIR_ON_OPEN=TRUE``
(:func:`eoseg.io.storage.gdal_config_for`): GDAL then probes the known sidecar names one by one (one
``stat``/``HEAD`` each) instead of listing the folder or bucket prefix.

:func:`valid_pixel_mask` is the older rule, from pixel values alone; it is kept for stores written before
the ``valid`` variable existed (layout version 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rasterio.io import DatasetReaderBase


def model_band_indexes(dataset: DatasetReaderBase) -> tuple[int, ...]:
    """The 1-based indexes of the bands a model sees: every band but an alpha band.

    Args:
        dataset: an open rasterio dataset (or ``WarpedVRT``).

    Returns:
        The band indexes in file order; all bands when none is an alpha band.
    """
    from rasterio.enums import ColorInterp

    alpha = {
        index for index, interp in enumerate(dataset.colorinterp, start=1) if interp == ColorInterp.alpha
    }
    kept = tuple(index for index in dataset.indexes if index not in alpha)
    return kept or tuple(dataset.indexes)  # a lone alpha band is still the only data there is


def alpha_band_index(dataset: DatasetReaderBase) -> int | None:
    """The 1-based index of the dataset's alpha band, or ``None``."""
    excluded = set(dataset.indexes) - set(model_band_indexes(dataset))
    return min(excluded) if excluded else None


def read_valid_window(
    dataset: DatasetReaderBase,
    window: Any = None,
    *,
    indexes: tuple[int, ...] | None = None,
    fill: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one window of the model bands and say which of its pixels hold data.

    Args:
        dataset: an open rasterio dataset (or ``WarpedVRT``); not thread-safe, like every rasterio dataset.
        window: a ``rasterio.windows.Window`` (default: the whole raster).
        indexes: the bands to read, 1-based (default: :func:`model_band_indexes`, i.e. no alpha band).
        fill: if given (the scene's nodata value), each band's own invalid pixels (its mask is 0, or the
            value is not finite) are set to it in ``block``. A band's valid value is never changed, even
            where another band makes the pixel invalid, so every value GDAL calls data survives.

    Returns:
        ``(block, valid)``: ``block`` of shape ``(bands, h, w)`` in the file's dtype, and ``valid`` of shape
        ``(h, w)``, bool, True where every band is valid in GDAL's mask band (nodata value, alpha, internal
        or ``.msk`` mask, sidecar nodata) and, for float bands, finite.

    Raises:
        rasterio.errors.RasterioIOError (or a ``CPLE_*`` error): GDAL cannot read the window.
    """
    bands = model_band_indexes(dataset) if indexes is None else indexes
    block = dataset.read(list(bands), window=window)
    compared = _nodata_comparisons(dataset, bands, block.dtype)
    if compared is not None:  # GDAL's mask is a comparison with nodata (or all valid): made here, exactly
        valid = np.ones(block.shape[1:], dtype=bool)
        for layer, nodata in zip(block, compared, strict=True):
            if nodata is not None and fill is not None and fill != nodata:
                missing = layer == nodata  # compared once: for the mask and for the fill
                valid &= ~missing
                layer[missing] = fill
            elif nodata is not None:
                valid &= layer != nodata
        return block, valid
    band_valid = dataset.read_masks(list(bands), window=window) > 0
    if np.issubdtype(block.dtype, np.floating):
        band_valid &= np.isfinite(block)
    if fill is not None:
        block[~band_valid] = fill
    return block, np.all(band_valid, axis=0)


def _nodata_comparisons(
    dataset: DatasetReaderBase, bands: tuple[int, ...], dtype: np.dtype[Any]
) -> list[int | None] | None:
    """Per band, the nodata value GDAL's mask band compares integer pixels with (None: the band is all
    valid), when every band's mask is only that (GDAL's ``GMF_NODATA`` or ``GMF_ALL_VALID`` flags, RFC 15);
    else None, and GDAL's masks are read.

    Reading the masks of a nodata band makes GDAL compare every pixel again and hand over one byte per
    pixel and band: ~20 % of a tile chunk's read (benchmarks/results/tile_mosaic.md). The shortcut is
    taken only where the comparison is exact: 8- to 32-bit integer pixels and an integral nodata value in
    their range (GDAL casts another in-range value to the pixel type first).
    """
    from rasterio.enums import MaskFlags

    if dtype.kind not in "iu" or dtype.itemsize > 4:
        return None
    flags, nodata_values, limits = dataset.mask_flag_enums, dataset.nodatavals, np.iinfo(dtype)
    compared: list[int | None] = []
    for band in bands:
        nodata = nodata_values[band - 1]
        if flags[band - 1] == [MaskFlags.all_valid]:
            compared.append(None)
        elif (
            flags[band - 1] == [MaskFlags.nodata]
            and nodata is not None
            and float(nodata).is_integer()
            and limits.min <= nodata <= limits.max
        ):
            compared.append(int(nodata))
        else:
            return None
    return compared


def valid_pixel_mask(block: np.ndarray, nodata: float | int | None) -> np.ndarray:
    """``(rows, cols)`` True where a pixel holds data by the layout-1 rule: not every band is nodata/NaN.

    Only for stores without a ``valid`` variable (layout version 1); new stores record validity.
    """
    invalid = np.zeros(block.shape[-2:], dtype=bool)
    if nodata is not None:
        if isinstance(nodata, float) and np.isnan(nodata):
            invalid = np.all(np.isnan(block), axis=0)
        else:
            invalid = np.all(block == nodata, axis=0)
    if np.issubdtype(block.dtype, np.floating):
        invalid |= np.all(np.isnan(block), axis=0)
    return ~invalid
