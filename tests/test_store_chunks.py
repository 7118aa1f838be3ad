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


def _write_both_ways(tmp_path: Path, data: np.ndarray, chunks: tuple[int, ...], **options) -> dict[str, dict]:
    """The files of an array written chunk by chunk by zarr and by ``write_chunk``."""
    stores = {}
    for name in ("zarr", "write_chunk"):
        root = tmp_path / f"{name}.zarr"
        group = zarr.open_group(root, mode="w", zarr_format=3)
        array = group.create_array("values", shape=data.shape, dtype=data.dtype, chunks=chunks, **options)
        for index in np.ndindex(*(-(-size // chunk) for size, chunk in zip(data.shape, chunks, strict=True))):
            selection = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, chunks, strict=True))
            if name == "zarr":
                array[selection] = data[selection]
            else:
                write_chunk(str(root), "values", index, data[selection])
        stores[name] = _files(root)
    return stores


def test_zstd_chunks_such_as_the_done_flags_are_the_bytes_zarr_writes(tmp_path):
    flags = np.random.default_rng(1).integers(0, 2, size=(3, 4)).astype(np.uint8)  # chunk_done, (1, 1)
    stores = _write_both_ways(tmp_path, flags, (1, 1), fill_value=0)  # zarr's default codec: zstd
    assert stores["write_chunk"] == stores["zarr"]


def test_a_store_recreated_at_the_same_path_is_encoded_with_its_new_settings(tmp_path):
    """The encoding kept between writes follows the array's metadata: another chunk shape, dtype or
    codec at the same path (an overwritten store) is written as zarr writes it."""
    data = np.random.default_rng(2).integers(0, 300, size=(2, 50, 60)).astype(np.uint16)
    blosc = (BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),)
    first = _write_both_ways(tmp_path, data, (2, 32, 32), fill_value=0, compressors=blosc)
    assert first["write_chunk"] == first["zarr"]
    for chunks, dtype, level in (
        ((2, 16, 16), "uint16", 1),
        ((2, 16, 16), "int32", 1),
        ((2, 16, 16), "int32", 5),
    ):
        compressors = (BloscCodec(cname="zstd", clevel=level, shuffle="bitshuffle"),)
        again = _write_both_ways(tmp_path, data.astype(dtype), chunks, fill_value=0, compressors=compressors)
        assert again["write_chunk"] == again["zarr"]
        assert again["write_chunk"] != first["write_chunk"]
        first = again
