"""Superpixel (SLIC) majority-vote refinement of label maps: removes speckle, seamless across chunks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import SHARED_DATA

from eoseg.geometry import ChunkGrid, Window
from eoseg.predict.refine import RefineOptions, refine_block_labels, refine_labels, refinement_region

OPTIONS = RefineOptions(refine="slic", refine_segment_size=16)


def test_majority_vote_removes_speckle_inside_regions_and_keeps_their_edge() -> None:
    rng = np.random.default_rng(0)
    image = np.zeros((3, 96, 96), np.float32)
    image[:, :, 48:] = 100.0  # two fields, edge at column 48
    image += rng.normal(0, 5, image.shape).astype(np.float32)
    truth = np.zeros((96, 96), np.uint8)
    truth[:, 48:] = 1
    speckled = truth.copy()
    flips = rng.random(truth.shape) < 0.1
    speckled[flips] = 1 - speckled[flips]
    valid = np.ones(truth.shape, bool)
    valid[:8, :8] = False  # nodata corner: neither segmented nor voted on
    speckled[~valid] = 255

    refined = refine_block_labels(image, speckled, valid, segment_size=16)

    assert (refined[valid] == truth[valid]).mean() > 0.99
    np.testing.assert_array_equal(refined[~valid], 255)


@pytest.mark.parametrize("chunk", [128, 200])
def test_chunked_refinement_equals_whole_scene_refinement(chunk: int) -> None:
    with rasterio.open(SHARED_DATA / "loveda" / "rural_1.tif") as source:
        image = source.read(window=((0, 320), (0, 300)))
    labels = (image.astype(np.int32).sum(axis=0) // 96).astype(np.uint8)  # a noisy intensity map
    valid = np.ones(labels.shape, bool)
    height, width = labels.shape
    everything = Window(0, 0, height, width)
    whole = refine_labels(
        image,
        labels,
        valid,
        region=everything,
        window=everything,
        options=OPTIONS,
        height=height,
        width=width,
    )
    tiled = np.full(labels.shape, 254, np.uint8)
    for _, window in ChunkGrid(height, width, chunk, chunk).windows():
        region = refinement_region(window, OPTIONS, height=height, width=width)
        rows, cols = region.slices
        tiled[window.slices] = refine_labels(
            image[:, rows, cols], labels[rows, cols], valid[rows, cols], region=region, window=window,
            options=OPTIONS, height=height, width=width,
        )  # fmt: skip
    np.testing.assert_array_equal(tiled, whole)
    assert 0.05 < (whole != labels).mean() < 0.6  # the vote changed the speckled map, not everything


def test_refinement_is_off_by_default_and_refuses_unknown_methods() -> None:
    assert not RefineOptions().enabled
    with pytest.raises(ValueError, match="slic"):
        RefineOptions(refine="watershed")  # type: ignore[arg-type]
