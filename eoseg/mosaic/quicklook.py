"""A quick-look PNG of a scene and its label map, side by side, with a legend of class colours.

Both rasters are read decimated to at most ``max_size`` pixels on the long side (GDAL reads the
overviews of a Cloud-Optimized GeoTIFF for that), so a city-sized scene costs a few megabytes. Layout::

    [title (optional)                      ]
    [scene panel] gap [label panel         ]
    [key: colour swatch + label value (+ name) ...]
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rasterio.coords import BoundingBox
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.io import DatasetReader

from eoseg.io.publish import publishing_file
from eoseg.io.rasters import open_raster
from eoseg.mosaic.colors import class_color
from eoseg.store.lifecycle import check_file_output

logger = logging.getLogger("eoseg.mosaic.quicklook")

PANEL_GAP = 8
"""Pixels of background between the scene panel and the label panel."""

BACKGROUND = (255, 255, 255)
NODATA_RGB = (0, 0, 0)
"""Colour of pixels without data (scene nodata, label nodata, transparent colour-table entries)."""

_STRETCH_PERCENTILES = (2.0, 98.0)
_MAX_LEGEND_ENTRIES = 64
_SWATCH = 12
_PADDING = 6


def write_quicklook(
    scene_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    colormap: Mapping[int, tuple[int, ...]] | None = None,
    title: str | None = None,
    label_names: Mapping[int, str] | None = None,
    overwrite: bool = True,
) -> str:
    """Render a scene and its label map side by side, with a legend, into a PNG.

    The scene shows bands 1-3 as RGB (any 3+ band scene, e.g. RGBA or RGBN) or band 1 as grey,
    each band stretched between its 2nd and 98th percentile of valid pixels, so ``uint16`` imagery
    is visible. The label map is coloured with ``colormap``; nodata and transparent entries are black.
    Both rasters should cover the same extent (the label map is resampled onto the scene panel): a map on
    another CRS or extent (beyond one scene pixel) is drawn all the same, with a logged warning.

    Args:
        scene_path: The input scene (GeoTIFF or anything GDAL reads).
        labels_path: The label map (band 1, integer labels).
        out_png: Where to write the PNG; written atomically (temporary file, then rename), and its
            folder is created if missing.
        max_size: Longest side of each panel in pixels; smaller rasters are shown at full resolution.
        colormap: ``{label: (red, green, blue[, alpha])}``. Default: the label file's own colour
            table if it has one, else the :mod:`eoseg.mosaic.colors` palette. Labels missing from the
            colormap take the palette colour.
        title: Text drawn above the panels.
        label_names: ``{label: name}`` for the key (``"3 water"``; ``"3"`` without a name), over the
            names the label map's legend stores (``EOSEG_CLASS_NAMES`` tag).
        overwrite: Replace ``out_png`` if it exists; when False an existing file is an error.

    Returns:
        ``out_png`` as a string.

    Raises:
        SceneNotFoundError: The scene or the label map does not exist.
        CorruptSceneError: GDAL cannot read one of them.
        FileExistsError: ``out_png`` exists and ``overwrite`` is False.
        ValueError: ``max_size`` is not positive.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be a positive number of pixels, got {max_size}")
    out_png = os.fspath(out_png)
    check_file_output(out_png, overwrite=overwrite)

    with open_raster(scene_path, role="scene") as scene:
        scene_crs, scene_bounds, pixel = scene.crs, scene.bounds, max(abs(scene.res[0]), abs(scene.res[1]))
        scale = min(1.0, max_size / max(scene.height, scene.width))
        panel_shape = (max(1, round(scene.height * scale)), max(1, round(scene.width * scale)))
        scene_rgb = _render_scene(scene, panel_shape)
    with open_raster(labels_path, role="label map") as labels_file:
        _warn_if_elsewhere(scene_path, labels_path, scene_crs, scene_bounds, labels_file, pixel)
        labels = labels_file.read(1, out_shape=panel_shape, resampling=Resampling.nearest)
        nodata = labels_file.nodata
        if colormap is None:
            colormap = _embedded_colormap(labels_file)
        names = {
            int(k): str(v) for k, v in json.loads(labels_file.tags().get("EOSEG_CLASS_NAMES", "{}")).items()
        }
    names.update(label_names or {})  # a legend's class names, then the caller's
    valid = np.ones(labels.shape, dtype=bool) if nodata is None else labels != nodata
    present = [int(value) for value in np.unique(labels[valid])]
    colors = {value: _rgba(value, colormap) for value in present}
    label_rgb = _render_labels(labels, valid, colors)

    image = _compose(scene_rgb, label_rgb, colors, title=title, show_nodata=not valid.all(), names=names)
    with publishing_file(out_png, overwrite=overwrite) as staging:
        image.save(staging, format="PNG")
    return out_png


def _warn_if_elsewhere(
    scene_path: object,
    labels_path: object,
    crs: CRS | None,
    bounds: BoundingBox,
    labels: DatasetReader,
    pixel: float,
) -> None:
    """Log a warning when the label map is not on the scene's CRS or extent (to a scene pixel): the panels
    are drawn side by side as they are, so they would not show the same place."""
    if crs is not None and labels.crs is not None and labels.crs != crs:
        logger.warning(
            "%s: the label map's CRS (%s) differs from the scene's %s (%s); the panels do not show the "
            "same place: give the map made from this scene", labels_path, labels.crs, scene_path, crs
        )  # fmt: skip
    elif crs is not None and any(abs(a - b) > pixel for a, b in zip(labels.bounds, bounds, strict=True)):
        logger.warning(
            "%s: the label map's extent %s differs from the scene's %s %s; the panels do not show the "
            "same place: give the map made from this scene", labels_path, tuple(labels.bounds), scene_path,
            tuple(bounds),
        )  # fmt: skip


def _render_scene(scene: DatasetReader, panel_shape: tuple[int, int]) -> np.ndarray:
    """``uint8`` RGB array of the scene, decimated by averaging and percentile-stretched per band."""
    indexes = [1, 2, 3] if scene.count >= 3 else [1]
    bands = scene.read(
        indexes, out_shape=(len(indexes), *panel_shape), resampling=Resampling.average, masked=True
    )
    invalid = np.ma.getmaskarray(bands).any(axis=0)
    stretched = np.zeros(bands.shape, dtype=np.uint8)
    for band_index in range(len(indexes)):
        values = np.asarray(bands[band_index].filled(0), dtype=np.float32)
        valid_values = values[~invalid]
        if valid_values.size == 0:
            continue
        low, high = np.percentile(valid_values, _STRETCH_PERCENTILES)
        span = max(float(high - low), 1e-6)
        stretched[band_index] = np.clip((values - low) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgb = np.repeat(stretched, 3, axis=0) if len(indexes) == 1 else stretched
    rgb = np.moveaxis(rgb, 0, -1).copy()
    rgb[invalid] = NODATA_RGB
    return rgb


def _embedded_colormap(labels_file: DatasetReader) -> dict[int, tuple[int, ...]] | None:
    try:
        colormap: dict[int, tuple[int, ...]] = labels_file.colormap(1)
    except ValueError:  # rasterio's way of saying "this band has no colour table"
        return None
    return colormap


def _rgba(value: int, colormap: Mapping[int, tuple[int, ...]] | None) -> tuple[int, int, int, int]:
    if colormap is not None and value in colormap:
        entry = tuple(int(channel) for channel in colormap[value])
        return (entry[0], entry[1], entry[2], entry[3] if len(entry) > 3 else 255)
    return class_color(value)


def _render_labels(
    labels: np.ndarray, valid: np.ndarray, colors: dict[int, tuple[int, int, int, int]]
) -> np.ndarray:
    rgb = np.empty((*labels.shape, 3), dtype=np.uint8)
    rgb[...] = NODATA_RGB
    for value, (red, green, blue, alpha) in colors.items():
        if alpha > 0:
            rgb[valid & (labels == value)] = (red, green, blue)
    return rgb


def _load_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or built without FreeType
        return ImageFont.load_default()


def _compose(
    scene_rgb: np.ndarray,
    label_rgb: np.ndarray,
    colors: dict[int, tuple[int, int, int, int]],
    *,
    title: str | None,
    show_nodata: bool,
    names: Mapping[int, str] | None = None,
) -> Image.Image:
    panel_height, panel_width = scene_rgb.shape[:2]
    width = 2 * panel_width + PANEL_GAP
    font = _load_font()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Pillow's stubs type text boxes as floats; with these fonts they are whole pixels.
    line_height = max(_SWATCH, int(measure.textbbox((0, 0), "Ag", font=font)[3])) + _PADDING

    # Transparent entries get a black swatch, as in the panel; the overflow note gets none.
    entries: list[tuple[str, tuple[int, int, int] | None]] = [
        (
            f"{value} {names[value]}" if names and value in names else str(value),
            (red, green, blue) if alpha > 0 else NODATA_RGB,
        )
        for value, (red, green, blue, alpha) in sorted(colors.items())
    ]
    if len(entries) > _MAX_LEGEND_ENTRIES:
        hidden = len(entries) - _MAX_LEGEND_ENTRIES
        entries = [*entries[:_MAX_LEGEND_ENTRIES], (f"+{hidden} more", None)]
    if show_nodata:
        entries.append(("nodata", NODATA_RGB))
    # Lay the legend out in rows that wrap at the image width.
    positions: list[tuple[int, int]] = []
    x, row = _PADDING, 0
    for text, _ in entries:
        entry_width = _SWATCH + 4 + int(measure.textlength(text, font=font)) + 2 * _PADDING
        if x > _PADDING and x + entry_width > width:
            x, row = _PADDING, row + 1
        positions.append((x, row))
        x += entry_width
    legend_height = (row + 1) * line_height + _PADDING if entries else 0
    title_height = line_height + _PADDING if title else 0

    image = Image.new("RGB", (width, title_height + panel_height + legend_height), BACKGROUND)
    image.paste(Image.fromarray(scene_rgb, mode="RGB"), (0, title_height))
    image.paste(Image.fromarray(label_rgb, mode="RGB"), (panel_width + PANEL_GAP, title_height))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((_PADDING, _PADDING), title, fill=(0, 0, 0), font=font)
    legend_top = title_height + panel_height + _PADDING
    for (text, swatch), (x, row) in zip(entries, positions, strict=True):
        top = legend_top + row * line_height
        if swatch is not None:
            draw.rectangle((x, top, x + _SWATCH - 1, top + _SWATCH - 1), fill=swatch, outline=(0, 0, 0))
        draw.text((x + _SWATCH + 4, top), text, fill=(0, 0, 0), font=font)
    return image
