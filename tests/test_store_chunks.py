"""`eoseg.store.layout.write_chunk` stores the bytes zarr itself writes for the same chunk: the tile stage
encodes chunks with numcodecs' Blosc directly (twice as fast) and the store must not change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from eoseg.store.layout import write_chunk


def _files(root: Path) -> dict[str, bytes]:
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


DTYPES_AND_FILLS = [("uint8", 0), ("uint16", 65535), ("int16", -9999), ("float32", 0)]


@pytest.mark.parametrize(("dtype", "fill"), DTYPES_AND_FILLS)
def test_write_chunk_stores_the_bytes_zarr_writes(tmp_path, dtype, fill):
    rng = np.random.default_rng(3)
    shape, chunks = (3, 70, 90), (3, 32, 40)  # edge chunks are partial in both directions
    data = rng.integers(0, 200, size=shape).astype(dtype)
    data[:, :32, :40] = fill  # one chunk holds only the fill value: zarr stores nothing for it
    stores = {}
    for name in ("zarr", "write_chunk"):
        root = tmp_path / f"{name}.zarr"
        group = zarr.open_group(root, mode="w", zarr_format=3)
        group.create_array(
            "image", shape=shape, dtype=dtype, chunks=chunks, fill_value=fill,
            compressors=(BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),),
        )  # fmt: skip
        for row in range(0, shape[1], chunks[1]):
            for col in range(0, shape[2], chunks[2]):
                block = data[:, row : row + chunks[1], col : col + chunks[2]]
                if name == "zarr":
                    group["image"][:, row : row + chunks[1], col : col + chunks[2]] = block
                else:
                    write_chunk(str(root), "image", (0, row // chunks[1], col // chunks[2]), block)
        stores[name] = _files(root)
    assert "image/c/0/0/0" not in stores["write_chunk"]
    assert stores["write_chunk"] == stores["zarr"]
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "write_chunk.zarr" / "image")[:], data)
