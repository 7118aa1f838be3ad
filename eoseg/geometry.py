"""Pixel-grid geometry as small immutable value objects, kept apart from any I/O.

A scene is ``height x width`` pixels; it is cut into a :class:`ChunkGrid` of :class:`Window` s that
match the Zarr chunks one to one, so that parallel writers never touch the same chunk. Inference reads
each window grown by a halo (:meth:`Window.grown`) and keeps only the inner part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: rows ``[row_off, row_off + height)``, columns ``[col_off, col_off + width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        return self.row_off + self.height

    @property
    def col_stop(self) -> int:
        return self.col_off + self.width

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing a 2-D array (or the last two axes of a 3-D one)."""
        return slice(self.row_off, self.row_stop), slice(self.col_off, self.col_stop)

    @property
    def size(self) -> int:
        return self.height * self.width

    def grown(self, halo: int, *, height_limit: int, width_limit: int) -> Window:
        """This window grown by ``halo`` pixels on every side, clipped to ``[0, limit)``."""
        row_off = max(0, self.row_off - halo)
        col_off = max(0, self.col_off - halo)
        row_stop = min(height_limit, self.row_stop + halo)
        col_stop = min(width_limit, self.col_stop + halo)
        return Window(row_off, col_off, row_stop - row_off, col_stop - col_off)

    def relative_to(self, outer: Window) -> Window:
        """This window in the pixel coordinates of ``outer`` (which must contain it)."""
        if not (
            outer.row_off <= self.row_off
            and outer.col_off <= self.col_off
            and self.row_stop <= outer.row_stop
            and self.col_stop <= outer.col_stop
        ):
            raise ValueError(f"{self} is not inside {outer}")
        return Window(self.row_off - outer.row_off, self.col_off - outer.col_off, self.height, self.width)

    def to_rasterio(self):  # -> rasterio.windows.Window; imported lazily to keep this module I/O-free
        from rasterio.windows import Window as RioWindow

        return RioWindow(self.col_off, self.row_off, self.width, self.height)


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    """A ``height x width`` raster cut into chunks of ``chunk_rows x chunk_cols`` (edge chunks are smaller)."""

    height: int
    width: int
    chunk_rows: int
    chunk_cols: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"grid must have pixels, got {self.height} x {self.width}")
        if self.chunk_rows <= 0 or self.chunk_cols <= 0:
            raise ValueError(f"chunk size must be positive, got {self.chunk_rows} x {self.chunk_cols}")

    @property
    def shape_in_chunks(self) -> tuple[int, int]:
        return -(-self.height // self.chunk_rows), -(-self.width // self.chunk_cols)

    def __len__(self) -> int:
        rows, cols = self.shape_in_chunks
        return rows * cols

    def window(self, chunk_row: int, chunk_col: int) -> Window:
        """The window of chunk ``(chunk_row, chunk_col)``."""
        row_off = chunk_row * self.chunk_rows
        col_off = chunk_col * self.chunk_cols
        return Window(
            row_off,
            col_off,
            min(self.chunk_rows, self.height - row_off),
            min(self.chunk_cols, self.width - col_off),
        )

    def windows(self) -> Iterator[tuple[tuple[int, int], Window]]:
        """Every ``((chunk_row, chunk_col), window)`` in row-major order."""
        rows, cols = self.shape_in_chunks
        for chunk_row in range(rows):
            for chunk_col in range(cols):
                yield (chunk_row, chunk_col), self.window(chunk_row, chunk_col)
