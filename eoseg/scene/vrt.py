"""GDAL VRTs that place files side by side on one grid (what ``gdalbuildvrt`` writes for tiles on a grid).

QGIS and GDAL open such a VRT as one raster: the input tiles of a scene (for the quick-look), or the
per-tile maps of a city (one layer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from xml.sax.saxutils import escape

from eoseg.geometry import GeoBox, Window, crs_wkt_of, transform_of
from eoseg.io import storage


def _source_name(uri: str, vrt_folder: str | None) -> tuple[str, int]:
    """``(SourceFilename, relativeToVRT)``: relative to the VRT's folder when it is given, else absolute."""
    if vrt_folder is not None and not storage.is_s3(uri):
        return os.path.relpath(uri, vrt_folder), 1
    return storage.gdal_path(uri), 0


def tiles_vrt_xml(
    geobox: GeoBox,
    tiles: Sequence[tuple[str, Window]],
    *,
    band_count: int,
    dtype: str,
    nodata: float | int | None,
    vrt_folder: str | None = None,
) -> str:
    """The VRT XML of ``tiles`` (file URI, window on ``geobox``) mosaicked on ``geobox``.

    Args:
        geobox: the grid of the whole mosaic (its GeoTransform and CRS go into the VRT).
        tiles: each file with its window; the first of overlapping files wins (it is drawn last).
        band_count: bands of every file (all are used, in order).
        dtype: the NumPy name of the files' pixel type.
        nodata: the files' nodata (also the value of gaps), or ``None``.
        vrt_folder: local folder the VRT will be written to; local files are then named relative to it.
    """
    from rasterio.dtypes import dtype_rev, typename_fwd

    data_type = typename_fwd[dtype_rev[dtype]]
    a, b, c, d, e, f = transform_of(geobox)
    header = [f'<VRTDataset rasterXSize="{geobox.width}" rasterYSize="{geobox.height}">']
    wkt = crs_wkt_of(geobox)
    if wkt:
        header.append(f"<SRS>{escape(wkt)}</SRS>")
    header.append(f"<GeoTransform>{c!r}, {a!r}, {b!r}, {f!r}, {d!r}, {e!r}</GeoTransform>")
    bands = []
    for band in range(1, band_count + 1):
        sources = []
        for uri, window in reversed(tiles):  # GDAL draws in order: the last drawn wins
            name, relative = _source_name(uri, vrt_folder)
            size = f'xSize="{window.width}" ySize="{window.height}"'
            sources.append(
                f'<SimpleSource><SourceFilename relativeToVRT="{relative}">{escape(name)}</SourceFilename>'
                f'<SourceBand>{band}</SourceBand><SrcRect xOff="0" yOff="0" {size}/>'
                f'<DstRect xOff="{window.col_off}" yOff="{window.row_off}" {size}/></SimpleSource>'
            )
        nodata_xml = "" if nodata is None else f"<NoDataValue>{nodata}</NoDataValue>"
        opening = f'<VRTRasterBand dataType="{data_type}" band="{band}">{nodata_xml}'
        bands.append(f"{opening}{''.join(sources)}</VRTRasterBand>")
    return "\n".join([*header, *bands, "</VRTDataset>"])


def scene_raster_path(scene: str | Sequence[str], folder: str) -> str:
    """A path GDAL opens as the whole scene: the file itself, or a VRT of its tiles written in ``folder``.

    Raises:
        as :func:`eoseg.scene.sources.open_scene_sources`.
    """
    from eoseg.scene.sources import list_scene_files, open_scene_sources

    description, files = list_scene_files(scene)
    if files == [description]:  # one file: GDAL opens it as it is (no inspection, GCP scenes included)
        return storage.gdal_path(description)
    sources = open_scene_sources(scene, allow_ungeoreferenced=True)
    info = sources.scene
    path = os.path.join(folder, "scene.vrt")
    xml = tiles_vrt_xml(
        info.geobox,
        [(tile.uri, tile.window) for tile in sources.tiles],
        band_count=info.band_count,
        dtype=info.dtype,
        nodata=info.nodata,
    )
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(xml)
    return path
