"""Training patches read from a tile store, never from the whole scene in memory.

:class:`ZarrPatchSource` implements the ``PatchSource`` contract of ``docs/interfaces.md``: it lists
every non-overlapping ``patch x patch`` window of the store that holds enough valid pixels, and
``read(indices)`` reads just those windows from Zarr, normalised with the store's band statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eoseg.geometry import ChunkGrid, Window
from eoseg.store.layout import StoreInfo, open_data_array, read_store_info
from eoseg.tile.stage import valid_pixel_mask


def band_normalisation(info: StoreInfo) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation of valid pixels (std floored so flat bands do not blow up)."""
    if not info.band_stats:
        raise ValueError(f"{info.source_uri}: the store has no band statistics; tile the scene again")
    mean = [float(m) for m in info.band_stats["mean"]]
    std = [max(float(s), 1e-6) for s in info.band_stats["std"]]
    return mean, std


def normalise_block(block: np.ndarray, mean: Sequence[float], std: Sequence[float],
                    nodata: float | int | None) -> np.ndarray:
    """``(x - mean) / std`` per band as float32, with nodata pixels set to 0 (the band mean)."""
    valid = valid_pixel_mask(block, nodata)
    out = (block.astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(
        std, np.float32
    )[:, None, None]
    out[:, ~valid] = 0.0
    return out


class ZarrPatchSource:
    """All ``patch_size`` windows of a store with at least ``min_valid_fraction`` valid pixels.

    Args:
        store_uri: a finished image store.
        patch_size: patch edge R' = C' in pixels.
        min_valid_fraction: windows with fewer valid pixels (e.g. a nodata collar) are left out.
        max_patches: keep a random subset of at most this many windows (seeded); None keeps all.
        seed: seed for that subset.
        normalisation: per-band ``(mean, std)`` to normalise with instead of the store's own statistics
            (e.g. pooled over several stores, or a pre-trained checkpoint's).
    """

    def __init__(self, store_uri: str, patch_size: int, *, min_valid_fraction: float = 0.5,
                 max_patches: int | None = None, seed: int = 0,
                 normalisation: tuple[Sequence[float], Sequence[float]] | None = None) -> None:
        self.store_uri = store_uri
        self.info = read_store_info(store_uri)
        self.patch_size = patch_size
        if normalisation is None:
            self.band_mean, self.band_std = band_normalisation(self.info)
        else:
            self.band_mean = [float(value) for value in normalisation[0]]
            self.band_std = [float(value) for value in normalisation[1]]
            if len(self.band_mean) != self.info.band_count or len(self.band_std) != self.info.band_count:
                raise ValueError(f"{store_uri}: {self.info.band_count} band(s), but the normalisation has "
                                 f"{len(self.band_mean)} mean(s) and {len(self.band_std)} std(s)")
        if self.info.height < patch_size or self.info.width < patch_size:
            raise ValueError(
                f"{store_uri}: the scene ({self.info.width} x {self.info.height} px) is smaller than one "
                f"training patch ({patch_size} px); choose a smaller --patch-size"
            )
        self._array = open_data_array(store_uri, self.info)
        grid = ChunkGrid(self.info.height // patch_size * patch_size, self.info.width // patch_size * patch_size,
                         patch_size, patch_size)
        windows = [window for _, window in grid.windows()]
        self.windows = self._keep_valid(windows, min_valid_fraction)
        if not self.windows:
            raise ValueError(f"{store_uri}: no {patch_size} px patch has {min_valid_fraction:.0%} valid pixels")
        if max_patches is not None and len(self.windows) > max_patches:
            keep = np.sort(np.random.default_rng(seed).choice(len(self.windows), max_patches, replace=False))
            self.windows = [self.windows[i] for i in keep]

    def _keep_valid(self, windows: list[Window], min_valid_fraction: float) -> list[Window]:
        if self.info.nodata is None and not np.issubdtype(np.dtype(self.info.dtype), np.floating):
            return windows
        by_chunk: dict[tuple[int, int], list[Window]] = {}
        for window in windows:
            key = (window.row_off // self.info.chunk_rows, window.col_off // self.info.chunk_cols)
            by_chunk.setdefault(key, []).append(window)
        kept = []
        # Decode each Zarr chunk once and test the patches that start in it.
        for key in sorted(by_chunk):
            chunk = self.info.grid.window(*key)
            block = np.asarray(self._array[(slice(None), *chunk.slices)])
            for window in by_chunk[key]:
                if window.row_stop <= chunk.row_stop and window.col_stop <= chunk.col_stop:
                    rows, cols = window.relative_to(chunk).slices
                    part = block[:, rows, cols]
                else:  # the patch straddles a chunk edge
                    part = np.asarray(self._array[(slice(None), *window.slices)])
                if valid_pixel_mask(part, self.info.nodata).mean() >= min_valid_fraction:
                    kept.append(window)
        return kept

    @property
    def band_count(self) -> int:
        return self.info.band_count

    def __len__(self) -> int:
        return len(self.windows)

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), bands, patch, patch)`` float32, normalised, nodata set to 0."""
        patches = np.empty((len(indices), self.band_count, self.patch_size, self.patch_size), np.float32)
        for slot, index in enumerate(indices):
            window = self.windows[int(index)]
            block = np.asarray(self._array[(slice(None), *window.slices)])
            patches[slot] = normalise_block(block, self.band_mean, self.band_std, self.info.nodata)
        return patches
