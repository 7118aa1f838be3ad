"""A legend names the clusters: derived from the LoveDA reference by majority overlap, applied to the map
(colours, GDAL category names, merged class values), carried by the STAC items and the quick-look key."""

from __future__ import annotations

import json
import shutil
import subprocess
from xml.etree import ElementTree

import numpy as np
import pystac
import pystac.validation
import pytest
import rasterio
from conftest import SHARED_DATA
from rasterio.windows import Window as RioWindow
from typer.testing import CliRunner

from cli.main import app
from eoseg.catalog.stac import build_map_item
from eoseg.compute.cluster import ClusterSpec
from eoseg.config import ClustererTrainingOptions, TileOptions
from eoseg.errors import ConfigurationError
from eoseg.mosaic.legend import parse_legend, read_legend

LOVEDA = SHARED_DATA / "loveda"
NAMES = {1: "background", 2: "building", 3: "road", 4: "water", 5: "barren", 6: "forest", 7: "agriculture"}
CROP = RioWindow(0, 0, 256, 256)
SMALL_TRAINING = ClustererTrainingOptions(epochs=1, iterations=3, batch_size=4, patch_size=32, max_patches=16)


def crop(source, target) -> None:
    with rasterio.open(source) as scene:
        profile = dict(
            scene.profile, width=CROP.width, height=CROP.height, transform=scene.window_transform(CROP)
        )
        with rasterio.open(target, "w", **profile) as out:
            out.write(scene.read(window=CROP))


@pytest.fixture(scope="module")
def loveda_map(tmp_path_factory, shared_data, dask_address, prefect_server):
    """A 256 x 256 crop of the LoveDA scene and its reference, segmented once (K = 8)."""
    from flows.segment_flows import segment_scene_flow

    folder = tmp_path_factory.mktemp("loveda")
    crop(LOVEDA / "rural_1.tif", folder / "scene.tif")
    crop(LOVEDA / "rural_1.labels.tif", folder / "reference.tif")
    segment_scene_flow(
        str(folder / "scene.tif"), str(folder / "map.tif"), tile=TileOptions(chunk_size=128),
        training=SMALL_TRAINING, cluster=ClusterSpec(address=dask_address),
    )  # fmt: skip
    return folder


def test_derive_a_legend_from_the_loveda_reference_and_apply_it(tmp_path, loveda_map, dask_address):
    from flows.segment_flows import segment_scene_flow

    names = [f"--class-name={value}={name}" for value, name in NAMES.items()]
    legend_path = tmp_path / "legend.yaml"
    result = CliRunner().invoke(
        app,
        ["legend", str(loveda_map / "map.tif"), str(loveda_map / "reference.tif"), "--out", str(legend_path),
         "--ignore", "0", *names],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    print(result.output)
    legend = read_legend(str(legend_path))
    with (
        rasterio.open(loveda_map / "map.tif") as original,
        rasterio.open(loveda_map / "reference.tif") as ref,
    ):
        clusters, reference = original.read(1), ref.read(1)
    # Each named cluster's class is the reference class it overlaps most.
    for cluster, (name, _) in legend.clusters.items():
        values, counts = np.unique(reference[(clusters == cluster) & (reference != 0)], return_counts=True)
        assert name == NAMES[int(values[counts.argmax()])]
    without_reference = sorted(set(range(8)) - set(np.unique(clusters[reference != 0]).tolist()))
    assert legend.merge and sorted(set(range(8)) - set(legend.clusters)) == without_reference
    in_map = set(np.unique(clusters).tolist()) - {255}
    unreferenced = [c for c in without_reference if c in in_map]
    absent = [c for c in without_reference if c not in in_map]
    assert (f"no reference pixels for clusters {unreferenced}" in result.output) == bool(unreferenced)
    assert (f"clusters {absent} do not occur in the map" in result.output) == bool(absent)

    # Applied by the run: merged class values, colours, category names (in-file tag and GDAL's sidecar).
    out = tmp_path / "named.tif"
    segment_scene_flow(
        str(loveda_map / "scene.tif"), str(out), weights_uri=str(loveda_map / "map.model.pt"),
        tile=TileOptions(chunk_size=128), cluster=ClusterSpec(address=dask_address),
        legend_uri=str(legend_path),
    )  # fmt: skip
    classes = legend.classes(8)
    with rasterio.open(out) as named:
        labels, tags, colormap = named.read(1), named.tags(), named.colormap(1)
    lookup = legend.lookup(8)
    np.testing.assert_array_equal(labels, np.vectorize(lambda v: lookup.get(v, v))(clusters))
    assert json.loads(tags["EOSEG_CLASS_NAMES"]) == {str(v): name for v, name, _ in classes}
    assert all(colormap[value][:3] == colour for value, _, colour in classes)
    # GDAL's category names live in the .aux.xml sidecar GDAL (and so QGIS) reads beside the GeoTIFF.
    sidecar = ElementTree.parse(f"{out}.aux.xml").getroot()
    categories = [c.text or "" for c in sidecar.iter("Category")]
    assert all(categories[value] == name for value, name, _ in classes)
    if shutil.which("gdalinfo"):  # Debian's gdal-bin (.ci/run installs it): what gdalinfo prints
        info = subprocess.run(["gdalinfo", str(out)], capture_output=True, text=True, check=True).stdout
        assert all(f"{value}: {name}" in info for value, name, _ in classes)

    item = build_map_item(
        str(out),
        scene_uri=str(loveda_map / "scene.tif"),
        acquired_tag=None,
        scene_modified=0.0,
        model_uri=None,
    )
    # pystac validates against the core Item schema it ships; the extension schemas are on the network.
    core = item.to_dict(include_self_link=False)
    core["stac_extensions"] = []
    pystac.validation.validate_dict(core)
    stac_classes = item.assets["map"].extra_fields["classification:classes"]
    assert [c["title"] for c in stac_classes if c["value"] != 255] == [name for _, name, _ in classes]


def test_bad_legends_are_refused_with_what_to_do():
    with pytest.raises(ConfigurationError, match="needs a `clusters:` mapping"):
        parse_legend("- 1\n- 2\n", where="l.yaml")
    with pytest.raises(ConfigurationError, match=r"colour 'green' is not #RRGGBB"):
        parse_legend("clusters:\n  0: {name: forest, colour: green}\n", where="l.yaml")
    with pytest.raises(ConfigurationError, match="cluster 3 has no `name`"):
        parse_legend("clusters:\n  3: {colour: '#00ff00'}\n", where="l.yaml")
    merged = parse_legend(
        "merge: true\nclusters:\n  0: water\n  1: {name: trees, colour: '#00aa00'}\n  2: trees\n", where="l"
    )
    assert merged.lookup(4) == {0: 0, 1: 1, 2: 1, 3: 2}
    assert [name for _, name, _ in merged.classes(4)] == ["water", "trees", "cluster_3"]


def test_legend_tells_clusters_without_reference_from_clusters_absent_from_the_map(tmp_path):
    """A 4-cluster map where cluster 1 lies only under unlabelled reference pixels and clusters 2 and 3
    do not occur at all; bad inputs get the one `error: FILE: what; what to do` line."""
    from conftest import write_geotiff

    clusters = np.zeros((32, 32), dtype=np.uint8)
    clusters[:, 16:] = 1
    reference = np.zeros((32, 32), dtype=np.uint8)
    reference[:, :16] = 6  # forest under cluster 0; cluster 1 only where the reference is 0 (ignored)
    label_map = write_geotiff(tmp_path / "map.tif", clusters, nodata=255)
    with rasterio.open(label_map, "r+") as dataset:
        dataset.update_tags(EOSEG_NUM_CLASSES="4")
    ref = write_geotiff(tmp_path / "reference.tif", reference)
    out = tmp_path / "legend.yaml"
    args = [
        "legend",
        str(label_map),
        str(ref),
        "--out",
        str(out),
        "--ignore",
        "0",
        "--class-name",
        "6=forest",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cluster 0 -> forest" in result.output
    assert "no reference pixels for clusters [1] (named cluster_<id>)" in result.output
    assert "clusters [2, 3] do not occur in the map (named cluster_<id>)" in result.output
    assert "clusters [2, 3] do not occur in the map" in out.read_text()

    missing = tmp_path / "missing.tif"
    refused = CliRunner().invoke(app, ["legend", str(missing), str(ref), "--out", str(tmp_path / "x.yaml")])
    assert refused.exit_code == 2
    assert refused.output.strip() == f"error: {missing}: prediction raster not found; check the path"
    small = write_geotiff(tmp_path / "small.tif", clusters[:8, :8])
    refused = CliRunner().invoke(app, ["legend", str(small), str(ref), "--out", str(tmp_path / "x.yaml")])
    assert refused.exit_code == 2
    assert refused.output.startswith(
        f"error: {small}: the map is 8 x 8 px (width x height) but the reference"
    )
    assert not (tmp_path / "x.yaml").exists()
