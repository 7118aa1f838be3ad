"""Build a large 4-band uint8 GeoTIFF from the real NAIP scenes in ``/work/shared/data/naip/``.

The ten NAIP scenes (one per year, ~934 x 723 px, 4 bands, EPSG:26914, 5 m) are laid side by side in a
``tiles_x`` x ``tiles_y`` grid under one georeference: the origin and pixel size of the first scene,
cycling through the years. Every scene is cropped to the smallest common size (934 x 723), so cells are
uniform. The output is tiled 256 x 256, DEFLATE, pixel-interleaved (like the NAIP originals), and is
written one 256-row strip at a time: memory holds the ten small sources plus one strip, never the mosaic.

Usage::

    python benchmarks/build_large_scene.py OUT.tif --tiles-x 9 --tiles-y 12            # 8406 x 8676 px
    python benchmarks/build_large_scene.py OUT.tif --tiles-x 18 --tiles-y 24           # 4x the pixels
    python benchmarks/build_large_scene.py OUT.tif --tiles-x 5 --tiles-y 6 --width 4203 --height 4338
"""

from __future__ import annotations

import argparse
import glob
import os
from pathlib import Path

import numpy as np

NAIP_DIR = Path(os.environ.get("EOSEG_NAIP_DIR", "/work/shared/data/naip"))
BLOCK = 256

# Named sizes used by the benchmark: pixel counts 0.25x, 1x (>= 8000 x 8000) and 4x (each side doubled).
SIZES: dict[str, dict[str, int]] = {
    "0.25x": {"tiles_x": 5, "tiles_y": 6, "width": 4203, "height": 4338},  # exactly half of each 1x side
    "1x": {"tiles_x": 9, "tiles_y": 12},  # 8406 x 8676
    "4x": {"tiles_x": 18, "tiles_y": 24},  # 16812 x 17352
}


def naip_sources(naip_dir: Path = NAIP_DIR) -> list[str]:
    paths = sorted(glob.glob(str(naip_dir / "*.tif")))
    if not paths:
        raise FileNotFoundError(f"no NAIP GeoTIFFs in {naip_dir}")
    return paths


def build_naip_mosaic(
    out_path: str | os.PathLike[str],
    *,
    tiles_x: int,
    tiles_y: int,
    width: int | None = None,
    height: int | None = None,
    naip_dir: Path = NAIP_DIR,
) -> dict:
    """Write the mosaic to ``out_path``; return its ``{"path", "width", "height", "bands", "bytes"}``.

    ``width``/``height`` crop the grid (to get exact pixel-count ratios); they default to the full grid.
    """
    import rasterio
    from rasterio.windows import Window

    if tiles_x < 1 or tiles_y < 1:
        raise ValueError("tiles_x and tiles_y must be at least 1")
    paths = naip_sources(naip_dir)
    with rasterio.open(paths[0]) as first:
        crs, transform, count, dtype, nodata = (
            first.crs,
            first.transform,
            first.count,
            first.dtypes[0],
            first.nodata,
        )
    shapes = []
    for path in paths:
        with rasterio.open(path) as src:
            shapes.append((src.height, src.width))
    cell_h = min(h for h, _ in shapes)
    cell_w = min(w for _, w in shapes)
    # The ten sources are small (~2.7 MB each uncompressed): hold them, cropped to the common cell size.
    cells = []
    for path in paths:
        with rasterio.open(path) as src:
            if src.count != count or src.dtypes[0] != dtype:
                raise ValueError(f"{path}: expected {count} bands of {dtype}")
            cells.append(src.read(window=Window(0, 0, cell_w, cell_h)))
    full_w, full_h = tiles_x * cell_w, tiles_y * cell_h
    width = full_w if width is None else min(width, full_w)
    height = full_h if height is None else min(height, full_h)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
        "crs": crs, "transform": transform, "nodata": nodata, "tiled": True,
        "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "DEFLATE", "interleave": "pixel",
        "bigtiff": "IF_SAFER",
        # GDAL writes 3-4 Byte bands as RGB (+ alpha) unless told otherwise: NAIP's NIR is data, not alpha.
        "photometric": "MINISBLACK",
    }  # fmt: skip
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.partial")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row0 in range(0, height, BLOCK):
            rows = min(BLOCK, height - row0)
            strip = np.empty((count, rows, width), dtype=dtype)
            r = row0
            while r < row0 + rows:
                ty, in_cell = divmod(r, cell_h)
                take = min(cell_h - in_cell, row0 + rows - r)
                for tx in range(-(-width // cell_w)):
                    cell = cells[(ty * tiles_x + tx) % len(cells)]
                    c0 = tx * cell_w
                    c1 = min(c0 + cell_w, width)
                    strip[:, r - row0 : r - row0 + take, c0:c1] = cell[:, in_cell : in_cell + take, : c1 - c0]
                r += take
            dst.write(strip, window=Window(0, row0, width, rows))
    os.replace(tmp, out_path)
    return {"path": str(out_path), "width": width, "height": height, "bands": count,
            "bytes": out_path.stat().st_size}  # fmt: skip


def build_named(size: str, out_dir: str | os.PathLike[str], *, rebuild: bool = False) -> dict:
    """Build (or reuse) the scene of a named size (``0.25x``, ``1x``, ``4x``) as ``OUT_DIR/naip_<size>.tif``."""
    spec = SIZES[size]
    out = Path(out_dir) / f"naip_{size}.tif"
    if out.exists() and not rebuild:
        import rasterio

        with rasterio.open(out) as ds:
            return {"path": str(out), "width": ds.width, "height": ds.height, "bands": ds.count,
                    "bytes": out.stat().st_size}  # fmt: skip
    return build_naip_mosaic(out, **spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output GeoTIFF path (or a directory with --size)")
    parser.add_argument("--tiles-x", type=int, default=9)
    parser.add_argument("--tiles-y", type=int, default=12)
    parser.add_argument("--width", type=int, default=None, help="crop the mosaic to this many columns")
    parser.add_argument("--height", type=int, default=None, help="crop the mosaic to this many rows")
    parser.add_argument(
        "--size", choices=sorted(SIZES), default=None, help="a named benchmark size; OUT is then a directory"
    )
    args = parser.parse_args(argv)
    if args.size:
        result = build_named(args.size, args.out, rebuild=True)
    else:
        result = build_naip_mosaic(
            args.out, tiles_x=args.tiles_x, tiles_y=args.tiles_y, width=args.width, height=args.height
        )
    print(
        f"{result['path']}: {result['width']} x {result['height']} px, {result['bands']} bands, "
        f"{result['bytes'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
