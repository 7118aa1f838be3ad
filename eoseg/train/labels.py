"""Labels for supervised fine-tuning: a label raster on a store's grid, a seeded pixel sample, patches.

- :func:`prepare_label_raster` checks a label raster against the store's grid, or burns GeoJSON polygons
  onto it; :func:`scan_label_raster` finds its class values, strip by strip.
- :func:`sampled_label_mask` chooses a seeded fraction of the pixels by hashing (row, col), so the same
  pixels are chosen whichever windows are read, in whatever order.
- :class:`ZarrLabelledPatchSource` is the ``LabelledPatchSource`` of fine-tuning: image windows from
  Zarr, label windows from the raster (windowed reads), values remapped to class indices; every pixel
  not sampled, unlabelled or nodata in the image is ``IGNORE_INDEX``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from eoseg.errors import CorruptSceneError, EmptySceneError, MissingCRSError, SceneNotFoundError
from eoseg.evaluate.scores import GridMismatchError
from eoseg.geometry import Window, geobox_of, grids_match
from eoseg.io import storage
from eoseg.store.layout import StoreInfo
from eoseg.train.patches import ZarrPatchSource, normalise_block

__all__ = [
    "IGNORE_INDEX",
    "LabelRaster",
    "ZarrLabelledPatchSource",
    "check_labels_on_grid",
    "label_mapping_record",
    "prepare_label_raster",
    "sampled_label_mask",
    "scan_label_raster",
]

IGNORE_INDEX = -1  # label of pixels left out of the fine-tuning loss (the family's ignore_index)


def prepare_label_raster(labels_uri: str, store_uri: str, info: StoreInfo, scratch: str) -> str:
    """A label raster on the store's grid: the raster itself (checked), or GeoJSON polygons burnt onto it.

    Polygons become 255 (inside) on 0 (outside), as ``eoseg evaluate`` rasterises references.
    """
    from eoseg.evaluate.reference import is_vector_reference, rasterize_reference

    if is_vector_reference(labels_uri):
        if info.crs_wkt is None:
            raise MissingCRSError(
                f"{store_uri}: the store has no CRS, so the polygons of {labels_uri} cannot "
                "be placed on its grid; pass a label raster on the store's pixel grid"
            )
        local = storage.fetch_to_local(labels_uri, scratch)
        return rasterize_reference(local, info.geobox, os.path.join(scratch, "labels.tif"))
    check_labels_on_grid(labels_uri, info, store_uri)
    return labels_uri


def sampled_label_mask(window: Window, *, fraction: float, seed: int) -> np.ndarray:
    """Which pixels of ``window`` belong to the seeded ``fraction`` sample of the scene's pixels.

    A pixel is in the sample when a hash of (seed, row, col) -- splitmix64's finaliser -- falls below
    ``fraction``: the same pixels are chosen whichever windows are read, in whatever order, without a
    scene-sized random array. Over many pixels the sampled share is ``fraction`` (binomial spread).
    """
    if fraction >= 1.0:
        return np.ones((window.height, window.width), dtype=bool)
    rows = np.arange(window.row_off, window.row_stop, dtype=np.uint64)[:, None]
    cols = np.arange(window.col_off, window.col_stop, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        x = (rows << np.uint64(32)) | cols
        x = x + np.uint64((seed + 1) * 0x9E3779B97F4A7C15 % 2**64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    uniform = (x >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return uniform < fraction


@dataclass(frozen=True)
class LabelRaster:
    """A label raster checked to lie on a store's grid, and the classes it holds.

    Attributes:
        uri: the raster (local path or s3://).
        class_values: sorted label values that are classes; class index ``i`` is ``class_values[i]``.
        class_pixels: labelled pixels per class value.
        unlabelled_values: values that mark unlabelled pixels (the raster's nodata and ``--ignore``).
    """

    uri: str
    class_values: tuple[int, ...]
    class_pixels: tuple[int, ...]
    unlabelled_values: tuple[int, ...]

    @property
    def class_index(self) -> dict[int, int]:
        return {value: index for index, value in enumerate(self.class_values)}


def _open_labels(uri: str) -> Any:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    if not storage.exists(uri):
        raise SceneNotFoundError(f"{uri}: labels raster not found")
    try:
        with warnings.catch_warnings():
            # An ungeoreferenced raster is refused by check_labels_on_grid with a message of its own.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(storage.gdal_path(uri))
    except RasterioIOError as error:
        raise CorruptSceneError(f"{uri}: GDAL cannot read the labels raster ({error})") from error


def check_labels_on_grid(uri: str, info: StoreInfo, store_uri: str) -> None:
    """Refuse a label raster that is not on the store's pixel grid (shape, CRS, corners within 0.01 px)."""
    with storage.gdal_env(uri), _open_labels(uri) as labels:
        if not np.issubdtype(np.dtype(labels.dtypes[0]), np.integer):
            raise CorruptSceneError(
                f"{uri}: labels hold {labels.dtypes[0]} values; class labels must be integers"
            )
        if (labels.height, labels.width) != (info.height, info.width):
            raise GridMismatchError(
                f"{uri}: the labels are {labels.width} x {labels.height} px but the store {store_uri} is "
                f"{info.width} x {info.height} px; labels must be on the store's grid: resample them onto "
                "the scene (e.g. gdalwarp -te ... -ts ...), or pass GeoJSON polygons, which are rasterised "
                "onto it"
            )
        if info.crs_wkt is None:
            return
        if labels.crs is None:
            raise GridMismatchError(
                f"{uri}: the labels raster has no CRS, so it cannot be checked against the store "
                f"{store_uri}; "
                "georeference it on the scene's grid (gdal_edit.py -a_srs ... -a_ullr ...)"
            )
        if not grids_match(geobox_of(labels), info.geobox):
            raise GridMismatchError(
                f"{uri}: the labels ({labels.crs}, {tuple(labels.transform)[:6]}) are not on the grid of the "
                f"store {store_uri} ({tuple(info.transform[:6])}); reproject them onto the scene's grid"
            )


def scan_label_raster(uri: str, *, ignore_values: Sequence[int] = (), block_rows: int = 512) -> LabelRaster:
    """The class values of a label raster and their pixel counts, read in strips of ``block_rows``.

    The raster's own nodata and every value of ``ignore_values`` mark unlabelled pixels.
    """
    from rasterio.windows import Window as RioWindow

    with storage.gdal_env(uri), _open_labels(uri) as labels:
        unlabelled = sorted(
            {int(v) for v in ignore_values} | ({int(labels.nodata)} if labels.nodata is not None else set())
        )
        totals: dict[int, int] = {}
        for row in range(0, labels.height, block_rows):
            strip = labels.read(
                1, window=RioWindow(0, row, labels.width, min(block_rows, labels.height - row))
            )
            values, counts = np.unique(strip, return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                totals[int(value)] = totals.get(int(value), 0) + int(count)
    classes = sorted(value for value in totals if value not in unlabelled)
    if not classes:
        raise EmptySceneError(f"{uri}: no labelled pixel (every value is nodata or ignored: {unlabelled})")
    return LabelRaster(uri, tuple(classes), tuple(totals[v] for v in classes), tuple(unlabelled))


class ZarrLabelledPatchSource:
    """Labelled patches for fine-tuning: image windows from Zarr, label windows from a raster.

    Args:
        store_uri: a finished image store.
        labels: the scanned label raster on the store's grid (:func:`scan_label_raster`).
        patch_size: patch edge in pixels.
        normalisation: ``(mean, std)`` per band: the pre-trained checkpoint's.
        label_fraction: share of the labelled pixels kept (seeded, :func:`sampled_label_mask`).
        seed: seed of that sample and of the patch subset.
        max_patches: keep a seeded random subset of at most this many patches.
        min_valid_fraction: image windows with fewer valid pixels are left out.

    Only windows holding at least one sampled labelled pixel are kept (the others carry no loss).
    """

    def __init__(
        self,
        store_uri: str,
        labels: LabelRaster,
        patch_size: int,
        *,
        normalisation: tuple[Sequence[float], Sequence[float]],
        label_fraction: float,
        seed: int = 0,
        max_patches: int | None = None,
        min_valid_fraction: float = 0.5,
    ) -> None:
        # The valid windows and the normalisation; pixels are read here, to mask labels on nodata too.
        self.images = ZarrPatchSource(
            store_uri, patch_size, min_valid_fraction=min_valid_fraction, normalisation=normalisation
        )
        self.labels = labels
        self.patch_size = patch_size
        self.label_fraction = label_fraction
        self.seed = seed
        self._lookup_values = np.asarray(labels.class_values, dtype=np.int64)
        counts = [
            (int((label >= 0).sum()), labelled) for label, labelled in self._scan(range(len(self.images)))
        ]
        self.windows = [w for w, (sampled, _) in enumerate(counts) if sampled > 0]
        # Over every valid window of the scene, before max_patches: labelled pixels, and those sampled.
        self.labelled_pixels = sum(labelled for _, labelled in counts)
        self.sampled_pixels = sum(sampled for sampled, _ in counts)
        self.candidate_patches = len(self.windows)
        if not self.windows:
            raise EmptySceneError(
                f"{labels.uri}: no {patch_size} px patch of {store_uri} holds a sampled labelled "
                "pixel; raise "
                "--label-fraction or lower --patch-size"
            )
        if max_patches is not None and len(self.windows) > max_patches:
            keep = np.sort(np.random.default_rng(seed).choice(len(self.windows), max_patches, replace=False))
            self.windows = [self.windows[i] for i in keep]

    def _scan(self, image_windows: Sequence[int] | range) -> list[tuple[np.ndarray, int]]:
        """Per image window: class indices (-1 where unlabelled or not sampled), and its labelled pixels."""
        out = []
        with storage.gdal_env(self.labels.uri), _open_labels(self.labels.uri) as raster:
            for index in image_windows:
                window: Window = self.images.windows[int(index)]
                raw = raster.read(1, window=window.to_rasterio()).astype(np.int64)
                position = np.searchsorted(self._lookup_values, raw).clip(0, len(self._lookup_values) - 1)
                is_class = self._lookup_values[position] == raw
                keep = is_class & sampled_label_mask(window, fraction=self.label_fraction, seed=self.seed)
                out.append((np.where(keep, position, IGNORE_INDEX).astype(np.int64), int(is_class.sum())))
        return out

    def _read_labels(self, image_windows: Sequence[int]) -> list[np.ndarray]:
        return [labels for labels, _ in self._scan(image_windows)]

    def class_pixels_sampled(self) -> dict[int, int]:
        """Sampled labelled pixels per class value over the kept patches (for the log and checkpoint)."""
        totals = np.zeros(len(self.labels.class_values), np.int64)
        for label in self._read_labels(self.windows):
            totals += np.bincount(label[label >= 0], minlength=len(totals))
        return {
            value: int(count) for value, count in zip(self.labels.class_values, totals.tolist(), strict=True)
        }

    @property
    def band_count(self) -> int:
        return self.images.band_count

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(N, bands, P, P)`` float32, normalised, and labels ``(N, P, P)`` int64 (-1: unlabelled).

        Labels of nodata image pixels are -1 too: the network sees the band mean there, not the scene.
        """
        chosen = [self.windows[int(i)] for i in indices]
        labels = np.stack(self._read_labels(chosen))
        images = np.empty((len(chosen), self.band_count, self.patch_size, self.patch_size), np.float32)
        pairs = self.images.readers[0].read([self.images.windows[index] for index in chosen])
        for slot, (block, valid) in enumerate(pairs):
            images[slot] = normalise_block(block, self.images.band_mean, self.images.band_std, valid)
            labels[slot][~valid] = IGNORE_INDEX
        return images, labels


def label_mapping_record(labels: LabelRaster) -> dict[str, int]:
    """``{class value (as str): class index}``, as recorded in the checkpoint's ``extra``."""
    return {str(value): index for index, value in enumerate(labels.class_values)}
