"""A STAC catalogue of the maps: one Item per COG, gathered in a ``catalog.json`` at the output prefix.

Each item carries the map's footprint (the WGS84 outline of the COG's GeoBox, rotated grids included),
its projection (``proj:code``, ``proj:shape``, ``proj:transform``, ``proj:bbox``; ``proj:wkt2`` when the
CRS has no EPSG code), a datetime taken from the input scene, the classes (classification extension: values
0..K-1 named ``cluster_0``... and titled "cluster 0"...), and as assets the map, its quick-look
(``thumbnail``/``overview``), the input scene, the model checkpoint and the scores when there are
any; ``derived_from`` links point at the scene and the checkpoint.

The datetime comes from, in this order (``eoseg:datetime_source`` says which was used):

1. ``tiff-tag``: the scene's ``TIFFTAG_DATETIME`` (or ``ACQUISITIONDATE``) tag, read as UTC;
2. ``file-name``: a ``YYYYMMDD`` date in the scene's file name (NAIP: ``m_4709963_se_14_1_20090818.tif``);
3. ``file-mtime``: the scene file's modification time (an upload time, not an acquisition time).

Catalogue files are read and written through :class:`StorageStacIO`, so ``s3://`` prefixes go
through s3fs with the same endpoint and credentials as every other eoseg output.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import pystac
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.stac_io import DefaultStacIO
from pystac.utils import make_relative_href

from eoseg import __version__
from eoseg.geometry import footprint_wgs84, geobox_of, transform_of
from eoseg.io import publish, storage

ITEM_SUFFIX = ".item.json"
CATALOG_FILE = "catalog.json"
CATALOG_ID = "eoseg-maps"
NODATA_LABEL = 255
PYTORCH_MEDIA_TYPE = "application/octet-stream; application=pytorch"
_QUICKLOOK_TITLE = "Quick-look: scene and map side by side"
_FILE_NAME_DATE = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)")
_TAG_FORMATS = (
    "%Y:%m:%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y:%m:%d",
    "%Y-%m-%d",
    "%Y%m%d",
)


def item_uri_for_map(map_uri: str) -> str:
    """``MAP.item.json`` beside ``MAP.tif``."""
    map_uri = storage.normalise_uri(map_uri)
    stem = re.sub(r"\.tiff?$", "", map_uri, flags=re.IGNORECASE)
    return stem + ITEM_SUFFIX


def catalog_uri_for_prefix(prefix: str) -> str:
    """``PREFIX/catalog.json``."""
    prefix = storage.normalise_uri(prefix)
    return f"{prefix}/{CATALOG_FILE}"


class StorageStacIO(DefaultStacIO):
    """pystac I/O through eoseg's storage: reads through s3fs for ``s3://``, writes published atomically."""

    def read_text(self, source: Any, *args: Any, **kwargs: Any) -> str:
        href = str(source)
        if storage.is_s3(href):
            data: bytes = storage.s3_filesystem().cat_file(href)
            return data.decode("utf-8")
        return super().read_text(source, *args, **kwargs)

    def write_text(self, dest: Any, txt: str, *args: Any, **kwargs: Any) -> None:
        publish.write_text(str(dest), txt, overwrite=True)


def _parse_tag_datetime(text: str) -> dt.datetime | None:
    text = text.strip()
    for fmt in _TAG_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def date_from_file_name(uri: str) -> dt.datetime | None:
    """The last valid ``YYYYMMDD`` in the file name (midnight UTC), if any."""
    for match in reversed(list(_FILE_NAME_DATE.finditer(PurePosixPath(str(uri)).name))):
        try:
            return dt.datetime(int(match[1]), int(match[2]), int(match[3]), tzinfo=dt.UTC)
        except ValueError:  # e.g. 20090231
            continue
    return None


def acquisition_datetime(
    scene_uri: str, *, acquired_tag: str | None, modified: float | None
) -> tuple[dt.datetime, str]:
    """The scene's datetime and where it came from: ``tiff-tag``, ``file-name`` or ``file-mtime``."""
    if acquired_tag:
        parsed = _parse_tag_datetime(acquired_tag)
        if parsed is not None:
            return parsed, "tiff-tag"
    from_name = date_from_file_name(scene_uri)
    if from_name is not None:
        return from_name, "file-name"
    stamp = modified if modified is not None else storage.modified_time(scene_uri)
    return dt.datetime.fromtimestamp(stamp, tz=dt.UTC), "file-mtime"


def _read_map(map_uri: str) -> dict[str, Any]:
    import rasterio

    with storage.gdal_env(map_uri), rasterio.open(storage.gdal_path(map_uri)) as dataset:
        try:
            colormap = dataset.colormap(1)
        except ValueError:
            colormap = {}
        return {
            "geobox": geobox_of(dataset),
            "crs": dataset.crs,
            "tags": dataset.tags(),
            "colormap": colormap,
            "nodata": dataset.nodata,
        }


def _classes(
    num_classes: int | None,
    colormap: Mapping[int, tuple[int, ...]],
    nodata: float | None,
    names: Mapping[str, str] | None = None,
) -> list[Classification]:
    """The map's classes: ``cluster_<value>``, or the names of the legend applied to it (``names``)."""
    classes: list[Classification] = []
    for value in range(num_classes or 0):
        colour = colormap.get(value)
        hint = "{:02X}{:02X}{:02X}".format(*colour[:3]) if colour else None
        name = (names or {}).get(str(value))
        classes.append(
            Classification.create(
                value=value,
                name=re.sub(r"[^A-Za-z0-9_-]+", "_", name) if name else f"cluster_{value}",
                title=name or f"cluster {value}",
                description=f"{name} (legend)" if name else f"cluster {value} of the unsupervised model",
                color_hint=hint,
            )
        )
    if nodata is not None and int(nodata) == NODATA_LABEL:
        classes.append(Classification.create(value=NODATA_LABEL, name="nodata", title="no data", nodata=True))
    return classes


def build_map_item(
    map_uri: str,
    *,
    scene_uri: str,
    acquired_tag: str | None,
    scene_modified: float | None,
    model_uri: str | None,
    quicklook_uri: str | None = None,
    scores_uri: str | None = None,
    properties: dict[str, Any] | None = None,
) -> pystac.Item:
    """A STAC Item describing the COG at ``map_uri`` (read for its grid, CRS, classes and tags).

    Args:
        map_uri: the label map (COG).
        scene_uri: the input scene it was made from.
        acquired_tag: the scene's TIFFTAG_DATETIME/ACQUISITIONDATE value, if any.
        scene_modified: the scene's modification time (POSIX seconds), the last datetime fallback.
        model_uri: the checkpoint that produced the map.
        quicklook_uri: the quick-look PNG (asset ``thumbnail``).
        scores_uri: the scores JSON, when the map was evaluated against a reference.
        properties: extra item properties (e.g. pixels, seconds).
    """
    map_uri = storage.normalise_uri(map_uri)
    raster = _read_map(map_uri)
    tags = raster["tags"]
    footprint = footprint_wgs84(raster["geobox"])
    geometry, bbox = footprint if footprint is not None else (None, None)
    when, source = acquisition_datetime(scene_uri, acquired_tag=acquired_tag, modified=scene_modified)
    model_tag = json.loads(tags["EOSEG_MODEL"]) if tags.get("EOSEG_MODEL") else {}
    num_classes = int(tags["EOSEG_NUM_CLASSES"]) if tags.get("EOSEG_NUM_CLASSES") else None
    item_properties = {
        "eoseg:datetime_source": source,
        "eoseg:version": __version__,
        "eoseg:source": scene_uri,
        "eoseg:model_family": model_tag.get("family"),
        "eoseg:num_classes": num_classes,
        "created": tags.get("EOSEG_CREATED") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **(properties or {}),
    }
    item = pystac.Item(
        id=PurePosixPath(re.sub(r"\.tiff?$", "", map_uri, flags=re.IGNORECASE)).name,
        geometry=geometry,
        bbox=bbox,
        datetime=when,
        properties=item_properties,
    )
    projection = ProjectionExtension.ext(item, add_if_missing=True)
    crs = raster["crs"]
    if crs is not None:
        epsg = crs.to_epsg()
        if epsg:
            projection.code = f"EPSG:{epsg}"
        else:
            projection.code = None
            projection.wkt2 = crs.to_wkt()
        extent = raster["geobox"].extent.boundingbox  # of the grid's corners: right for rotated grids too
        projection.bbox = [extent.left, extent.bottom, extent.right, extent.top]
    else:
        projection.code = None
    projection.shape = list(raster["geobox"].shape.yx)
    projection.transform = list(transform_of(raster["geobox"]))

    map_asset = pystac.Asset(
        href=map_uri, media_type=pystac.MediaType.COG, roles=["data"], title="Land-cover map (cluster labels)"
    )
    item.add_asset("map", map_asset)
    names = json.loads(tags["EOSEG_CLASS_NAMES"]) if tags.get("EOSEG_CLASS_NAMES") else None
    classes = _classes(num_classes, raster["colormap"], raster["nodata"], names)
    if classes:
        ClassificationExtension.ext(map_asset, add_if_missing=True).classes = classes
    checkpoint = model_uri or model_tag.get("checkpoint")
    family = model_tag.get("family", "unknown")
    # (key, href, media type, roles, title) of the assets beside the map; those without href are left out.
    assets = [
        ("thumbnail", quicklook_uri, pystac.MediaType.PNG, ["thumbnail", "overview"], _QUICKLOOK_TITLE),
        ("source", scene_uri, pystac.MediaType.GEOTIFF, ["source"], "Input scene"),
        ("model", checkpoint, PYTORCH_MEDIA_TYPE, ["model"], f"Model checkpoint ({family})"),
        ("scores", scores_uri, pystac.MediaType.JSON, ["metadata"], "Scores against the reference"),
    ]
    for key, href, media_type, roles, title in assets:
        if href:
            item.add_asset(key, pystac.Asset(href=href, media_type=media_type, roles=roles, title=title))
    derived_from = [
        (scene_uri, pystac.MediaType.GEOTIFF, "Input scene"),
        (checkpoint, PYTORCH_MEDIA_TYPE, "Model checkpoint"),
    ]
    for target, media_type, title in derived_from:
        if target:
            item.add_link(pystac.Link(rel="derived_from", target=target, media_type=media_type, title=title))
    return item


def _open_catalog(catalog_uri: str, stac_io: pystac.StacIO) -> pystac.Catalog:
    """The catalogue at ``catalog_uri``, or a new empty one (not yet written) when there is none."""
    if storage.exists(catalog_uri):
        return pystac.Catalog.from_dict(stac_io.read_json(catalog_uri), href=catalog_uri, migrate=True)
    prefix = catalog_uri.rsplit("/", 1)[0]
    return pystac.Catalog(
        id=CATALOG_ID,
        title="eoseg land-cover maps",
        description=f"Unsupervised land-cover maps produced by eoseg under {prefix}.",
        href=catalog_uri,
    )


def write_item(
    item: pystac.Item, item_uri: str, catalog_uri: str, *, stac_io: pystac.StacIO | None = None
) -> str:
    """Write ``item`` to ``item_uri`` with root/parent links to ``catalog_uri`` (relative when possible)."""
    stac_io = stac_io or StorageStacIO()
    relative = make_relative_href(catalog_uri, item_uri)
    item.clear_links(pystac.RelType.ROOT)
    item.clear_links(pystac.RelType.PARENT)
    item.add_link(pystac.Link(rel=pystac.RelType.ROOT, target=relative, media_type=pystac.MediaType.JSON))
    item.add_link(pystac.Link(rel=pystac.RelType.PARENT, target=relative, media_type=pystac.MediaType.JSON))
    stac_io.save_json(item_uri, item.to_dict(include_self_link=False, transform_hrefs=False))
    return item_uri


def add_items_to_catalog(
    catalog_uri: str, item_uris: list[str], *, stac_io: pystac.StacIO | None = None
) -> dict[str, Any]:
    """Add ``item`` links for ``item_uris`` to the catalogue (created if missing); returns the catalogue dict.

    The catalogue is a :class:`pystac.Catalog` (STAC 1.x Catalog spec) whose links are relative, so the
    folder can be copied or served anywhere. Existing links are kept; an item already listed is not listed
    twice. Concurrent runs writing the same catalogue could lose each other's links: the reprocessing
    deployment runs one at a time.
    """
    stac_io = stac_io or StorageStacIO()
    catalog_uri = storage.normalise_uri(catalog_uri)
    catalog = _open_catalog(catalog_uri, stac_io)
    listed = {link.href for link in catalog.get_links(pystac.RelType.ITEM)}
    for item_uri in item_uris:
        href = make_relative_href(item_uri, catalog_uri)
        if href not in listed:
            title = PurePosixPath(item_uri).name[: -len(ITEM_SUFFIX)]
            catalog.add_link(
                pystac.Link(pystac.RelType.ITEM, href, media_type=pystac.MediaType.JSON, title=title)
            )
            listed.add(href)
    catalog.clear_links(pystac.RelType.ROOT)
    catalog.add_link(pystac.Link(pystac.RelType.ROOT, f"./{CATALOG_FILE}", media_type=pystac.MediaType.JSON))
    document = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    stac_io.save_json(catalog_uri, document)
    return document


def catalogue_map(
    map_uri: str,
    *,
    scene_uri: str,
    model_uri: str | None,
    quicklook_uri: str | None,
    scores_uri: str | None = None,
    catalog_uri: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Describe one map as a STAC Item beside it and list it in the catalogue of its folder.

    Returns:
        ``item``, ``catalog``, ``datetime`` (ISO), ``datetime_source`` and the map's ``shape`` (rows, cols).
    """
    from eoseg.scene.inspect import inspect_scene

    map_uri = storage.normalise_uri(map_uri)
    scene = inspect_scene(scene_uri, allow_ungeoreferenced=True, probe_pixels=False)
    catalog_uri = catalog_uri or f"{map_uri.rsplit('/', 1)[0]}/{CATALOG_FILE}"
    item = build_map_item(
        map_uri,
        scene_uri=scene.uri,
        acquired_tag=scene.acquired,
        scene_modified=storage.modified_time(scene.uri),
        model_uri=storage.normalise_uri(model_uri) if model_uri else None,  # not relative to the cwd
        quicklook_uri=quicklook_uri,
        scores_uri=scores_uri,
        properties=properties,
    )
    item_uri = write_item(item, item_uri_for_map(map_uri), catalog_uri)
    add_items_to_catalog(catalog_uri, [item_uri])
    return {
        "item": item_uri,
        "catalog": catalog_uri,
        "datetime": item.datetime.isoformat() if item.datetime else None,
        "datetime_source": item.properties["eoseg:datetime_source"],
        "shape": item.properties["proj:shape"],
    }
