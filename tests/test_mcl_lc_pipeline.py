"""mCL-LC through the pipeline: pre-train on tile stores, fine-tune on labelled SpaceNet, segment a scene.

Tiny CPU settings (64 px patches, batch 4, one epoch, at most 8 patches): these tests check the
plumbing, not the quality (``benchmarks/bench_mcl_lc.py`` measures that).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import REAL_SCENES, SHARED_DATA, open_map_on_scene_grid, write_geotiff
from typer.testing import CliRunner

from cli.main import app
from eoseg.compute.cluster import ClusterSpec
from eoseg.config import MclLcFinetuneOptions, MclLcTrainingOptions, TileOptions
from eoseg.evaluate.reference import rasterize_reference
from eoseg.evaluate.scores import GridMismatchError
from eoseg.store.layout import read_store_info
from eoseg.tile.stage import tile_scene
from eoseg.train.labels import (
    ZarrLabelledPatchSource,
    check_labels_on_grid,
    prepare_label_raster,
    sampled_label_mask,
    scan_label_raster,
)
from eoseg.train.patches import pooled_band_statistics
from flows.segment_flows import segment_scene_flow
from flows.train_flows import finetune_mcl_lc_flow, train_mcl_lc_flow

# Every flow run in these tests goes to one real temporary Prefect server; stores for them are tiled
# outside any flow run, which Prefect's API log handler would warn about.
pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.filterwarnings("ignore:Logger '.*' attempted to send logs to the API without a flow run id"),
]

SPACENET_POLYGONS = SHARED_DATA / "spacenet" / "geotiff_labels.geojson"
TINY_PRETRAIN = MclLcTrainingOptions(
    epochs=1, batch_size=4, patch_size=64, max_patches=8, max_steps_per_epoch=1, device="cpu"
)
TINY_FINETUNE = MclLcFinetuneOptions(epochs=1, batch_size=4, patch_size=64, max_patches=8, device="cpu")
runner = CliRunner()


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, shared_data) -> dict[str, str]:
    """Tile stores: SpaceNet (1 band), NAIP 2009 as 1-band intensity (mean of R, G, B), and in 4 bands."""
    folder = tmp_path_factory.mktemp("mcl_lc_stores")
    with rasterio.open(REAL_SCENES["naip"]) as naip:
        intensity = naip.read([1, 2, 3]).mean(axis=0).round().astype(np.uint8)
        write_geotiff(
            folder / "naip_intensity.tif",
            intensity,
            crs=naip.crs.to_wkt(),
            transform=naip.transform,
            nodata=0,
        )
    scenes = {
        "spacenet": REAL_SCENES["spacenet"],
        "naip_intensity": folder / "naip_intensity.tif",
        "naip": REAL_SCENES["naip"],
    }
    out = {}
    for name, scene in scenes.items():
        out[name] = str(folder / f"{name}.zarr")
        tile_scene(str(scene), out[name], chunk_size=512, show_progress=False)
    return out


@pytest.fixture(scope="module")
def pretrained(stores, tmp_path_factory) -> str:
    """A tiny pre-training on two 1-band stores (SpaceNet and NAIP intensity), through the flow.

    The flow's local cluster has a worker advertising ``GPU=1`` (a label only: it trains on the CPU), so
    this also checks that pre-training is sent to the GPU worker.
    """
    model = tmp_path_factory.mktemp("mcl_lc_models") / "pretrained.pt"
    summary = train_mcl_lc_flow(
        [stores["spacenet"], stores["naip_intensity"]],
        str(model),
        training=TINY_PRETRAIN,
        cluster=ClusterSpec(n_workers=1, gpu_workers=1),
    )
    assert summary["ran_on"].startswith("tcp://")  # the GPU worker, not this process
    assert summary["patches"] == 8 and summary["epochs_done"] == 1
    assert set(summary["patches_per_store"]) == {stores["spacenet"], stores["naip_intensity"]}
    return str(model)


@pytest.fixture(scope="module")
def spacenet_labels(stores, tmp_path_factory) -> str:
    """SpaceNet building footprints (GeoJSON) burnt onto the scene's grid: 255 buildings, 0 the rest."""
    folder = tmp_path_factory.mktemp("mcl_lc_labels")
    return rasterize_reference(
        str(SPACENET_POLYGONS), str(REAL_SCENES["spacenet"]), str(folder / "labels.tif")
    )


@pytest.mark.slow
def test_pretrain_finetune_and_segment_spacenet(stores, pretrained, tmp_path, dask_address):
    checkpoint = torch.load(pretrained, weights_only=True)
    assert checkpoint["family"] == "mcl-lc" and checkpoint["extra"]["stage"] == "pretrain"
    infos = [read_store_info(stores["spacenet"]), read_store_info(stores["naip_intensity"])]
    mean, std = pooled_band_statistics(infos)
    assert checkpoint["band_mean"] == pytest.approx(mean) and checkpoint["band_std"] == pytest.approx(std)
    assert checkpoint["train_params"]["store_uris"] == [stores["spacenet"], stores["naip_intensity"]]

    tuned = tmp_path / "tuned.pt"
    summary = finetune_mcl_lc_flow(
        pretrained,
        stores["spacenet"],
        str(SPACENET_POLYGONS),
        str(tuned),
        training=TINY_FINETUNE,
        cluster=ClusterSpec(address=dask_address),
    )
    assert summary["label_mapping"] == {"0": 0, "255": 1} and summary["patches"] == 8
    assert summary["ran_on"] == "local"  # no GPU worker in this cluster: trained in the flow's process
    checkpoint = torch.load(tuned, weights_only=True)
    assert checkpoint["family"] == "mcl-lc" and checkpoint["num_classes"] == 2
    assert checkpoint["extra"]["label_mapping"] == {"0": 0, "255": 1}
    assert checkpoint["extra"]["class_values"] == [0, 255] and checkpoint["extra"]["label_fraction"] == 0.02
    assert checkpoint["band_mean"] == pytest.approx(mean)  # the pre-training's normalisation travels on

    map_path = tmp_path / "spacenet_mcl_lc.tif"
    result = segment_scene_flow(
        str(REAL_SCENES["spacenet"]),
        str(map_path),
        model="mcl-lc",
        weights_uri=str(tuned),
        tile=TileOptions(chunk_size=512),
        cluster=ClusterSpec(address=dask_address),
    )
    assert result["training"] is None and result["model"] == str(tuned)
    with open_map_on_scene_grid(map_path, REAL_SCENES["spacenet"]) as out:
        assert set(np.unique(out.read(1)).tolist()) <= {0, 1}


@pytest.mark.slow
def test_resume_continues_pretraining(stores, pretrained, tmp_path, dask_address):
    first = torch.load(pretrained, weights_only=True)
    out = tmp_path / "resumed.pt"
    args = [
        "--cluster",
        dask_address,
        "train",
        "mcl-lc",
        stores["spacenet"],
        stores["naip_intensity"],
        "--out",
        str(out),
        "--resume",
        pretrained,
        "--patch-size",
        "64",
        "--batch-size",
        "4",
        "--max-patches",
        "8",
        "--max-steps-per-epoch",
        "1",
        "--device",
        "cpu",
    ]
    refused = runner.invoke(app, [*args, "--epochs", "2", "--seed", "1"])
    assert refused.exit_code == 2 and "seed: 0 then, 1 now" in _plain(refused.output)
    result = runner.invoke(app, [*args, "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "trained 2/2 epochs" in result.output
    resumed = torch.load(out, weights_only=True)
    assert resumed["extra"]["epoch"] == 2 and len(resumed["history"]["loss"]) == 2
    assert resumed["history"]["loss"][0] == first["history"]["loss"][0]
    assert resumed["band_mean"] == first["band_mean"]
    changed = [
        name
        for name, tensor in resumed["state_dict"].items()
        if tensor.is_floating_point() and not torch.equal(tensor, first["state_dict"][name])
    ]
    assert changed  # the second epoch trained the weights further


def test_pretraining_refuses_stores_with_different_band_counts(stores, tmp_path):
    result = runner.invoke(
        app, ["train", "mcl-lc", stores["spacenet"], stores["naip"], "--out", str(tmp_path / "model.pt")]
    )
    assert result.exit_code == 2
    text = " ".join(_plain(result.output).split())
    assert f"{stores['naip']}: has 4 band(s) but {stores['spacenet']} has 1" in text
    assert not (tmp_path / "model.pt").exists()


def test_finetuning_refuses_labels_off_the_store_grid(stores, spacenet_labels, tmp_path, dask_address):
    info = read_store_info(stores["spacenet"])
    with rasterio.open(spacenet_labels) as labels:
        array, profile = labels.read(1), labels.profile
    cropped = write_geotiff(
        tmp_path / "cropped.tif", array[:800], crs=profile["crs"], transform=profile["transform"]
    )
    with pytest.raises(GridMismatchError, match=r"900 x 800 px but the store .* is 900 x 900 px"):
        check_labels_on_grid(str(cropped), info, stores["spacenet"])
    shifted = write_geotiff(
        tmp_path / "shifted.tif",
        array,
        crs=profile["crs"],
        transform=profile["transform"] @ Affine.translation(10, 0),
    )
    with pytest.raises(GridMismatchError, match="not on the grid"):
        check_labels_on_grid(str(shifted), info, stores["spacenet"])
    # The shared sample_fp_mask.tif has no georeferencing (and does not line up with the image).
    mask = SHARED_DATA / "spacenet" / "sample_fp_mask.tif"
    result = runner.invoke(
        app,
        [
            "--cluster",
            dask_address,
            "finetune",
            "unused.pt",
            "--store",
            stores["spacenet"],
            "--labels",
            str(mask),
            "--out",
            str(tmp_path / "tuned.pt"),
        ],
    )
    assert result.exit_code == 2 and "has no CRS" in _plain(result.output)
    assert check_labels_on_grid(spacenet_labels, info, stores["spacenet"]) is None


def test_label_fraction_samples_the_requested_share_of_labelled_pixels(stores, spacenet_labels):
    labels = scan_label_raster(spacenet_labels)
    assert labels.class_values == (0, 255) and labels.class_index == {0: 0, 255: 1}
    info = read_store_info(stores["spacenet"])
    source = ZarrLabelledPatchSource(
        stores["spacenet"], labels, 64, normalisation=([0.0], [1.0]), label_fraction=0.02, seed=3
    )
    assert source.labelled_pixels == 896 * 896  # every pixel of the 14 x 14 patches has a class
    assert source.sampled_pixels / source.labelled_pixels == pytest.approx(0.02, abs=0.002)
    images, targets = source.read([0, 1, 2])
    assert images.shape == (3, 1, 64, 64) and targets.shape == (3, 64, 64) and targets.dtype == np.int64
    assert set(np.unique(targets).tolist()) <= {-1, 0, 1}
    assert (targets >= 0).mean() == pytest.approx(0.02, abs=0.015)
    with rasterio.open(spacenet_labels) as raster:  # the kept pixels carry their remapped class
        window = source.images.windows[source.windows[0]]
        raw = raster.read(1, window=window.to_rasterio())
    kept = targets[0] >= 0
    assert np.array_equal(targets[0][kept], (raw[kept] == 255).astype(np.int64))
    # Seeded and independent of how the scene is cut into windows.
    full = sampled_label_mask(info.grid.window(0, 0), fraction=0.02, seed=3)
    part = sampled_label_mask(window, fraction=0.02, seed=3)
    assert np.array_equal(part, full[window.slices])
    assert not np.array_equal(part, sampled_label_mask(window, fraction=0.02, seed=4))


def test_sparse_labels_are_remapped_and_nodata_ignored(tmp_path):
    rng = np.random.default_rng(5)
    pixels = rng.integers(1, 200, size=(1, 64, 96), dtype=np.uint8)
    pixels[:, 40:48, 70:80] = 0  # nodata in the image: no label is used there
    scene = write_geotiff(tmp_path / "scene.tif", pixels, nodata=0)
    store = str(tmp_path / "scene.zarr")
    tile_scene(str(scene), store, chunk_size=64, show_progress=False)
    values = np.zeros((64, 96), np.uint8)  # 0: nodata (unlabelled)
    values[:, 32:64], values[:, 64:] = 7, 3
    values[:8] = 9  # a clutter value, --ignore'd
    labels_path = write_geotiff(tmp_path / "labels.tif", values, nodata=0)
    labels = scan_label_raster(str(labels_path), ignore_values=[9])
    assert labels.class_values == (3, 7) and labels.unlabelled_values == (0, 9)
    source = ZarrLabelledPatchSource(store, labels, 32, normalisation=([100.0], [50.0]), label_fraction=1.0)
    images, targets = source.read(range(len(source)))
    expected = np.select([values == 3, values == 7], [0, 1], -1)
    expected[40:48, 70:80] = -1
    for image_index, image, target in zip(source.windows, images, targets, strict=True):
        window = source.images.windows[image_index]
        assert np.array_equal(target, expected[window.slices])
        raw = pixels[0][window.slices]
        assert np.allclose(image[0], np.where(raw == 0, 0.0, (raw - 100.0) / 50.0))
    assert len(source) == 4  # the two 32 px columns of nodata-only labels carry no loss: left out
    info = read_store_info(store)
    assert prepare_label_raster(str(labels_path), store, info, str(tmp_path)) == str(labels_path)


def test_pooled_band_statistics_equal_those_of_the_pixels_together():
    from eoseg.geometry import make_geobox
    from eoseg.store.layout import StoreInfo

    rng = np.random.default_rng(0)
    parts = [rng.normal(10, 2, size=(2, 1000)), rng.normal(50, 7, size=(2, 3000))]

    def info(pixels):
        stats = {
            "count": [float(pixels.shape[1])] * 2,
            "mean": pixels.mean(1).tolist(),
            "std": pixels.std(1).tolist(),
        }
        return StoreInfo(
            "image",
            make_geobox((1, 1), (1, 0, 0, 0, -1, 0)),
            2,
            "float32",
            1,
            1,
            None,
            ("a", "b"),
            ("", ""),
            "x.tif",
            band_stats=stats,
        )

    mean, std = pooled_band_statistics([info(part) for part in parts])
    together = np.concatenate(parts, axis=1)
    assert mean == pytest.approx(together.mean(1).tolist()) and std == pytest.approx(together.std(1).tolist())


@pytest.mark.parametrize("command", [["train", "mcl-lc"], ["finetune"]])
def test_help_explains_every_option(command):
    import typer.main

    click_command = typer.main.get_command(app)
    target = click_command
    for name in command:
        target = target.commands[name]
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = _plain(result.output)
    for param in target.params:
        for name in param.opts:
            if name.startswith("--"):
                assert name in text, f"{name} missing from `eoseg {' '.join(command)} --help`"


def test_flow_parameters_are_typed_and_documented_for_the_ui():
    for flow, options, required in [
        (train_mcl_lc_flow, "MclLcTrainingOptions", {"store_uris", "model_uri"}),
        (finetune_mcl_lc_flow, "MclLcFinetuneOptions", {"model_uri", "store_uri", "labels_uri", "tuned_uri"}),
    ]:
        schema = flow.parameters.model_dump()
        fields = schema["definitions"][options]["properties"]
        assert fields and all(field.get("description") for field in fields.values())
        assert set(schema["required"]) == required
    schema = train_mcl_lc_flow.parameters.model_dump()
    assert schema["properties"]["store_uris"]["type"] == "array"
    assert schema["definitions"]["MclLcTrainingOptions"]["properties"]["epochs"]["default"] == 200
