"""Patches for mCL-LC: unlabelled ones from several tile stores, labelled ones from a store and a raster.

- :class:`MultiStorePatchSource` joins the patches of several stores (same band count) into one
  ``PatchSource`` (``docs/interfaces.md``), all normalised with the same pooled band statistics
  (:func:`pooled_band_statistics`), so that the network sees one input distribution.
- :class:`ZarrLabelledPatchSource` is the ``LabelledPatchSource`` of fine-tuning: image windows read
  from Zarr, label windows read from a raster on the store's grid (rasterio windowed reads), label
  values remapped to class indices, and only a seeded fraction of the labelled pixels kept
  (:func:`sampled_label_mask`); every other pixel is ``IGNORE_INDEX``.

Nothing here holds a whole scene in memory: labels are scanned and read window by window.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from eoseg.io import storage
from eoseg.errors import BandCountError, CorruptSceneError, EmptySceneError, SceneNotFoundError
from eoseg.evaluate.scores import GridMismatchError
from eoseg.geometry import Window
from eoseg.train.patches import ZarrPatchSource, normalise_block
from eoseg.store.layout import StoreInfo, open_data_array, read_store_info
from eoseg.tile.stage import valid_pixel_mask

IGNORE_INDEX = -1  # label of pixels left out of the fine-tuning loss (FinetuneParams.ignore_index)


def read_same_band_stores(store_uris: Sequence[str]) -> list[StoreInfo]:
    """The infos of finished image stores that all have the same band count.

    Raises:
        BandCountError: naming the first store whose band count differs (or that is not an image store).
    """
    if not store_uris:
        raise SceneNotFoundError("no tile store given: pass at least one STORE.zarr (from `eoseg tile`)")
    infos = [read_store_info(uri) for uri in store_uris]
    first = infos[0]
    for uri, info in zip(store_uris, infos, strict=True):
        if info.kind != "image":
            raise BandCountError(f"{uri}: a {info.kind} store; pre-training needs image stores from `eoseg tile`")
        if info.band_count != first.band_count:
            raise BandCountError(
                f"{uri}: has {info.band_count} band(s) but {store_uris[0]} has {first.band_count}; every "
                "pre-training store must have the same bands (one network input). Pre-train on stores of one "
                "sensor, or convert the scenes to common bands before tiling them."
            )
    return infos


def pooled_band_statistics(infos: Sequence[StoreInfo]) -> tuple[list[float], list[float]]:
    """Per-band mean and std over the valid pixels of all stores, from each store's ``band_stats``.

    Count-weighted: ``mean = sum(n_i m_i) / N`` and ``var = sum(n_i (s_i^2 + (m_i - mean)^2)) / N``
    (population variance, as the stores record). Std is floored at 1e-6 like a single store's.
    """
    counts, means, stds = [], [], []
    for info in infos:
        if not info.band_stats:
            raise CorruptSceneError(f"{info.source_uri}: its store has no band statistics; tile the scene again")
        counts.append(np.asarray(info.band_stats["count"], np.float64))
        means.append(np.asarray(info.band_stats["mean"], np.float64))
        stds.append(np.asarray(info.band_stats["std"], np.float64))
    n, m, s = np.stack(counts), np.stack(means), np.stack(stds)
    total = n.sum(axis=0)
    if (total <= 0).any():
        raise EmptySceneError("the stores hold no valid pixels to compute band statistics from")
    mean = (n * m).sum(axis=0) / total
    variance = (n * (s**2 + (m - mean) ** 2)).sum(axis=0) / total
    return mean.tolist(), np.maximum(np.sqrt(variance), 1e-6).tolist()


class MultiStorePatchSource:
    """The patches of several stores as one ``PatchSource``, normalised with one set of statistics.

    Args:
        store_uris: finished image stores with the same band count.
        patch_size: patch edge in pixels.
        normalisation: ``(mean, std)`` per band; default: pooled over the stores.
        max_patches: keep a seeded random subset of at most this many patches over all stores.
        seed: seed of that subset.
        min_valid_fraction: windows with fewer valid pixels are left out.
    """

    def __init__(self, store_uris: Sequence[str], patch_size: int, *,
                 normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
                 max_patches: int | None = None, seed: int = 0, min_valid_fraction: float = 0.5) -> None:
        infos = read_same_band_stores(store_uris)
        self.store_uris = list(store_uris)
        self.band_mean, self.band_std = normalisation or pooled_band_statistics(infos)
        self.sources = [
            ZarrPatchSource(uri, patch_size, min_valid_fraction=min_valid_fraction,
                            normalisation=(self.band_mean, self.band_std))
            for uri in self.store_uris
        ]  # fmt: skip
        self.patch_size = patch_size
        self.band_count = infos[0].band_count
        # (source, window index) of every patch kept, in store order.
        self.index = [(s, w) for s, source in enumerate(self.sources) for w in range(len(source))]
        if max_patches is not None and len(self.index) > max_patches:
            keep = np.sort(np.random.default_rng(seed).choice(len(self.index), max_patches, replace=False))
            self.index = [self.index[i] for i in keep]

    def patches_per_store(self) -> dict[str, int]:
        counts = dict.fromkeys(self.store_uris, 0)
        for source, _ in self.index:
            counts[self.store_uris[source]] += 1
        return counts

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), bands, patch, patch)`` float32, normalised, nodata set to 0."""
        out = np.empty((len(indices), self.band_count, self.patch_size, self.patch_size), np.float32)
        for slot, index in enumerate(indices):
            source, window = self.index[int(index)]
            out[slot] = self.sources[source].read([window])[0]
        return out


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


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


def _open_labels(uri: str):
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
    """Refuse a label raster that is not on the store's pixel grid (shape, CRS and transform)."""
    from affine import Affine

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
                f"{uri}: the labels raster has no CRS, so it cannot be checked against the store {store_uri}; "
                "georeference it on the scene's grid (gdal_edit.py -a_srs ... -a_ullr ...)"
            )
        from rasterio.crs import CRS

        if labels.crs != CRS.from_wkt(info.crs_wkt) or not labels.transform.almost_equals(
            Affine(*info.transform[:6])
        ):
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
        unlabelled = sorted({int(v) for v in ignore_values} | ({int(labels.nodata)} if labels.nodata is not None
                                                                 else set()))  # fmt: skip
        totals: dict[int, int] = {}
        for row in range(0, labels.height, block_rows):
            strip = labels.read(1, window=RioWindow(0, row, labels.width, min(block_rows, labels.height - row)))
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

    def __init__(self, store_uri: str, labels: LabelRaster, patch_size: int, *,
                 normalisation: tuple[Sequence[float], Sequence[float]], label_fraction: float, seed: int = 0,
                 max_patches: int | None = None, min_valid_fraction: float = 0.5) -> None:
        # The valid windows and the normalisation; pixels are read here, to mask labels on nodata too.
        self.images = ZarrPatchSource(store_uri, patch_size, min_valid_fraction=min_valid_fraction,
                                      normalisation=normalisation)
        self._array = open_data_array(store_uri, self.images.info)
        self.labels = labels
        self.patch_size = patch_size
        self.label_fraction = label_fraction
        self.seed = seed
        self._lookup_values = np.asarray(labels.class_values, dtype=np.int64)
        counts = [(int((label >= 0).sum()), labelled) for label, labelled in self._scan(range(len(self.images)))]
        self.windows = [w for w, (sampled, _) in enumerate(counts) if sampled > 0]
        # Over every valid window of the scene, before max_patches: labelled pixels, and those sampled.
        self.labelled_pixels = sum(labelled for _, labelled in counts)
        self.sampled_pixels = sum(sampled for sampled, _ in counts)
        self.candidate_patches = len(self.windows)
        if not self.windows:
            raise EmptySceneError(
                f"{labels.uri}: no {patch_size} px patch of {store_uri} holds a sampled labelled pixel; raise "
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
        return {value: int(count) for value, count in zip(self.labels.class_values, totals.tolist(), strict=True)}

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
        info = self.images.info
        for slot, index in enumerate(chosen):
            block = np.asarray(self._array[(slice(None), *self.images.windows[index].slices)])
            images[slot] = normalise_block(block, self.images.band_mean, self.images.band_std, info.nodata)
            labels[slot][~valid_pixel_mask(block, info.nodata)] = IGNORE_INDEX
        return images, labels


def label_mapping_record(labels: LabelRaster) -> dict[str, int]:
    """``{class value (as str): class index}``, as recorded in the checkpoint's ``extra``."""
    return {str(value): index for index, value in enumerate(labels.class_values)}
