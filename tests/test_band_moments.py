"""Band statistics: the integer path for 8/16-bit pixels equals plain float64 sums exactly."""

from __future__ import annotations

import numpy as np
import pytest

from eoseg.tile.stage import BandMoments


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("all_valid", [True, False])
def test_integer_histogram_moments_equal_float_sums(dtype, all_valid):
    info = np.iinfo(dtype)
    block = (
        np.random.default_rng(4).integers(info.min, info.max, size=(3, 37, 41), endpoint=True).astype(dtype)
    )
    valid = np.ones((37, 41), bool) if all_valid else np.random.default_rng(5).random((37, 41)) > 0.3
    fast = BandMoments.of_block(block, valid)
    values = block[:, valid].astype(np.float64)
    assert fast.count == values.shape[1]
    np.testing.assert_array_equal(fast.total, values.sum(1))
    np.testing.assert_array_equal(fast.total_sq, (values**2).sum(1))
    np.testing.assert_array_equal(fast.minimum, values.min(1))
    np.testing.assert_array_equal(fast.maximum, values.max(1))


def test_no_valid_pixels_gives_an_empty_moment():
    moments = BandMoments.of_block(np.zeros((2, 4, 4), np.uint16), np.zeros((4, 4), bool))
    assert moments.count == 0 and np.isinf(moments.minimum).all()
    total = moments + BandMoments.of_block(np.full((2, 4, 4), 7, np.uint16), np.ones((4, 4), bool))
    assert (
        total.count == 16 and total.summary()["mean"] == [7.0, 7.0] and total.summary()["std"] == [0.0, 0.0]
    )


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
def test_moments_summed_in_32_bit_pieces_stay_exact_at_the_extremes(dtype):
    """More values than one 32-bit piece (2**16) holds, most at the type's largest magnitude: the piece
    sums of values and of 8-bit squares must not overflow."""
    info = np.iinfo(dtype)
    block = np.full((2, 300, 301), info.max, dtype=dtype)  # 90300 values per band
    block[1] = info.min
    block[0, :3, :5] = 1
    for valid in (np.ones((300, 301), bool), np.arange(300 * 301).reshape(300, 301) % 7 != 0):
        fast = BandMoments.of_block(block, valid)
        values = block[:, valid].astype(np.float64)
        np.testing.assert_array_equal(fast.total, values.sum(1))
        np.testing.assert_array_equal(fast.total_sq, (values**2).sum(1))
        np.testing.assert_array_equal(fast.minimum, values.min(1))
        np.testing.assert_array_equal(fast.maximum, values.max(1))
