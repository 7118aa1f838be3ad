"""Training patches from tile stores: one sampler (grid, seeded subset, validity filter), one reader.

As in torchgeo, where patches come from is separate from reading them:

- :func:`patch_grid` lists the non-overlapping ``patch x patch`` windows of a store;
- :func:`sample_patches` chooses among the windows of one or more stores: a seeded random subset of at
  most ``max_patches``, keeping only windows with at least ``min_valid_fraction`` valid pixels. The
  subset is drawn *before* validity is tested, in rounds, so a small ``max_patches`` decodes only the
  chunks of its candidates, not the whole scene;
- :class:`StoreWindowReader` reads windows of one store, decoding each Zarr chunk once per call
  however many of the requested windows lie in it;
- :class:`MultiStorePatchSource` is the ``PatchSource`` of ``docs/interfaces.md`` over one or more
  stores (same band count), normalised with one set of band statistics, by default pooled over the
  stores (:func:`pooled_band_statistics`); :class:`ZarrPatchSource` is its one-store form.

Validity comes from the store's ``valid`` variable (:func:`eoseg.store.layout.read_image_window`): a
window with fewer than ``min_valid_fraction`` valid pixels is skipped, and in a kept patch every invalid
pixel (nodata value, NaN, alpha 0, masked) is replaced by its band mean (0 after normalisation), so it
never reaches a network as data; fine-tuning labels are ignored (-1) there too.

Nothing here holds a whole scene in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eoseg.errors import ConfigurationError, CorruptSceneError, EmptySceneError
from eoseg.geometry import ChunkGrid, Window
from eoseg.store.layout import StoreInfo, read_image_window, read_store_info
from eoseg.train.stores import read_same_band_stores

__all__ = [
    "MultiStorePatchSource",
    "StoreWindowReader",
    "ZarrPatchSource",
    "band_normalisation",
    "normalise_block",
    "patch_grid",
    "pooled_band_statistics",
    "sample_patches",
]


def band_normalisation(info: StoreInfo) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of valid pixels (std floored so flat bands do not blow up).

    Raises:
        CorruptSceneError: If the store has no band statistics.
    """
    if not info.band_stats:
        raise CorruptSceneError(f"{info.source_uri}: the store has no band statistics; tile the scene again")
    return (
        [float(m) for m in info.band_stats["mean"]],
        [max(float(s), 1e-6) for s in info.band_stats["std"]],
    )


def pooled_band_statistics(infos: Sequence[StoreInfo]) -> tuple[list[float], list[float]]:
    """Per-band mean and std over the valid pixels of all stores, from each store's ``band_stats``.

    Count-weighted: ``mean = sum(n_i m_i) / N`` and ``var = sum(n_i (s_i^2 + (m_i - mean)^2)) / N``
    (population variance, as the stores record). Std is floored at 1e-6. One store gives its own
    statistics exactly (:func:`band_normalisation`).

    Raises:
        CorruptSceneError: If a store has no band statistics.
        EmptySceneError: If the stores hold no valid pixel of some band.
    """
    if len(infos) == 1:
        return band_normalisation(infos[0])
    counts, means, stds = [], [], []
    for info in infos:
        if not info.band_stats:
            raise CorruptSceneError(
                f"{info.source_uri}: its store has no band statistics; tile the scene again"
            )
        means.append(np.asarray(info.band_stats["mean"], np.float64))
        stds.append(np.asarray(info.band_stats["std"], np.float64))
        counts.append(np.asarray(info.band_stats["count"], np.float64))
    n, m, s = np.stack(counts), np.stack(means), np.stack(stds)
    total = n.sum(axis=0)
    if (total <= 0).any():
        raise EmptySceneError("the stores hold no valid pixels to compute band statistics from")
    mean = (n * m).sum(axis=0) / total
    variance = (n * (s**2 + (m - mean) ** 2)).sum(axis=0) / total
    return [float(v) for v in mean], [float(v) for v in np.maximum(np.sqrt(variance), 1e-6)]


def normalise_block(
    block: np.ndarray, mean: Sequence[float], std: Sequence[float], valid: np.ndarray
) -> np.ndarray:
    """``(x - mean) / std`` per band as float32, with invalid pixels (``valid`` False) set to 0 (the band
    mean), so no nodata value, NaN or masked pixel reaches a network as data."""
    out = (block.astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(
        std, np.float32
    )[:, None, None]
    out[:, ~valid] = 0.0
    return out


def check_patch_fits(uri: str, height: int, width: int, patch_size: int) -> None:
    """Refuse a scene (or store) smaller than one training patch, before any training output exists.

    Raises:
        ConfigurationError: ``height`` or ``width`` (pixels) is below ``patch_size``; the message names
            ``uri``, the largest patch size that fits and the smallest scene that works.
    """
    if height < patch_size or width < patch_size:
        smaller = f", or a --patch-size of at most {min(height, width)}" if min(height, width) >= 8 else ""
        raise ConfigurationError(
            f"{uri}: the scene ({width} x {height} px) is smaller than one {patch_size} px training patch; "
            f"training needs a scene of at least {patch_size} x {patch_size} px{smaller} "
            "(tile and mosaic work on any size)"
        )


def patch_grid(info: StoreInfo, patch_size: int) -> list[Window]:
    """The non-overlapping ``patch_size`` windows of a store, row-major from the top-left corner.

    A strip narrower than a patch at the right or bottom edge is not covered.
    """
    grid = ChunkGrid(
        info.height // patch_size * patch_size, info.width // patch_size * patch_size, patch_size, patch_size
    )
    return [window for _, window in grid.windows()]


class StoreWindowReader:
    """Windows of one image store, read chunk by chunk: each Zarr chunk is decoded once per call."""

    def __init__(self, store_uri: str, info: StoreInfo | None = None) -> None:
        self.store_uri = store_uri
        self.info = read_store_info(store_uri) if info is None else info

    def _chunk_of(self, window: Window) -> tuple[int, int] | None:
        """The chunk holding the whole window, or None if it straddles a chunk edge."""
        row, col = window.row_off // self.info.chunk_rows, window.col_off // self.info.chunk_cols
        chunk = self.info.grid.window(row, col)
        inside = window.row_stop <= chunk.row_stop and window.col_stop <= chunk.col_stop
        return (row, col) if inside else None

    def read(self, windows: Sequence[Window]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Raw pixels ``(bands, rows, cols)`` and validity ``(rows, cols)`` bool of each window, in order."""
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(windows)
        by_chunk: dict[tuple[int, int], list[int]] = {}
        for slot, window in enumerate(windows):
            key = self._chunk_of(window)
            if key is None:  # straddles chunks: read on its own
                out[slot] = read_image_window(self.store_uri, self.info, *window.slices)
            else:
                by_chunk.setdefault(key, []).append(slot)
        for key in sorted(by_chunk):
            chunk = self.info.grid.window(*key)
            block, valid = read_image_window(self.store_uri, self.info, *chunk.slices)
            for slot in by_chunk[key]:
                rows, cols = windows[slot].relative_to(chunk).slices
                out[slot] = (block[:, rows, cols], valid[rows, cols])
        return [pair for pair in out if pair is not None]

    def valid_fractions(self, windows: Sequence[Window]) -> np.ndarray:
        """Share of valid pixels of each window."""
        return np.array([valid.mean() for _, valid in self.read(windows)])


def sample_patches(
    readers: Sequence[StoreWindowReader],
    patch_size: int,
    *,
    min_valid_fraction: float = 0.5,
    max_patches: int | None = None,
    seed: int = 0,
) -> list[tuple[int, Window]]:
    """Choose training patches: ``(reader index, window)`` pairs in store order, then row-major.

    Without ``max_patches`` every grid window with at least ``min_valid_fraction`` valid pixels is kept.
    With it, a seeded permutation of all windows is tested for validity in rounds of the patches still
    missing, so only the chunks of the candidates are decoded; the result is at most ``max_patches``
    valid windows (fewer only if the stores do not hold that many).
    """
    candidates = [
        (r, window) for r, reader in enumerate(readers) for window in patch_grid(reader.info, patch_size)
    ]
    if max_patches is None or max_patches >= len(candidates):
        order = np.arange(len(candidates))
        wanted = len(candidates)
    else:
        order = np.random.default_rng(seed).permutation(len(candidates))
        wanted = max_patches
    kept: list[int] = []
    position = 0
    while len(kept) < wanted and position < len(order):
        batch = np.sort(order[position : position + wanted - len(kept)])
        position += len(batch)
        for r, reader in enumerate(readers):
            mine = [int(i) for i in batch if candidates[i][0] == r]
            if mine:
                fractions = reader.valid_fractions([candidates[i][1] for i in mine])
                kept += [
                    i for i, fraction in zip(mine, fractions, strict=True) if fraction >= min_valid_fraction
                ]
    return [candidates[i] for i in sorted(kept)]


class MultiStorePatchSource:
    """The patches of one or more image stores as one ``PatchSource``, normalised with one set of statistics.

    Args:
        store_uris: finished image stores with the same band count.
        patch_size: patch edge in pixels.
        normalisation: ``(mean, std)`` per band; default: pooled over the stores (a checkpoint's, to
            fine-tune or resume).
        max_patches: keep a seeded random subset of at most this many patches over all stores.
        seed: seed of that subset.
        min_valid_fraction: windows with fewer valid pixels (e.g. a nodata collar) are left out.

    Raises:
        SceneNotFoundError, BandCountError: from :func:`eoseg.train.stores.read_same_band_stores`.
        ValueError: If a scene is smaller than one patch, the normalisation has the wrong length, or no
            patch has enough valid pixels.
    """

    def __init__(
        self,
        store_uris: Sequence[str],
        patch_size: int,
        *,
        normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
        max_patches: int | None = None,
        seed: int = 0,
        min_valid_fraction: float = 0.5,
    ) -> None:
        infos = read_same_band_stores(store_uris)
        self.store_uris = list(store_uris)
        self.patch_size = patch_size
        self.band_count = infos[0].band_count
        for uri, info in zip(self.store_uris, infos, strict=True):
            check_patch_fits(uri, info.height, info.width, patch_size)
        mean, std = pooled_band_statistics(infos) if normalisation is None else normalisation
        self.band_mean = [float(value) for value in mean]
        self.band_std = [float(value) for value in std]
        if len(self.band_mean) != self.band_count or len(self.band_std) != self.band_count:
            raise ValueError(
                f"{store_uris[0]}: {self.band_count} band(s), but the normalisation has "
                f"{len(self.band_mean)} mean(s) and {len(self.band_std)} std(s)"
            )
        self.readers = [
            StoreWindowReader(uri, info) for uri, info in zip(self.store_uris, infos, strict=True)
        ]
        self.index = sample_patches(
            self.readers,
            patch_size,
            min_valid_fraction=min_valid_fraction,
            max_patches=max_patches,
            seed=seed,
        )
        if not self.index:
            raise ValueError(
                f"{', '.join(self.store_uris)}: no {patch_size} px patch has "
                f"{min_valid_fraction:.0%} valid pixels"
            )

    def patches_per_store(self) -> dict[str, int]:
        """Patches kept per store URI."""
        counts = dict.fromkeys(self.store_uris, 0)
        for reader, _ in self.index:
            counts[self.store_uris[reader]] += 1
        return counts

    def __len__(self) -> int:
        return len(self.index)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), bands, patch, patch)`` float32, normalised, nodata set to 0."""
        out = np.empty((len(indices), self.band_count, self.patch_size, self.patch_size), np.float32)
        by_reader: dict[int, list[int]] = {}
        for slot, index in enumerate(indices):
            by_reader.setdefault(self.index[int(index)][0], []).append(slot)
        for reader, slots in by_reader.items():
            pairs = self.readers[reader].read([self.index[int(indices[slot])][1] for slot in slots])
            for slot, (block, valid) in zip(slots, pairs, strict=True):
                out[slot] = normalise_block(block, self.band_mean, self.band_std, valid)
        return out


class ZarrPatchSource(MultiStorePatchSource):
    """The patches of one image store (:class:`MultiStorePatchSource` of one store, its own statistics).

    Attributes:
        info: the store's :class:`StoreInfo`.
        windows: the kept windows, row-major.
    """

    def __init__(
        self,
        store_uri: str,
        patch_size: int,
        *,
        min_valid_fraction: float = 0.5,
        max_patches: int | None = None,
        seed: int = 0,
        normalisation: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__(
            [store_uri],
            patch_size,
            normalisation=normalisation,
            max_patches=max_patches,
            seed=seed,
            min_valid_fraction=min_valid_fraction,
        )
        self.store_uri = store_uri
        self.info = self.readers[0].info
        self.windows = [window for _, window in self.index]
