"""A legend: names and colours for an unsupervised model's clusters, applied to its maps.

A legend is a YAML file::

    merge: false            # true: clusters with the same name become one class (value = class index)
    clusters:
      0: {name: water, colour: "#1f78b4"}
      1: {name: forest, colour: "#33a02c"}
      5: {name: forest}     # no colour: the first colour given for the name, else the class palette

Without ``merge`` each cluster keeps its value and gets a name and a colour; with it, the map holds
class values ``0..C-1`` (classes in the order their name first appears) instead of cluster ids.
Clusters the legend does not name keep ``cluster_<id>`` (their own value, or a class of their own when
merging).

:func:`apply_legend` rewrites a label COG through a GDAL VRT (a look-up table for the merge, the colour
table, the category names), so the map is streamed, never held whole; the category names are also a
GDAL ``.aux.xml`` sidecar (GeoTIFF keeps them there; ``gdalinfo`` and QGIS read it) and, in the file
itself, the ``EOSEG_CLASS_NAMES`` tag (JSON ``{value: name}``, read by the STAC items and the quick-look).

:func:`derive_legend` names clusters from a reference by majority overlap (Saha et al. 2021, section 4:
:func:`eoseg.evaluate.mapping.map_clusters`).
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from eoseg.errors import ConfigurationError
from eoseg.mosaic.colors import class_color

RGB = tuple[int, int, int]
CLASS_NAMES_TAG = "EOSEG_CLASS_NAMES"
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class Legend:
    """Cluster id -> (name, colour or ``None``), and whether clusters of one name merge into one class."""

    clusters: Mapping[int, tuple[str, RGB | None]]
    merge: bool = False
    unmatched: tuple[int, ...] = field(default=(), compare=False)  # derived: clusters without reference

    def classes(self, num_classes: int) -> list[tuple[int, str, RGB]]:
        """``(value, name, colour)`` of every class of the styled map of a ``num_classes``-cluster model."""
        named = {c: self.clusters.get(c, (f"cluster_{c}", None)) for c in range(num_classes)}
        first_colour: dict[str, RGB] = {}
        for name, colour in named.values():
            if colour is not None:
                first_colour.setdefault(name, colour)
        if not self.merge:
            return [(c, name, first_colour.get(name) or class_color(c)[:3]) for c, (name, _) in named.items()]
        names = list(dict.fromkeys(name for name, _ in named.values()))
        return [(i, name, first_colour.get(name) or class_color(i)[:3]) for i, name in enumerate(names)]

    def lookup(self, num_classes: int) -> dict[int, int]:
        """``{cluster: value in the styled map}`` (the identity unless merging)."""
        values = {name: value for value, name, _ in self.classes(num_classes)}
        if not self.merge:
            return {c: c for c in range(num_classes)}
        return {c: values[self.clusters.get(c, (f"cluster_{c}", None))[0]] for c in range(num_classes)}


def _colour(text: object, where: str) -> RGB:
    match = _HEX.match(str(text).strip())
    if not match:
        raise ConfigurationError(f'{where}: colour {text!r} is not #RRGGBB; write it as e.g. "#33a02c"')
    value = match.group(1)
    return (int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16))


def parse_legend(text: str, *, where: str) -> Legend:
    """The legend in YAML ``text`` (``where`` names it in errors).

    Raises:
        ConfigurationError: not YAML, no ``clusters`` mapping, a cluster id that is not 0..254, an entry
            without ``name``, or a colour that is not ``#RRGGBB``.
    """
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigurationError(
            f"{where}: not valid YAML ({error}); see docs/interfaces.md, Legend"
        ) from error
    if not isinstance(document, dict) or not isinstance(document.get("clusters"), dict):
        raise ConfigurationError(
            f"{where}: a legend needs a `clusters:` mapping of cluster id -> name, colour"
        )
    clusters: dict[int, tuple[str, RGB | None]] = {}
    for key, entry in document["clusters"].items():
        if not str(key).isdigit() or not 0 <= int(key) < 255:
            raise ConfigurationError(f"{where}: cluster id {key!r} is not a number from 0 to 254")
        entry = {"name": entry} if isinstance(entry, str) else entry
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ConfigurationError(f"{where}: cluster {key} has no `name`")
        colour = _colour(entry["colour"], where) if entry.get("colour") else None
        clusters[int(key)] = (str(entry["name"]), colour)
    return Legend(clusters, merge=bool(document.get("merge", False)))


def read_legend(uri: str) -> Legend:
    """The legend file at ``uri`` (local or ``s3://``); errors as :func:`parse_legend`."""
    from eoseg.errors import SceneNotFoundError
    from eoseg.io import storage

    if not storage.exists(uri):
        raise SceneNotFoundError(f"{uri}: legend not found; write one (or derive it with `eoseg legend`)")
    if storage.is_s3(uri):
        text = storage.s3_filesystem().cat_file(uri).decode("utf-8")
    else:
        with open(uri, encoding="utf-8") as handle:
            text = handle.read()
    return parse_legend(text, where=uri)


def legend_yaml(legend: Legend, *, comment: str = "") -> str:
    """The legend as YAML (what :func:`read_legend` reads back)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"merge: {str(legend.merge).lower()}", "clusters:"]
    for cluster, (name, colour) in sorted(legend.clusters.items()):
        hex_colour = "" if colour is None else ', colour: "#{:02x}{:02x}{:02x}"'.format(*colour)
        lines.append(f"  {cluster}: {{name: {json.dumps(name)}{hex_colour}}}")
    return "\n".join(lines) + "\n"


def _styled_vrt(
    source: str, legend: Legend, *, num_classes: int, nodata: int, width: int, height: int
) -> str:
    """A VRT of band 1 of ``source`` with the legend's look-up table, colour table and category names."""
    classes = legend.classes(num_classes)
    lookup = legend.lookup(num_classes)
    lut = ",".join(f"{v}:{lookup.get(v, nodata if v == nodata else v)}" for v in range(256))
    colours = {value: colour for value, _, colour in classes}
    names = {value: name for value, name, _ in classes}
    table = "".join(
        '<Entry c1="{}" c2="{}" c3="{}" c4="{}"/>'.format(
            *colours.get(v, (0, 0, 0)), 255 if v in colours else 0
        )
        for v in range(256)
    )
    categories = "".join(f"<Category>{escape(names.get(v, ''))}</Category>" for v in range(max(names) + 1))
    size = f'xSize="{width}" ySize="{height}"'
    return (
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><VRTRasterBand dataType="Byte" band="1">'
        f"<NoDataValue>{nodata}</NoDataValue><ColorInterp>Palette</ColorInterp><ColorTable>{table}</ColorTable>"
        f'<CategoryNames>{categories}</CategoryNames><ComplexSource><SourceFilename relativeToVRT="0">'
        f'{escape(source)}</SourceFilename><SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" {size}/>'
        f'<DstRect xOff="0" yOff="0" {size}/><LUT>{lut}</LUT></ComplexSource></VRTRasterBand></VRTDataset>'
    )


def apply_legend(map_uri: str, legend: Legend) -> dict[int, str]:
    """Rewrite the label COG at ``map_uri`` with the legend: values (when merging), colours, class names.

    Returns:
        ``{value: name}`` of the styled map's classes.

    Raises:
        ConfigurationError: the map is not an eoseg label map (no ``EOSEG_NUM_CLASSES`` tag), it already
            has a legend, or the legend names a cluster the model does not have.
    """
    import tempfile

    import rasterio
    import rasterio.shutil
    from rasterio.errors import NotGeoreferencedWarning

    from eoseg.io import publish, storage

    with storage.gdal_env(map_uri), rasterio.open(storage.gdal_path(map_uri)) as labels:
        tags, width, height = labels.tags(), labels.width, labels.height
        crs, transform, nodata = (
            labels.crs,
            labels.transform,
            int(labels.nodata if labels.nodata is not None else 255),
        )
    if "EOSEG_NUM_CLASSES" not in tags:
        raise ConfigurationError(
            f"{map_uri}: not an eoseg label map (no EOSEG_NUM_CLASSES tag); a legend names clusters"
        )
    if CLASS_NAMES_TAG in tags:
        raise ConfigurationError(
            f"{map_uri}: a legend was already applied to this map; apply it to the map as predicted (run the "
            "mosaic again with --overwrite)"
        )
    num_classes = int(tags["EOSEG_NUM_CLASSES"])
    extra = sorted(c for c in legend.clusters if c >= num_classes)
    if extra:
        raise ConfigurationError(
            f"{map_uri}: the legend names clusters {extra}, the model has 0..{num_classes - 1}"
        )
    classes = {value: name for value, name, _ in legend.classes(num_classes)}
    tags.update({CLASS_NAMES_TAG: json.dumps(classes), "EOSEG_NUM_CLASSES": str(len(classes))})
    with tempfile.TemporaryDirectory(prefix="eoseg-legend-") as scratch, storage.gdal_env(map_uri):
        local = storage.fetch_to_local(map_uri, scratch)
        vrt = os.path.join(scratch, "styled.vrt")
        with open(vrt, "w", encoding="utf-8") as handle:
            handle.write(
                _styled_vrt(local, legend, num_classes=num_classes, nodata=nodata, width=width, height=height)
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # opened before it is placed: next line
            with rasterio.open(vrt, "r+") as styled:
                styled.crs, styled.transform = crs, transform
                styled.update_tags(**tags)
        out = os.path.join(scratch, "styled.tif")
        rasterio.shutil.copy(
            vrt,
            out,
            driver="COG",
            BLOCKSIZE=512,
            COMPRESS="DEFLATE",
            PREDICTOR="YES",
            OVERVIEW_RESAMPLING="NEAREST",
        )
        publish.publish_file(out, map_uri, overwrite=True)
        if os.path.exists(out + publish.AUX_SUFFIX):  # the category names GDAL keeps beside a GeoTIFF
            publish.publish_file(out + publish.AUX_SUFFIX, map_uri + publish.AUX_SUFFIX, overwrite=True)
    return classes


def derive_legend(
    map_path: str,
    reference_path: str,
    *,
    class_names: Mapping[int, str] | None = None,
    ignore_values: Sequence[int] = (),
) -> Legend:
    """Name every cluster of a label map after the reference class it overlaps most (majority overlap).

    Args:
        map_path: the label map (a COG from ``eoseg run``/``mosaic``), on the reference's grid.
        reference_path: a raster of class values on the same grid (rasterise GeoJSON first).
        class_names: ``{class value: name}``; default ``class_<value>``.
        ignore_values: reference values that are no class (e.g. 0 = no data).

    Returns:
        A merging legend (clusters of one class become that class) with ``unmatched``: the clusters
        that had no evaluated reference pixel (they keep ``cluster_<id>``).

    Raises:
        as :func:`eoseg.evaluate.scores.confusion_matrix_from_rasters`.
    """
    import rasterio

    from eoseg.evaluate.mapping import map_clusters
    from eoseg.evaluate.scores import confusion_matrix_from_rasters

    counts = confusion_matrix_from_rasters(map_path, reference_path, ignore_values=ignore_values)
    mapping = map_clusters(counts, method="majority")
    with rasterio.open(map_path) as labels:
        num_classes = int(labels.tags().get("EOSEG_NUM_CLASSES", max(counts.prediction_labels) + 1))
    names = dict(class_names or {})
    clusters: dict[int, tuple[str, RGB | None]] = {}
    for cluster, value in sorted(mapping.items()):
        clusters[cluster] = (names.get(value, f"class_{value}"), class_color(value)[:3])
    unmatched = tuple(c for c in range(num_classes) if c not in mapping)
    return Legend(clusters, merge=True, unmatched=unmatched)


def rasterize_classes(vector_path: str, like: str, out_path: str, *, key: str = "class") -> dict[int, str]:
    """Burn labelled GeoJSON polygons onto the grid of ``like``: value i+1 for the i-th class name, 0 outside.

    A few labelled areas are enough to name clusters: each feature's ``key`` property is its class.

    Returns:
        ``{value: class name}``.

    Raises:
        CorruptSceneError: not a GeoJSON FeatureCollection, or a feature without the ``key`` property.
        as :func:`eoseg.evaluate.reference.rasterize_reference` otherwise.
    """
    import tempfile

    import numpy as np
    import rasterio

    from eoseg.errors import CorruptSceneError
    from eoseg.evaluate.reference import rasterize_reference

    with open(vector_path, encoding="utf-8") as handle:
        collection = json.load(handle)
    features = collection.get("features") if isinstance(collection, dict) else None
    if not isinstance(features, list) or any(key not in (f.get("properties") or {}) for f in features):
        raise CorruptSceneError(
            f"{vector_path}: a FeatureCollection whose features all have a `{key}` property is needed"
        )
    names = sorted({str(f["properties"][key]) for f in features})
    classes = np.zeros(0)
    with tempfile.TemporaryDirectory(prefix="eoseg-classes-") as scratch:
        for value, name in enumerate(names, start=1):
            subset = dict(collection, features=[f for f in features if str(f["properties"][key]) == name])
            part = os.path.join(scratch, f"{value}.geojson")
            with open(part, "w", encoding="utf-8") as handle:
                json.dump(subset, handle)
            with rasterio.open(
                rasterize_reference(part, like, os.path.join(scratch, f"{value}.tif"))
            ) as burnt:
                inside = burnt.read(1) > 0
                profile = burnt.profile
            classes = np.where(inside, value, classes if classes.size else 0).astype(np.uint8)
        with rasterio.open(out_path, "w", **profile) as out:
            out.write(classes, 1)
    return dict(enumerate(names, start=1))
