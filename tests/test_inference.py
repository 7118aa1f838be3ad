"""Tiled, haloed inference over a store: agrees with whole-array inference, loads weights once per worker."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REAL_SCENES, open_map_on_scene_grid

from eoseg.errors import BandCountError
from eoseg.mosaic.colors import NODATA_LABEL
from eoseg.predict.stage import model_load_counts, predict_store
from eoseg.store.layout import open_data_array, read_image_window, read_store_info
from eoseg.tile.stage import tile_scene
from eoseg.train.stage import train_on_stores

TINY_TRAINING = {
    "epochs": 1,
    "iterations": 3,
    "batch_size": 4,
    "patch_size": 32,
    "num_classes": 6,
    "seed": 3,
}


@pytest.fixture(scope="module")
def landsat_model(tmp_path_factory, shared_data):
    """A small clusterer trained on the real Landsat scene (CPU, seconds)."""
    folder = tmp_path_factory.mktemp("landsat_model")
    store = folder / "landsat.zarr"
    tile_scene(str(REAL_SCENES["landsat"]), str(store), chunk_size=200, show_progress=False)
    model = folder / "landsat.pt"
    train_on_stores("clusterer", [str(store)], str(model), params=TINY_TRAINING, max_patches=16)
    return store, model


def _whole_and_tiled(landsat_model, tmp_path, pooling):
    from eo_models.predict import load_predictor

    store, model = landsat_model
    labels = tmp_path / f"labels_{pooling}.zarr"
    labels_info = predict_store(
        str(store), str(model), str(labels), attention_pooling=pooling, show_progress=False
    )
    info = read_store_info(str(store))
    tiled = np.asarray(open_data_array(str(labels), labels_info)[...])
    scene, valid = read_image_window(str(store), info, slice(None), slice(None))
    whole = load_predictor(str(model)).predict(scene, valid)
    whole[~valid] = NODATA_LABEL
    near_edge = np.zeros(tiled.shape, dtype=bool)  # within one halo of an internal chunk edge
    halo = labels_info.model["halo"]
    for edge in range(info.chunk_rows, info.height, info.chunk_rows):
        near_edge[max(0, edge - halo) : edge + halo, :] = True
    for edge in range(info.chunk_cols, info.width, info.chunk_cols):
        near_edge[:, max(0, edge - halo) : edge + halo] = True
    differs = tiled != whole
    figures = (float((~differs).mean()), float(differs[near_edge].mean()), float(differs[~near_edge].mean()))
    print(
        f"\n{pooling} pooling: agreement {figures[0]:.6f}; disagreement near chunk edges {figures[1]:.6f}, "
        f"interior {figures[2]:.6f}"
    )
    return tiled, valid, figures


def test_tiled_inference_equals_whole_array_inference_with_scene_pooling(landsat_model, tmp_path):
    """Default: descriptors pooled over the whole scene first, so chunks see what the whole image sees."""
    tiled, valid, (agreement, near_edges, interior) = _whole_and_tiled(landsat_model, tmp_path, "scene")
    assert agreement >= 0.999
    assert near_edges <= max(2 * interior, 0.001)
    np.testing.assert_array_equal(tiled[~valid], NODATA_LABEL)  # nodata in -> nodata out
    assert (tiled[valid] < 6).all()


def test_tile_pooling_differs_only_through_the_attention(landsat_model, tmp_path):
    """One-pass mode: the channel attention pools per tile, so a few near-tie pixels flip (about 0.1-0.2 %
    with 200 px chunks); the convolutions alone would be exact because the halo exceeds their radius."""
    _, _, (agreement, near_edges, interior) = _whole_and_tiled(landsat_model, tmp_path, "tile")
    assert agreement >= 0.995
    assert near_edges <= max(3 * interior, 0.005)


def test_weights_load_once_per_worker(landsat_model, tmp_path, dask_client):
    store, model = landsat_model
    labels = tmp_path / "labels.zarr"
    info = predict_store(str(store), str(model), str(labels), client=dask_client, show_progress=False)
    assert len(read_store_info(str(store)).grid) == 16
    loads = dask_client.run(model_load_counts)
    per_worker = [counts.get(str(model), 0) for counts in loads.values()]
    assert sum(per_worker) >= 1 and max(per_worker) == 1, loads  # 16 chunks, at most one load per worker
    assert info.complete and info.model["family"] == "clusterer"


def test_label_map_keeps_grid_and_georeferencing(landsat_model, tmp_path):

    from eoseg.mosaic.cog import mosaic_to_cog

    store, model = landsat_model
    labels, cog = tmp_path / "labels.zarr", tmp_path / "map.tif"
    predict_store(str(store), str(model), str(labels), show_progress=False)
    mosaic_to_cog(str(labels), str(cog), show_progress=False)
    with open_map_on_scene_grid(cog, REAL_SCENES["landsat"]) as out:
        assert out.nodata == NODATA_LABEL
        assert len(out.colormap(1)) >= 6
        assert out.tags()["EOSEG_NUM_CLASSES"] == "6"


def test_band_count_mismatch_is_refused(landsat_model, tmp_path, shared_data):
    _, model = landsat_model
    panchromatic = tmp_path / "spacenet.zarr"
    tile_scene(str(REAL_SCENES["spacenet"]), str(panchromatic), show_progress=False)
    with pytest.raises(BandCountError, match=r"has 1 band.*trained on 3"):
        predict_store(str(panchromatic), str(model), str(tmp_path / "labels.zarr"), show_progress=False)
    assert not (tmp_path / "labels.zarr").exists() and not (tmp_path / ".labels.zarr.partial").exists()
