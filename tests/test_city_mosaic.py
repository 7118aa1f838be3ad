"""A city is one map: a real NAIP crop cut into 2 x 2 and 3 x 3 GeoTIFFs (sizes not multiples of the chunk)
gives the same store, and with the same weights the same labels, as the whole crop; holes are nodata;
tiles off the grid are refused; a folder, a list, an s3:// prefix and a VRT are the same input."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import pytest
import rasterio
from conftest import REAL_SCENES, open_map_on_scene_grid
from rasterio.windows import Window as RioWindow
from rasterio.windows import transform as window_transform

from eoseg.compute.cluster import ClusterSpec
from eoseg.config import ClustererTrainingOptions, TileOptions
from eoseg.errors import TileGridMismatchError
from eoseg.geometry import Window
from eoseg.scene.sources import open_scene_sources
from eoseg.scene.vrt import tiles_vrt_xml
from eoseg.store.layout import open_data_array
from eoseg.tile.stage import tile_scene

CHUNK = 128
CROP = RioWindow(200, 100, 300, 300)  # col_off, row_off, width, height of the NAIP 2009 scene
CUTS = {"2x2": (0, 137, 300), "3x3": (0, 97, 211, 300)}  # row = column cut edges; none a multiple of 128
SMALL_TRAINING = ClustererTrainingOptions(epochs=1, iterations=3, batch_size=4, patch_size=32, max_patches=16)


@pytest.fixture(scope="module")
def whole(tmp_path_factory, shared_data) -> Path:
    """A 300 x 300 x 4 crop of the real NAIP scene, written as one GeoTIFF (it has no nodata pixels)."""
    folder = tmp_path_factory.mktemp("city")
    with rasterio.open(REAL_SCENES["naip"]) as scene:
        profile = scene.profile
        pixels = scene.read(window=CROP)
        profile.update(width=CROP.width, height=CROP.height, transform=scene.window_transform(CROP))
        profile["photometric"] = "MINISBLACK"  # four bands of data (R, G, B, NIR), not RGB + alpha
    path = folder / "whole.tif"
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)
    return path


def cut(
    whole: Path, edges: tuple[int, ...], folder: Path, *, skip: tuple[int, int] | None = None
) -> list[Path]:
    """Cut ``whole`` at ``edges`` (rows and columns alike) into GeoTIFFs named by position, row-major."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(whole) as scene:
        for i, (r0, r1) in enumerate(itertools.pairwise(edges)):
            for j, (c0, c1) in enumerate(itertools.pairwise(edges)):
                if (i, j) == skip:
                    continue
                window = RioWindow(c0, r0, c1 - c0, r1 - r0)
                profile = dict(scene.profile, width=c1 - c0, height=r1 - r0, blockxsize=64, blockysize=64)
                profile["photometric"] = "MINISBLACK"
                profile["transform"] = window_transform(window, scene.transform)
                path = folder / f"tile_{i}{j}.tif"
                with rasterio.open(path, "w", **profile) as out:
                    out.write(scene.read(window=window))
                paths.append(path)
    return paths


def store_pixels(uri: str | Path) -> np.ndarray:
    return np.asarray(open_data_array(str(uri), "image")[:])


@pytest.mark.parametrize("layout", sorted(CUTS))
def test_tiles_make_the_store_of_the_whole_scene(tmp_path, whole, layout):
    tiles = cut(whole, CUTS[layout], tmp_path / "tiles")
    reference = tile_scene(str(whole), str(tmp_path / "whole.zarr"), chunk_size=CHUNK)
    mosaic = tile_scene([str(p) for p in tiles], str(tmp_path / "city.zarr"), chunk_size=CHUNK)
    assert mosaic.geobox == reference.geobox
    assert (mosaic.chunk_rows, mosaic.nodata, mosaic.band_names) == (
        CHUNK,
        reference.nodata,
        reference.band_names,
    )
    assert mosaic.band_stats == reference.band_stats  # statistics of the whole mosaic
    np.testing.assert_array_equal(store_pixels(tmp_path / "city.zarr"), store_pixels(tmp_path / "whole.zarr"))


def test_a_thread_keeps_a_bounded_number_of_tiles_open(tmp_path, whole, monkeypatch):
    """With room for 2 open datasets per thread, the 9 tiles of a 3 x 3 city give the same store; the
    least recently used datasets were closed (a city of thousands of tiles stays below ``ulimit -n``)."""
    from eoseg.tile import stage

    tiles = [str(p) for p in cut(whole, CUTS["3x3"], tmp_path / "tiles")]
    tile_scene(str(whole), str(tmp_path / "whole.zarr"), chunk_size=CHUNK)
    opened: list[Any] = []
    real_open = stage.open_scene_dataset

    def open_and_keep(uri: str, **kwargs: Any) -> Any:
        opened.append(real_open(uri, **kwargs))
        return opened[-1]

    monkeypatch.setattr(stage, "OPEN_DATASETS_PER_THREAD", 2)
    monkeypatch.setattr(stage, "open_scene_dataset", open_and_keep)
    tile_scene(tiles, str(tmp_path / "city.zarr"), chunk_size=CHUNK)
    np.testing.assert_array_equal(store_pixels(tmp_path / "city.zarr"), store_pixels(tmp_path / "whole.zarr"))
    assert len(opened) >= 9  # every tile was opened at least once
    still_open = [dataset for dataset in opened if not dataset.closed]
    assert 0 < len(still_open) <= 2 * (os.cpu_count() or 1)  # at most 2 per chunk thread
    assert len(still_open) < len(opened)


def test_each_chunk_reads_only_the_tiles_it_overlaps(tmp_path, whole):
    sources = open_scene_sources([str(p) for p in cut(whole, CUTS["3x3"], tmp_path / "tiles")])
    assert [t.window for t in sources.tiles][:2] == [Window(0, 0, 97, 97), Window(0, 97, 97, 114)]
    touched = sources.overlapping(Window(0, 0, CHUNK, CHUNK))  # the first chunk: 4 tiles, parts of them
    assert [Path(tile.uri).name for tile, _ in touched] == [
        "tile_00.tif",
        "tile_01.tif",
        "tile_10.tif",
        "tile_11.tif",
    ]
    assert touched[3][1] == Window(97, 97, 31, 31)


def test_a_missing_tile_is_nodata_there_and_nowhere_else(tmp_path, whole):
    tiles = cut(whole, CUTS["3x3"], tmp_path / "tiles", skip=(1, 1))
    info = tile_scene([str(p) for p in tiles], str(tmp_path / "holed.zarr"), chunk_size=CHUNK)
    assert (info.height, info.width) == (300, 300)
    pixels, expected = store_pixels(tmp_path / "holed.zarr"), rasterio.open(whole).read()
    hole = np.zeros((300, 300), dtype=bool)
    hole[97:211, 97:211] = True
    assert info.band_count == 4 and np.all(pixels[:, hole] == info.nodata)
    valid = np.asarray(open_data_array(str(tmp_path / "holed.zarr"), "valid")[:]).astype(bool)
    np.testing.assert_array_equal(valid, ~hole)  # the store's validity: invalid exactly in the hole
    np.testing.assert_array_equal(pixels[:, ~hole], expected[:, ~hole])
    assert not np.any(np.all(expected == info.nodata, axis=0)), "the crop itself has no nodata pixel"


def test_where_tiles_overlap_the_first_with_data_wins(tmp_path, whole):
    """Two tiles overlapping on columns 100-199, each with a nodata hole (0 in every band) in the overlap:
    there the first tile's data wins, the second fills the first's hole, and where both hold nodata the
    pixel is invalid and holds nodata."""
    with rasterio.open(whole) as scene:
        profile, pixels = dict(scene.profile, nodata=0, photometric="MINISBLACK"), scene.read()
    assert not np.any(np.all(pixels == 0, axis=0)), "the crop itself has no all-zero pixel"
    hole_a, hole_b = np.zeros((300, 300), dtype=bool), np.zeros((300, 300), dtype=bool)
    hole_a[20:120, 120:180], hole_b[80:200, 150:260] = True, True
    second = pixels // 2 + 1  # different data (never 0), so the winner is visible
    paths = []
    for name, data, hole, (c0, c1) in (("a", pixels, hole_a, (0, 200)), ("b", second, hole_b, (100, 300))):
        data = np.where(hole, 0, data)[:, :, c0:c1]
        transform = window_transform(RioWindow(c0, 0, c1 - c0, 300), profile["transform"])
        paths.append(tmp_path / f"{name}.tif")
        with rasterio.open(paths[-1], "w", **dict(profile, width=c1 - c0, transform=transform)) as out:
            out.write(data)
    tile_scene([str(p) for p in paths], str(tmp_path / "overlap.zarr"), chunk_size=CHUNK)
    in_a, in_b = np.zeros((300, 300), dtype=bool), np.zeros((300, 300), dtype=bool)
    in_a[:, :200], in_b[:, 100:] = True, True
    from_a, from_b = in_a & ~hole_a, in_b & ~hole_b & ~(in_a & ~hole_a)
    expected = np.zeros_like(pixels)
    expected[:, from_a], expected[:, from_b] = pixels[:, from_a], second[:, from_b]
    valid = np.asarray(open_data_array(str(tmp_path / "overlap.zarr"), "valid")[:]).astype(bool)
    np.testing.assert_array_equal(valid, from_a | from_b)
    np.testing.assert_array_equal(store_pixels(tmp_path / "overlap.zarr"), expected)
    assert np.any(hole_a & hole_b & in_a & in_b) and np.any(from_b & in_a), "both rules are exercised"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda t: t @ rasterio.Affine.translation(0.5, 0), "off the first tile's pixel lattice"),
        (lambda t: rasterio.Affine(t.a * 2, t.b, t.c, t.d, t.e * 2, t.f), "pixel size"),
    ],
)
def test_a_tile_off_the_grid_is_refused_naming_it(tmp_path, whole, change, says):
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    with rasterio.open(tiles[2], "r+") as tile:
        tile.transform = change(tile.transform)
    with pytest.raises(TileGridMismatchError, match=says) as refused:
        open_scene_sources([str(p) for p in tiles])
    assert str(refused.value).startswith(
        f"{tiles[2]}: this tile is not on the grid of the first tile {tiles[0]}"
    )


def test_every_difference_of_a_tile_is_named_and_its_crs_by_code_not_wkt(shared_data):
    """Landsat (3 bands, EPSG:32618) then NAIP (4 bands, EPSG:26914): both differences in one short line."""
    with pytest.raises(TileGridMismatchError) as refused:
        open_scene_sources([str(REAL_SCENES["landsat"]), str(REAL_SCENES["naip"])])
    message = str(refused.value)
    assert "its CRS EPSG:26914 (NAD83 / UTM zone 14N) differs from the first tile's EPSG:32618" in message
    assert "it has bands [1, 2, 3, 4] (alpha left out), the first tile [1, 2, 3]" in message
    assert "PROJCS" not in message and "--resample" not in message  # bands cannot be warped
    assert len(message) < 500


def test_folder_list_vrt_and_s3_prefix_give_the_same_store(tmp_path, whole, s3_bucket):
    from eoseg.io import storage

    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    sources = open_scene_sources([str(p) for p in tiles])
    vrt = tmp_path / "tiles" / "city.vrt"
    vrt.write_text(
        tiles_vrt_xml(
            sources.scene.geobox,
            [(t.uri, t.window) for t in sources.tiles],
            band_count=4,
            dtype="uint8",
            nodata=0,
            vrt_folder=str(vrt.parent),
        )
    )
    for path in tiles:
        storage.s3_filesystem().put_file(str(path), f"{s3_bucket}/city/{path.name}")
    inputs = {
        "list": [str(p) for p in tiles],
        "folder": str(tmp_path / "tiles"),
        "vrt": str(vrt),
        "s3": f"{s3_bucket}/city/",
    }
    tile_scene(str(whole), str(tmp_path / "whole.zarr"), chunk_size=CHUNK)
    expected = store_pixels(tmp_path / "whole.zarr")
    for name, scene in inputs.items():
        info = tile_scene(scene, str(tmp_path / f"{name}.zarr"), chunk_size=CHUNK)
        assert info.geobox == sources.scene.geobox, name
        np.testing.assert_array_equal(store_pixels(tmp_path / f"{name}.zarr"), expected, err_msg=name)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, whole, dask_address, prefect_server) -> tuple[Path, Path]:
    """The whole crop segmented once (trained here): its map and its checkpoint."""
    from flows.segment_flows import segment_scene_flow

    map_path = tmp_path_factory.mktemp("whole_run") / "whole_map.tif"
    segment_scene_flow(
        str(whole), str(map_path), tile=TileOptions(chunk_size=CHUNK), training=SMALL_TRAINING,
        cluster=ClusterSpec(address=dask_address),
    )  # fmt: skip
    return map_path, map_path.with_suffix(".model.pt")


def run_city(
    tiles: list[Path], map_path: Path, weights: Path, dask_address: str, whole: Path, **options: Any
) -> np.ndarray:
    """``segment-scene`` over the tiles with existing weights; its labels (a COG on the whole crop's grid)."""
    from flows.segment_flows import segment_scene_flow

    result = segment_scene_flow(
        [str(p) for p in tiles], str(map_path), weights_uri=str(weights), tile=TileOptions(chunk_size=CHUNK),
        cluster=ClusterSpec(address=dask_address), **options,
    )  # fmt: skip
    assert result["training"] is None and map_path.with_suffix(".png").exists()
    with open_map_on_scene_grid(map_path, whole) as out:
        return out.read(1)


def reference_colours(map_path: Path) -> dict[int, tuple[int, ...]]:
    with rasterio.open(map_path) as out:
        return out.colormap(1)


def test_city_run_equals_the_whole_scene_run_pixel_for_pixel(
    tmp_path, whole, whole_run, dask_address, monkeypatch
):
    """The issue's contract: the same weights on 3 x 3 tiles and on the whole scene give identical labels.
    The weights are given as a path relative to the working folder (as `--weights out/m.pt`)."""
    map_path, weights = whole_run
    tiles = cut(whole, CUTS["3x3"], tmp_path / "tiles")
    maps = tmp_path / "maps"
    (tmp_path / "out").mkdir()
    shutil.copy(weights, tmp_path / "out" / "m.pt")
    monkeypatch.chdir(tmp_path)
    labels = run_city(
        tiles, tmp_path / "city.tif", Path("out/m.pt"), dask_address, whole, per_tile_maps=str(maps)
    )
    with open_map_on_scene_grid(map_path, whole) as reference:
        expected = reference.read(1)
    print(f"\ncity (3 x 3 tiles) vs whole scene: {np.mean(labels == expected):.4%} of pixels equal")
    assert np.count_nonzero(labels != expected) == 0 and labels.max() < 8

    # Per-tile maps: each on its input tile's exact grid, equal to that window of the whole-scene map.
    for tile in tiles:
        with open_map_on_scene_grid(maps / tile.name, tile) as tile_map, rasterio.open(whole) as scene:
            window = rasterio.windows.from_bounds(*tile_map.bounds, transform=scene.transform).round_offsets()
            rows, cols = (
                slice(window.row_off, window.row_off + tile_map.height),
                slice(window.col_off, window.col_off + tile_map.width),
            )
            np.testing.assert_array_equal(tile_map.read(1), expected[rows, cols], err_msg=tile.name)
            assert tile_map.colormap(1)[0][:3] == reference_colours(map_path)[0][:3]
    with rasterio.open(maps / "city.vrt") as vrt, rasterio.open(whole) as scene:  # one layer: the whole map
        assert (vrt.crs, vrt.transform, vrt.shape) == (scene.crs, scene.transform, scene.shape)
        np.testing.assert_array_equal(vrt.read(1), expected)
    assert (maps / "city.png").exists()
    collection = pystac.Collection.from_file(str(maps / "collection.json"))
    items = sorted(collection.get_items(), key=lambda item: item.id)
    assert [item.id for item in items] == [tile.stem for tile in tiles]
    model = str(tmp_path / "out" / "m.pt")  # STAC resolves hrefs against the JSON, not the working folder
    assert collection.assets["model"].get_absolute_href() == model
    assert all(item.assets["model"].get_absolute_href() == model for item in items)
    assert items[4].properties["proj:shape"] == [114, 114] and "map" in items[4].assets


def test_city_run_maps_a_folder_of_tiles_with_a_hole_as_one_mosaic(tmp_path, whole, whole_run, dask_address):
    """The city-run deployment's flow with ``mosaic_name``: one segment-scene run for all tiles, one map on
    the union grid, one STAC item; a missing tile is nodata there and nowhere else."""
    from flows.deploy_flows import city_run_flow

    cut(whole, CUTS["3x3"], tmp_path / "tiles", skip=(1, 1))
    result = city_run_flow(
        str(tmp_path / "maps"), scenes_prefix=str(tmp_path / "tiles"), weights_uri=str(whole_run[1]),
        tile=TileOptions(chunk_size=CHUNK), cluster=ClusterSpec(address=dask_address), mosaic_name="city",
    )  # fmt: skip
    assert [row["status"] for row in result["scenes"]] == ["mapped"]
    with open_map_on_scene_grid(tmp_path / "maps" / "city.tif", whole) as out:
        labels = out.read(1)
    nodata = labels == 255
    assert nodata[97:211, 97:211].all() and np.count_nonzero(nodata) == 114 * 114
    catalog = pystac.Catalog.from_file(str(tmp_path / "maps" / "catalog.json"))
    assert [item.id for item in catalog.get_items()] == ["city"]
    assert len(list((tmp_path / "maps" / "city.tile-maps").glob("tile_*.tif"))) == 8  # and the 8 tiles' maps


def run_eoseg(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed `eoseg` command against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), COLUMNS="200")
    command = [str(Path(sys.executable).parent / "eoseg"), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.usefixtures("prefect_server")
def test_cli_refuses_a_tile_off_the_grid_in_one_line(tmp_path, whole):
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    with rasterio.open(tiles[3], "r+") as tile:
        tile.transform = tile.transform @ rasterio.Affine.translation(0, 0.25)
    done = run_eoseg("tile", *map(str, tiles), "--out", str(tmp_path / "city.zarr"), "--chunk-size", "128")
    assert done.returncode == 2
    last_line = done.stderr.strip().splitlines()[-1]  # after the flow run's log lines
    assert last_line.startswith(f"error: {tiles[3]}: this tile is not on the grid of the first tile")
    assert not (tmp_path / "city.zarr").exists() and not list((tmp_path).glob(".city.zarr*"))


@pytest.mark.slow
def test_cli_run_on_tiles_equals_the_whole_scene_run(tmp_path, whole, whole_run):
    """`eoseg run a.tif b.tif c.tif d.tif --weights M.pt --out city.tif` equals the whole scene's map."""
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    done = run_eoseg(
        "run", *map(str, tiles), "--weights", str(whole_run[1]), "--out", str(tmp_path / "city.tif"),
        "--chunk-size", str(CHUNK),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "started a local Dask cluster" in done.stderr  # many chunks: worker processes...
    assert not re.search(r"distributed\.\w+ - INFO|Traceback", done.stderr)  # ...without Dask's chatter
    with (
        open_map_on_scene_grid(tmp_path / "city.tif", whole) as city,
        rasterio.open(whole_run[0]) as reference,
    ):
        assert np.count_nonzero(city.read(1) != reference.read(1)) == 0


@pytest.mark.usefixtures("prefect_server")
def test_one_cog_above_the_size_limit_is_refused_pointing_to_per_tile_maps(tmp_path, whole):
    from eoseg.config import MosaicOptions
    from eoseg.errors import ConfigurationError
    from flows.segment_flows import segment_scene_flow

    with pytest.raises(
        ConfigurationError,
        match=r"90,000 pixels is more than one COG should hold \(limit 80,000\); .*--per-tile-maps",
    ):
        segment_scene_flow(
            str(whole), str(tmp_path / "out" / "city.tif"), mosaic=MosaicOptions(max_pixels=80_000)
        )
    assert not (tmp_path / "out").exists()  # refused before any work


def test_above_the_size_limit_the_per_tile_maps_are_the_map(tmp_path, whole, whole_run, dask_address):
    """Over ``max_pixels`` with ``per_tile_maps``: no single COG, the tile maps and their VRT are written
    (the VRT is the run's map); the mosaic stage itself refuses the single COG, pointing to them."""
    from eoseg.config import MosaicOptions
    from eoseg.errors import ConfigurationError
    from eoseg.mosaic.cog import mosaic_to_cog
    from flows.segment_flows import segment_scene_flow

    map_path, weights = whole_run
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    maps, cog = tmp_path / "maps", tmp_path / "out" / "city.tif"
    result = segment_scene_flow(
        [str(p) for p in tiles], str(cog), weights_uri=str(weights), tile=TileOptions(chunk_size=CHUNK),
        mosaic=MosaicOptions(max_pixels=80_000), per_tile_maps=str(maps),
        cluster=ClusterSpec(address=dask_address),
    )  # fmt: skip
    assert result["map"] == str(maps / "city.vrt") and not cog.exists()
    assert sorted(p.name for p in maps.glob("tile_*.tif")) == [p.name for p in tiles]
    with rasterio.open(maps / "city.vrt") as vrt, open_map_on_scene_grid(map_path, whole) as reference:
        np.testing.assert_array_equal(vrt.read(1), reference.read(1))
    with pytest.raises(ConfigurationError, match=r"90,000 pixels is more than one COG .*--per-tile-maps DIR"):
        mosaic_to_cog(result["labels"], str(tmp_path / "one.tif"), max_pixels=80_000)
    assert not (tmp_path / "one.tif").exists()


def coarse_last_tile(whole: Path, tiles: list[Path]) -> np.ndarray:
    """Rewrite the last tile of a 2 x 2 cut at twice the pixel size (81 x 81 px covering 162 x 162 of the
    scene from row and column 137); returns its pixels."""
    with rasterio.open(whole) as scene:
        half = scene.read(window=RioWindow(137, 137, 162, 162))[:, ::2, ::2]
        profile = dict(scene.profile, width=81, height=81, photometric="MINISBLACK")
        t = window_transform(RioWindow(137, 137, 162, 162), scene.transform)
        profile["transform"] = rasterio.Affine(t.a * 2, t.b, t.c, t.d, t.e * 2, t.f)
    with rasterio.open(tiles[-1], "w", **profile) as coarse:
        coarse.write(half)
    return half


def test_resample_warps_a_tile_of_another_pixel_size_onto_the_first_tiles_grid(tmp_path, whole):
    """A tile at twice the pixel size is refused naming ``--resample``; with ``resample="nearest"`` it is
    warped onto the first tile's grid: each of its pixels covers 2 x 2 pixels of the store."""
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    half = coarse_last_tile(whole, tiles)
    with pytest.raises(TileGridMismatchError, match=r"pixel size .*pass --resample METHOD"):
        open_scene_sources([str(p) for p in tiles])
    info = tile_scene(
        [str(p) for p in tiles], str(tmp_path / "city.zarr"), chunk_size=CHUNK, resample="nearest"
    )
    assert info.geobox == tile_scene(str(whole), str(tmp_path / "whole.zarr"), chunk_size=CHUNK).geobox
    pixels, expected = store_pixels(tmp_path / "city.zarr"), store_pixels(tmp_path / "whole.zarr")
    np.testing.assert_array_equal(pixels[:, 137:299, 137:299], half.repeat(2, axis=1).repeat(2, axis=2))
    valid = np.asarray(open_data_array(str(tmp_path / "city.zarr"), "valid")[:]).astype(bool)
    assert not valid[299, 137:].any() and not valid[137:, 299].any()  # no tile covers them: gaps
    np.testing.assert_array_equal(pixels[:, :137], expected[:, :137])  # the tiles on the grid: as read
    np.testing.assert_array_equal(pixels[:, :, :137], expected[:, :, :137])


def test_cli_tile_resample_option(tmp_path, whole):
    """`eoseg tile` (run directly: no Prefect API configured) refuses in one line naming --resample, and
    with `--resample nearest` writes the store on the first tile's grid."""
    tiles = cut(whole, CUTS["2x2"], tmp_path / "tiles")
    coarse_last_tile(whole, tiles)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PREFECT_PROFILE"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), COLUMNS="200")
    command = [str(Path(sys.executable).parent / "eoseg"), "tile", *map(str, tiles), "--out"]
    refused = subprocess.run([*command, str(tmp_path / "a.zarr")], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and not (tmp_path / "a.zarr").exists()
    assert (
        refused.stderr.strip().splitlines()[-1].startswith(f"error: {tiles[3]}: this tile is not on the grid")
    )
    assert "pass --resample METHOD" in refused.stderr
    done = subprocess.run(
        [*command, str(tmp_path / "b.zarr"), "--resample", "nearest", "--chunk-size", str(CHUNK)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert store_pixels(tmp_path / "b.zarr").shape == (4, 300, 300)
