"""Tests of eoseg.mosaic.quicklook on a tiny RGB scene and on the SpaceNet panchromatic sample."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SPACENET_CRS, SPACENET_TRANSFORM
from PIL import Image

from eoseg.mosaic.colors import NODATA_LABEL, class_color, class_colormap
from eoseg.mosaic.quicklook import NODATA_RGB, PANEL_GAP, write_quicklook


@pytest.fixture
def tiny_scene_and_labels(tmp_path: Path) -> tuple[Path, Path]:
    """A 40 x 60 RGB uint8 scene and a label map of 4 classes in vertical stripes, nodata in one corner."""
    rng = np.random.default_rng(42)
    scene = rng.integers(0, 256, size=(3, 40, 60), dtype=np.uint8)
    labels = np.repeat((np.arange(60) // 15).astype(np.uint8)[None, :], 40, axis=0)
    labels[:5, :5] = NODATA_LABEL
    common = {
        "driver": "GTiff",
        "height": 40,
        "width": 60,
        "crs": SPACENET_CRS,
        "transform": SPACENET_TRANSFORM,
    }
    scene_path, labels_path = tmp_path / "scene.tif", tmp_path / "labels.tif"
    with rasterio.open(scene_path, "w", count=3, dtype="uint8", **common) as dataset:
        dataset.write(scene)
    with rasterio.open(labels_path, "w", count=1, dtype="uint8", nodata=NODATA_LABEL, **common) as dataset:
        dataset.write(labels, 1)
    return scene_path, labels_path


def palette_rgbs() -> set[tuple[int, int, int]]:
    return {rgba[:3] for rgba in class_colormap(20).values() if rgba[3] == 255}


def label_panel_colors(
    png: Path, *, panel_width: int, panel_height: int, top: int = 0
) -> set[tuple[int, ...]]:
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB"))
    panel = rgb[top : top + panel_height, panel_width + PANEL_GAP : 2 * panel_width + PANEL_GAP]
    return {tuple(int(c) for c in color) for color in np.unique(panel.reshape(-1, 3), axis=0)}


def leftover_temporary_files(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".") or name.endswith(".part")]


def test_tiny_scene_quicklook_has_two_panels_and_palette_colours(
    tiny_scene_and_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    scene_path, labels_path = tiny_scene_and_labels
    out_png = tmp_path / "out" / "quicklook.png"

    returned = write_quicklook(scene_path, labels_path, out_png)

    assert returned == str(out_png)
    with Image.open(out_png) as image:
        assert image.format == "PNG"
        assert image.width == 2 * 60 + PANEL_GAP
        assert image.height > 40  # panels plus legend
    colors = label_panel_colors(out_png, panel_width=60, panel_height=40)
    assert colors == {class_color(label)[:3] for label in range(4)} | {NODATA_RGB}
    assert leftover_temporary_files(out_png.parent) == []


def test_quicklook_uses_a_given_colormap_and_title(
    tiny_scene_and_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    scene_path, labels_path = tiny_scene_and_labels
    colormap = {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255), 3: (255, 255, 0, 255)}
    out_png = tmp_path / "quicklook.png"

    write_quicklook(scene_path, labels_path, out_png, colormap=colormap, title="tiny scene")

    with Image.open(out_png) as image:
        rgb = np.asarray(image.convert("RGB"))
    # The title strip pushes the panels down: find the label panel's first row by its red stripe.
    red_rows = np.flatnonzero((rgb[:, 60 + PANEL_GAP + 10] == (255, 0, 0)).all(axis=1))
    top = int(red_rows[0])
    assert top > 0
    colors = label_panel_colors(out_png, panel_width=60, panel_height=40, top=top)
    assert colors == {rgba[:3] for rgba in colormap.values()} | {NODATA_RGB}


def test_existing_quicklook_is_kept_without_overwrite(
    tiny_scene_and_labels: tuple[Path, Path], tmp_path: Path
) -> None:
    scene_path, labels_path = tiny_scene_and_labels
    out_png = tmp_path / "quicklook.png"
    out_png.write_bytes(b"not a png")

    with pytest.raises(FileExistsError, match="overwrite"):
        write_quicklook(scene_path, labels_path, out_png, overwrite=False)
    assert out_png.read_bytes() == b"not a png"


def test_missing_scene_is_named(tiny_scene_and_labels: tuple[Path, Path], tmp_path: Path) -> None:
    _, labels_path = tiny_scene_and_labels
    with pytest.raises(FileNotFoundError, match=re.escape("no_such_scene.tif")):
        write_quicklook(tmp_path / "no_such_scene.tif", labels_path, tmp_path / "quicklook.png")


def test_spacenet_panchromatic_quicklook_is_decimated(spacenet_dir: Path, tmp_path: Path) -> None:
    out_png = tmp_path / "spacenet_quicklook.png"

    scene_path, mask_path = spacenet_dir / "sample_geotiff.tif", spacenet_dir / "sample_fp_mask.tif"
    write_quicklook(scene_path, mask_path, out_png, max_size=300)

    with Image.open(out_png) as image:
        assert image.width == 2 * 300 + PANEL_GAP
        assert image.height > 300  # panels plus legend
        rgb = np.asarray(image.convert("RGB"))
    # The mask declares no nodata, so both 0 and 255 are classes and get palette colours.
    colors = label_panel_colors(out_png, panel_width=300, panel_height=300)
    assert colors == {class_color(0)[:3], class_color(255)[:3]}
    assert colors <= palette_rgbs()
    scene_panel = rgb[:300, :300].astype(np.int16)
    assert (scene_panel[..., 0] == scene_panel[..., 1]).all()  # one band shown as grey
    assert scene_panel.std() > 20  # uint16 values stretched, not a flat dark image
    assert leftover_temporary_files(tmp_path) == []


def test_a_label_map_of_another_place_is_warned_about(
    tiny_scene_and_labels: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The panels are drawn side by side as they are: a map of another extent or CRS gets a warning."""
    scene, labels = tiny_scene_and_labels
    caplog.set_level("WARNING", logger="eoseg")
    write_quicklook(scene, labels, tmp_path / "same.png")
    assert not [
        r for r in caplog.records if "does not show" in r.getMessage() or "do not show" in r.getMessage()
    ]

    elsewhere = tmp_path / "elsewhere.tif"
    with rasterio.open(labels) as source:
        profile = dict(source.profile, transform=source.transform * rasterio.Affine.translation(500, 0))
        with rasterio.open(elsewhere, "w", **profile) as out:
            out.write(source.read())
    write_quicklook(scene, elsewhere, tmp_path / "elsewhere.png")
    assert any(
        "extent" in r.getMessage() and "do not show the same place" in r.getMessage() for r in caplog.records
    )

    caplog.clear()
    other_crs = tmp_path / "other-crs.tif"
    with (
        rasterio.open(labels) as source,
        rasterio.open(other_crs, "w", **dict(source.profile, crs="EPSG:4326")) as out,
    ):
        out.write(source.read())
    write_quicklook(scene, other_crs, tmp_path / "other-crs.png")
    assert any(
        "CRS" in r.getMessage() and "do not show the same place" in r.getMessage() for r in caplog.records
    )
