"""The COG's bytes: a TIFF header written with tifffile, then tiles copied verbatim from the pieces.

GDAL encodes every pixel (the pieces and level files, :mod:`eoseg.mosaic.pieces`) and all metadata (a
tiny template GeoTIFF with the map's georeferencing, nodata, colours and tags, :func:`read_template`);
tifffile writes the TIFF structure (:func:`cog_header`); this module only places bytes. The layout is
that of GDAL's COG driver (the same strategy as its ``COPY_SRC_OVERVIEWS`` and as odc-geo's writer): all
IFDs first (full resolution, then each overview with ``NewSubfileType`` 1), then the tile data, smallest
overview first, full resolution last, row-major within a level. Classic TIFF unless the exact size (known
before writing) needs BigTIFF. GDAL's optional "ghost" structural-metadata header and block leaders are
not written (rio-cogeo does not ask for them).

:func:`assemble` streams the header and then every tile, read by byte range from its file in batches,
into one output stream: for S3 an s3fs multipart upload, so no local copy of the whole file is made and
memory is one upload part plus one batch of tiles.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eoseg.io import storage

MAIN_TAGS = (33550, 33922, 34264, 34735, 34736, 34737, 42112, 42113)
"""Copied from the template to the full-resolution IFD: ModelPixelScale, ModelTiepoint,
ModelTransformation, GeoKeyDirectory, GeoDoubleParams, GeoAsciiParams, GDAL_METADATA, GDAL_NODATA."""
OVERVIEW_TAGS = (42113,)
"""Copied to every overview IFD (as GDAL's COG driver does): GDAL_NODATA."""
RESOLUTION_TAGS = (282, 283, 296)
"""XResolution, YResolution, ResolutionUnit: tifffile always writes them, GDAL's COG driver does not (GDAL
would list them as ``TIFFTAG_*RESOLUTION`` metadata); :func:`_edit_ifds` takes them out of each IFD."""
PREDICTOR_PLACEHOLDER = 65000
"""The Predictor (317) is written under this private code and renamed in the IFD (:func:`_edit_ifds`):
tifffile's own ``predictor`` looks up an encoder (the floating-point one needs imagecodecs) although no
pixel is encoded here, and it does not write tag 317 given as an extra tag."""
BATCH_BYTES = 32 * 2**20
"""Tile bytes read (concurrently on S3) and written per batch of :func:`assemble`."""


@dataclass(frozen=True)
class TiffTemplate:
    """What a GDAL-written template says about the COG's IFDs (values only; sizes come from the map)."""

    dtype: str
    compression: int
    predictor: int
    photometric: int
    colormap: Any  # (3, 2**bits) uint16 array, or None
    main_tags: tuple[tuple[int, int, int, Any], ...]
    overview_tags: tuple[tuple[int, int, int, Any], ...]


def read_template(path: str) -> TiffTemplate:
    """Read the tag values of a (tiny) GeoTIFF that GDAL wrote with the map's metadata."""
    import tifffile

    def extra(page: Any, codes: Sequence[int]) -> tuple[tuple[int, int, int, Any], ...]:
        tags = [page.tags[code] for code in codes if code in page.tags]
        return tuple((tag.code, int(tag.dtype), tag.count, tag.value) for tag in tags)

    with tifffile.TiffFile(path) as tiff:
        page = tiff.pages.first
        return TiffTemplate(
            dtype=str(page.dtype),
            compression=int(page.compression),
            predictor=int(page.predictor),
            photometric=int(page.photometric),
            colormap=page.colormap,
            main_tags=extra(page, MAIN_TAGS),
            overview_tags=extra(page, OVERVIEW_TAGS),
        )


def _ifds(template: TiffTemplate, shapes: Sequence[tuple[int, int]], tile: int, *, bigtiff: bool) -> bytes:
    """The IFD chain (full resolution, then overviews) with empty tile tables to be patched."""
    import tifffile

    predictor = [(PREDICTOR_PLACEHOLDER, 3, 1, template.predictor, True)] if template.predictor > 1 else []
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, bigtiff=bigtiff, byteorder="<") as writer:
        for index, shape in enumerate(shapes):
            tiles = -(-shape[0] // tile) * -(-shape[1] // tile)
            writer.write(
                itertools.repeat(b"", tiles),
                shape=shape,
                dtype=template.dtype,
                tile=(tile, tile),
                compression=template.compression,
                photometric=template.photometric,
                colormap=template.colormap,
                subfiletype=1 if index else 0,
                extratags=predictor
                + [(*tag, True) for tag in (template.overview_tags if index else template.main_tags)],
                metadata=None,
                software=False,
            )
    return buffer.getvalue()


def cog_header(
    template: TiffTemplate, shapes: Sequence[tuple[int, int]], byte_counts: Sequence[Sequence[int]], tile: int
) -> bytes:
    """The COG's header: IFDs of every level with the tile offsets the data after it will have.

    Args:
        template: tag values (:func:`read_template`).
        shapes: ``(height, width)`` per level, full resolution first.
        byte_counts: per level, every tile's byte count, row-major.
        tile: the tile side in pixels.

    Returns:
        The header bytes; the tile data follows, smallest overview first (:func:`assemble`).
    """
    import tifffile

    data = sum(sum(counts) for counts in byte_counts)
    bigtiff = data + 2**24 >= 2**32  # offsets must fit in 32 bits; the header is far below 16 MiB
    header = _ifds(template, shapes, tile, bigtiff=bigtiff)
    offsets: list[list[int]] = [[] for _ in shapes]
    position = len(header)
    for level in reversed(range(len(shapes))):
        for count in byte_counts[level]:
            offsets[level].append(position)
            position += count
    buffer = io.BytesIO(header)
    with tifffile.TiffFile(buffer, mode="r+") as tiff:
        pages: list[Any] = list(tiff.pages)  # TiffPage (every IFD is read in full)
        for page, level_offsets, counts in zip(pages, offsets, byte_counts, strict=True):
            page.tags[324].overwrite(level_offsets)  # TileOffsets, TileByteCounts: same count, in place
            page.tags[325].overwrite(list(counts))
        ifd_offsets = [page.offset for page in pages]
    patched = _edit_ifds(
        bytearray(buffer.getvalue()),
        ifd_offsets,
        RESOLUTION_TAGS,
        {PREDICTOR_PLACEHOLDER: 317},
        bigtiff=bigtiff,
    )
    if len(patched) != len(header):
        raise RuntimeError("the COG header grew while its tile tables were written; please report this")
    return patched


def _edit_ifds(
    header: bytearray,
    ifd_offsets: Sequence[int],
    drop: Sequence[int],
    rename: dict[int, int],
    *,
    bigtiff: bool,
) -> bytes:
    """Remove the entries ``drop`` from each IFD and give entries of a code in ``rename`` the new code,
    in place (TIFF 6.0 section 2; BigTIFF), entries kept in ascending order of code: the later entries and
    the next-IFD offset move up, the IFD's entry count drops; the bytes freed stay unused."""
    count_format, entry_size, next_size = ("<Q", 20, 8) if bigtiff else ("<H", 12, 4)
    count_size = struct.calcsize(count_format)
    for offset in ifd_offsets:
        (count,) = struct.unpack_from(count_format, header, offset)
        start = offset + count_size
        entries = [bytes(header[start + i * entry_size : start + (i + 1) * entry_size]) for i in range(count)]
        following = bytes(header[start + count * entry_size : start + count * entry_size + next_size])
        kept = sorted(
            (
                struct.pack("<H", rename.get(code, code)) + entry[2:]
                for entry in entries
                if (code := struct.unpack_from("<H", entry)[0]) not in drop
            ),
            key=lambda entry: struct.unpack_from("<H", entry)[0],
        )
        block = b"".join(kept) + following
        struct.pack_into(count_format, header, offset, len(kept))
        header[start : start + len(block)] = block
        freed = start + len(block)
        header[freed : freed + (len(entries) - len(kept)) * entry_size] = bytes(
            (len(entries) - len(kept)) * entry_size
        )
    return bytes(header)


TileRef = tuple[str, int, int]
"""Where a tile's bytes are: ``(file URI, offset, byte count)``."""


def _runs(refs: Sequence[TileRef]) -> list[TileRef]:
    """Consecutive tiles that follow each other in one file, merged into one range."""
    runs: list[TileRef] = []
    for uri, offset, size in refs:
        if runs and runs[-1][0] == uri and runs[-1][1] + runs[-1][2] == offset:
            runs[-1] = (uri, runs[-1][1], runs[-1][2] + size)
        else:
            runs.append((uri, offset, size))
    return runs


def _batches(runs: list[TileRef]) -> list[list[TileRef]]:
    batches: list[list[TileRef]] = [[]]
    size = 0
    for run in runs:
        if size and size + run[2] > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(run)
        size += run[2]
    return batches


def assemble(target: str, header: bytes, levels: Sequence[Sequence[TileRef]]) -> int:
    """Write ``header`` then every level's tiles (smallest level first) to ``target``; returns its size.

    Args:
        target: local path or ``s3://`` URI (an s3fs multipart upload: visible only once complete).
        header: :func:`cog_header`'s bytes, whose offsets assume exactly this order.
        levels: per level (full resolution first), each tile's :data:`TileRef`, row-major.
    """
    out = storage.open_file(target, "wb")
    try:
        written = _copy_tiles(out, header, levels)
    except BaseException:
        # An S3 upload is aborted (closing would complete it); a local file is left for the next run to
        # replace. Either way it is in the staging folder, never at the target.
        abort = getattr(out, "discard", None)
        if callable(abort):
            abort()
            out.closed = True  # s3fs's discard leaves it open: a later close (even from __del__) fails
        else:
            out.close()
        raise
    out.close()
    return written


def _copy_tiles(out: Any, header: bytes, levels: Sequence[Sequence[TileRef]]) -> int:
    out.write(header)
    written = len(header)
    for batch in _batches(_runs([ref for level in reversed(levels) for ref in level])):
        by_file: dict[str, list[int]] = {}
        for index, (uri, _, _) in enumerate(batch):
            by_file.setdefault(uri, []).append(index)
        chunks: list[bytes] = [b""] * len(batch)
        for uri, indices in by_file.items():
            ranges = [(batch[i][1], batch[i][1] + batch[i][2]) for i in indices]
            for index, chunk in zip(indices, storage.read_ranges(uri, ranges), strict=True):
                chunks[index] = chunk
        for run, chunk in zip(batch, chunks, strict=True):
            if len(chunk) != run[2]:
                raise OSError(f"{run[0]}: {len(chunk)} bytes read at {run[1]}, {run[2]} expected")
            out.write(chunk)
            written += len(chunk)
    return written
