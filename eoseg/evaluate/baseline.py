"""A raw-pixel k-means baseline: what an unsupervised model's map has to beat.

Each pixel's band values, standardised with the same band statistics as the model's input (a
checkpoint's ``band_mean`` / ``band_std``), are clustered by k-means (Lloyd's algorithm with k-means++
seeding, ``scipy.cluster.vq.kmeans2``; the best of three seeded starts) into the same number of
clusters K as the model has; every pixel then goes to its nearest centre. The baseline map is written on
the scene's grid and scored exactly like the model's map
(:func:`eoseg.evaluate.scores.evaluate_label_map`), so the two reports compare like with like. No
spatial context enters: the baseline is the model minus everything it learns from neighbourhoods.

The fit uses a seeded sample of valid pixels (at most ``sample_pixels``), the prediction every pixel,
window by window, so memory does not grow with the scene.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import rasterio
import rasterio.shutil

from eoseg import __version__
from eoseg.geometry import ChunkGrid
from eoseg.io.publish import publishing_file
from eoseg.io.rasters import open_raster
from eoseg.mosaic.colors import NODATA_LABEL, class_colormap
from eoseg.tile.stage import valid_pixel_mask

__all__ = ["BASELINES", "assign_clusters", "fit_kmeans", "kmeans_label_map", "kmeans_labels"]

BASELINES: tuple[str, ...] = ("kmeans",)
"""Baselines ``eoseg run --baseline`` knows."""

_WINDOW = 1024


def fit_kmeans(pixels: np.ndarray, *, num_clusters: int, seed: int = 0, starts: int = 3) -> np.ndarray:
    """k-means centres of standardised pixels: the lowest-distortion of ``starts`` seeded runs.

    Args:
        pixels: ``(N, bands)`` float standardised values of valid pixels, ``N >= num_clusters``.
        num_clusters: K.
        seed: Seed of the k-means++ initialisations.
        starts: Independent starts (scikit-learn's ``n_init``).

    Returns:
        ``(K, bands)`` float64 centres.

    Raises:
        ValueError: Fewer pixels than clusters.
    """
    from scipy.cluster.vq import kmeans2, vq

    if pixels.shape[0] < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} valid pixels, got {pixels.shape[0]}")
    data = np.asarray(pixels, dtype=np.float64)
    rng = np.random.default_rng(seed)
    best_distortion, best_centres = np.inf, np.zeros((num_clusters, data.shape[1]))
    for _ in range(starts):
        centres, _labels = kmeans2(data, num_clusters, iter=30, minit="++", seed=rng)
        distortion = float(np.square(vq(data, centres)[1]).sum())
        if distortion < best_distortion:
            best_distortion, best_centres = distortion, np.asarray(centres, dtype=np.float64)
    return best_centres


def assign_clusters(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(N,)`` uint8 index of the nearest centre of every ``(N, bands)`` pixel."""
    from scipy.cluster.vq import vq

    codes, _distances = vq(np.asarray(pixels, dtype=np.float64), centres)
    return np.asarray(codes, dtype=np.uint8)


def _standardised(block: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(bands, rows, cols)`` -> ``(rows * cols, bands)`` float32 ``(x - mean) / std``."""
    pixels = block.reshape(block.shape[0], -1).T.astype(np.float32)
    standardised: np.ndarray = (pixels - mean) / std
    return standardised


def kmeans_labels(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    num_clusters: int,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    seed: int = 0,
    sample_pixels: int = 250_000,
) -> np.ndarray:
    """k-means labels of an in-memory image (benchmarks, tests).

    Args:
        image: ``(bands, rows, cols)`` raw pixel values.
        valid: ``(rows, cols)`` bool, False for nodata (default: all valid).
        num_clusters: K.
        band_mean, band_std: Per-band standardisation (the model's).
        seed: Seed of the pixel sample and of k-means.
        sample_pixels: At most this many valid pixels fit the centres.

    Returns:
        ``(rows, cols)`` uint8 labels in ``[0, K)``; nodata pixels get ``NODATA_LABEL`` (255).
    """
    mean, std = np.asarray(band_mean, np.float32), np.asarray(band_std, np.float32)
    valid = np.ones(image.shape[1:], dtype=bool) if valid is None else valid
    pixels = _standardised(image, mean, std)
    flat_valid = valid.ravel()
    chosen = np.flatnonzero(flat_valid)
    rng = np.random.default_rng(seed)
    if chosen.size > sample_pixels:
        chosen = np.sort(rng.choice(chosen, sample_pixels, replace=False))
    centres = fit_kmeans(pixels[chosen], num_clusters=num_clusters, seed=seed)
    labels = np.full(flat_valid.shape, NODATA_LABEL, dtype=np.uint8)
    labels[flat_valid] = assign_clusters(pixels[flat_valid], centres)
    return labels.reshape(valid.shape)


def kmeans_label_map(
    scene_path: str | os.PathLike[str],
    out_path: str,
    *,
    num_clusters: int,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    seed: int = 0,
    sample_pixels: int = 250_000,
    overwrite: bool = True,
) -> str:
    """Write the k-means baseline map of a scene: a uint8 COG on the scene's grid (nodata 255), with the
    class colour table, band description and provenance tags of the model's map (``EOSEG_BASELINE``).

    Args:
        scene_path: The scene (any GDAL raster; all bands are used).
        out_path: The map to write (local or ``s3://``), atomically.
        num_clusters: K, the model's number of clusters.
        band_mean, band_std: The model's per-band standardisation (one value per band).
        seed: Seed of the pixel sample and of k-means.
        sample_pixels: At most this many valid pixels fit the centres (spread over the windows).
        overwrite: Replace an existing ``out_path``.

    Returns:
        ``out_path``.

    Raises:
        SceneNotFoundError, CorruptSceneError: The scene cannot be read.
        ValueError: The statistics do not have one value per band, or too few valid pixels.
    """
    mean, std = np.asarray(band_mean, np.float32), np.asarray(band_std, np.float32)
    rng = np.random.default_rng(seed)
    with open_raster(scene_path, role="scene") as scene:
        if mean.size != scene.count or std.size != scene.count:
            raise ValueError(
                f"{scene_path} has {scene.count} band(s) but the statistics have {mean.size} / {std.size}"
            )
        grid = ChunkGrid(scene.height, scene.width, _WINDOW, _WINDOW)
        share = min(1.0, sample_pixels / (scene.height * scene.width))
        samples = []
        for _, window in grid.windows():
            block = scene.read(window=window.to_rasterio())
            pixels = _standardised(block, mean, std)[valid_pixel_mask(block, scene.nodata).ravel()]
            samples.append(pixels[rng.random(pixels.shape[0]) < share])
        centres = fit_kmeans(np.concatenate(samples), num_clusters=num_clusters, seed=seed)
        profile = {
            "driver": "GTiff", "height": scene.height, "width": scene.width, "count": 1, "dtype": "uint8",
            "crs": scene.crs, "transform": scene.transform, "nodata": NODATA_LABEL,
            "compress": "NONE", "tiled": True, "blockxsize": _WINDOW, "blockysize": _WINDOW,
        }  # fmt: skip
        with (
            publishing_file(out_path, overwrite=overwrite) as staging,
            tempfile.TemporaryDirectory(prefix="eoseg-kmeans-") as scratch,
        ):
            draft = os.path.join(scratch, "kmeans.tif")
            with rasterio.open(draft, "w", **profile) as out:
                for _, window in grid.windows():
                    block = scene.read(window=window.to_rasterio())
                    valid = valid_pixel_mask(block, scene.nodata)
                    labels = np.full(valid.size, NODATA_LABEL, dtype=np.uint8)
                    pixels = _standardised(block, mean, std)[valid.ravel()]
                    if pixels.size:
                        labels[valid.ravel()] = assign_clusters(pixels, centres)
                    out.write(labels.reshape(valid.shape), 1, window=window.to_rasterio())
                # the same look as the model's map: class colours, band description, provenance tags
                out.write_colormap(1, class_colormap(num_clusters))
                out.set_band_description(1, "class")
                out.update_tags(
                    EOSEG_VERSION=__version__, EOSEG_KIND="labels", EOSEG_NUM_CLASSES=str(num_clusters),
                    EOSEG_BASELINE="kmeans", EOSEG_SOURCE=str(scene_path),
                )  # fmt: skip
            rasterio.shutil.copy(
                draft, staging, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE", PREDICTOR="YES",
                OVERVIEW_RESAMPLING="NEAREST",
            )  # fmt: skip
    return out_path
