"""What the evaluation report says: collapsed mappings, class names, support; the k-means baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import write_geotiff
from PIL import Image
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

from cli.main import app
from eoseg.errors import ConfigurationError
from eoseg.evaluate.baseline import kmeans_label_map, kmeans_labels
from eoseg.evaluate.class_names import LOVEDA_CLASS_NAMES, reference_class_names
from eoseg.evaluate.compare import comparison_text
from eoseg.evaluate.scores import evaluate_label_map
from eoseg.mosaic.colors import NODATA_LABEL
from eoseg.mosaic.quicklook import write_quicklook

runner = CliRunner()

# Reference: class 7 (agriculture) on 3 of 4 rows, class 4 (water) on the last. Every one of the three
# clusters overlaps agriculture most, so majority mapping names everything agriculture.
REFERENCE = np.array([[7, 7, 7, 7], [7, 7, 7, 7], [7, 7, 7, 7], [4, 4, 4, 4]], dtype=np.uint8)
CLUSTERS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [0, 1, 2, 2]], dtype=np.uint8)


@pytest.fixture()
def collapsing_pair(tmp_path: Path) -> tuple[str, str]:
    return (
        str(write_geotiff(tmp_path / "clusters.tif", CLUSTERS)),
        str(write_geotiff(tmp_path / "reference.tif", REFERENCE)),
    )


def test_collapsed_majority_mapping_is_reported_in_text_and_json(collapsing_pair: tuple[str, str]) -> None:
    majority = evaluate_label_map(*collapsing_pair, method="majority").with_class_names(LOVEDA_CLASS_NAMES)
    hungarian = evaluate_label_map(*collapsing_pair, method="hungarian")

    assert majority.collapsed and majority.classes_predicted == (7,)
    assert majority.kappa == pytest.approx(0.0)
    document = json.loads(json.dumps(majority.to_dict()))
    assert document["collapsed"] is True
    assert document["classes_predicted"] == [7]
    assert "every cluster maps to class 7 agriculture" in document["warning"]
    assert "WARNING: every cluster maps to class 7 agriculture" in majority.to_text()
    # Per-class rows carry names and support (reference pixels of the class).
    assert document["per_class"]["4"] == {**document["per_class"]["4"], "name": "water", "support": 4}
    assert any(
        line.split()[:2] == ["4", "water"] and line.endswith("4") for line in majority.to_text().splitlines()
    )

    assert not hungarian.collapsed
    assert hungarian.to_dict()["warning"] is None
    assert "WARNING" not in hungarian.to_text()


def test_a_single_class_reference_is_not_a_collapse(tmp_path: Path) -> None:
    reference = write_geotiff(tmp_path / "reference.tif", np.full((4, 4), 7, np.uint8))
    report = evaluate_label_map(write_geotiff(tmp_path / "clusters.tif", CLUSTERS), reference)
    assert report.classes_predicted == (7,) and not report.collapsed


def test_evaluate_command_names_classes_and_flags_the_collapse(collapsing_pair: tuple[str, str]) -> None:
    result = runner.invoke(app, ["evaluate", *collapsing_pair, "--class-names", "loveda", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["collapsed"] is True
    assert document["per_class"]["7"]["name"] == "agriculture"

    text = runner.invoke(app, ["evaluate", *collapsing_pair, "--class-names", "loveda"]).output
    assert "WARNING: every cluster maps to class 7 agriculture" in text


def test_class_names_come_from_a_builtin_table_a_sidecar_or_a_file(tmp_path: Path) -> None:
    reference = tmp_path / "reference.tif"
    assert reference_class_names(reference) == {}
    assert reference_class_names(reference, "LoveDA")[4] == "water"
    Path(f"{reference}.classes.json").write_text(json.dumps({"1": "field", "2": "road"}))
    assert reference_class_names(reference) == {1: "field", 2: "road"}
    names = tmp_path / "names.json"
    names.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match=r"names.json: not class names.*loveda"):
        reference_class_names(reference, str(names))
    result = runner.invoke(app, ["evaluate", str(reference), str(reference), "--class-names", str(names)])
    assert result.exit_code == 2 and "not class names" in result.output


def two_colour_scene(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A 3-band 30 x 40 scene: a dark left half and a bright right half with noise, a nodata corner."""
    rng = np.random.default_rng(3)
    halves = np.where(np.arange(40) < 20, 0, 1)[None, :].repeat(30, axis=0)
    scene = (40 + 150 * halves[None] + rng.integers(0, 20, (3, 30, 40))).astype(np.uint8)
    scene[:, :3, :3] = 0
    return write_geotiff(tmp_path / "scene.tif", scene, nodata=0), halves.astype(np.uint8) + 1


def test_kmeans_baseline_separates_distinct_pixels_and_keeps_grid_and_nodata(tmp_path: Path) -> None:
    scene, reference = two_colour_scene(tmp_path)
    out = kmeans_label_map(
        scene,
        str(tmp_path / "kmeans.tif"),
        num_clusters=2,
        band_mean=[100.0] * 3,
        band_std=[50.0] * 3,
        seed=1,
    )
    with rasterio.open(out) as baseline, rasterio.open(scene) as source:
        labels = baseline.read(1)
        assert (baseline.crs, baseline.transform, baseline.shape) == (
            source.crs,
            source.transform,
            source.shape,
        )
        assert baseline.nodata == NODATA_LABEL
        assert baseline.colormap(1)[0] != baseline.colormap(1)[1]  # classes coloured as the model's map
        assert baseline.tags()["EOSEG_BASELINE"] == "kmeans" and baseline.descriptions == ("class",)
    assert cog_validate(out, quiet=True)[:2] == (True, [])  # a COG like the model's map
    assert (labels[:3, :3] == NODATA_LABEL).all()
    reference_path = write_geotiff(tmp_path / "reference.tif", reference)
    report = evaluate_label_map(out, str(reference_path), method="hungarian")
    assert report.f1 == 1.0 and report.pixels == 30 * 40 - 9

    in_memory = kmeans_labels(
        rasterio.open(scene).read(), labels != NODATA_LABEL, num_clusters=2, band_mean=[100.0] * 3,
        band_std=[50.0] * 3, seed=1,
    )  # fmt: skip
    assert ((in_memory == labels) | (in_memory == 1 - labels) | (labels == NODATA_LABEL)).all()
    with pytest.raises(ValueError, match="3 band"):
        kmeans_label_map(scene, str(tmp_path / "bad.tif"), num_clusters=2, band_mean=[0.0], band_std=[1.0])


def test_comparison_table_puts_the_baseline_beside_the_map(collapsing_pair: tuple[str, str]) -> None:
    def scores(prediction: str) -> dict[str, dict]:
        return {
            method: evaluate_label_map(prediction, collapsing_pair[1], method=method)
            .with_class_names(LOVEDA_CLASS_NAMES)
            .to_dict()
            for method in ("majority", "hungarian")
        }

    text = comparison_text(scores(collapsing_pair[0]), scores(collapsing_pair[1]), model_name="map")
    lines = text.splitlines()
    assert lines[0].split() == [
        "class",
        "support",
        "map",
        "maj.",
        "k-means",
        "maj.",
        "map",
        "hung.",
        "k-means",
        "hung.",
    ]
    water = next(line for line in lines if line.startswith("4 water"))
    # Hungarian: cluster 2 (6 px, 2 of them water) -> water: F1 = 2 * 2 / (6 + 4) = 0.4.
    assert water.split()[2:] == ["4", "0.000", "1.000", "0.400", "1.000"]
    assert "WARNING (map maj.): every cluster maps to class 7 agriculture" in text
    assert "k-means maj.)" not in text  # the reference against itself does not collapse


def test_quicklook_key_shows_the_names_of_labels(tmp_path: Path) -> None:
    scene, reference = two_colour_scene(tmp_path)
    labels = write_geotiff(tmp_path / "labels.tif", reference)
    plain = write_quicklook(scene, labels, tmp_path / "plain.png")
    named = write_quicklook(scene, labels, tmp_path / "named.png", label_names={1: "forest", 2: "water"})

    def key_text_pixels(png: str) -> int:
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("L"))
        return int((pixels[30:] < 128).sum())  # dark pixels of the key below the 30 px panels

    # "1: forest" and "2: water" have many more glyphs than "1" and "2".
    assert key_text_pixels(named) > 1.5 * key_text_pixels(plain)
    with Image.open(plain) as a, Image.open(named) as b:
        assert np.array_equal(np.asarray(a)[:30], np.asarray(b)[:30])  # same panels


def test_a_one_class_reference_has_undefined_kappa_and_a_warning(collapsing_pair: tuple[str, str]) -> None:
    """--ignore leaves one reference class: kappa is 0/0, reported as null / n/a with a warning, not 1."""
    result = runner.invoke(app, ["evaluate", *collapsing_pair, "--ignore", "4", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert list(document["per_class"]) == ["7"] and document["kappa"] is None
    assert "the reference has one class (7)" in document["warning"]
    assert "kappa is undefined" in document["warning"]
    text = runner.invoke(app, ["evaluate", *collapsing_pair, "--ignore", "4"]).output
    assert "kappa n/a" in text and "WARNING: the reference has one class (7)" in text
    assert "n/a" in comparison_text({"majority": document, "hungarian": document})


def test_a_geojson_reference_off_the_map_is_refused(collapsing_pair: tuple[str, str], tmp_path: Path) -> None:
    """Polygons that all lie off the map would leave a reference of background only (perfect scores)."""
    far = {"type": "Polygon", "coordinates": [[[100, -40], [100.1, -40], [100.1, -40.1], [100, -40]]]}
    geojson = tmp_path / "elsewhere.geojson"
    geojson.write_text(json.dumps({"type": "FeatureCollection", "features": [{"geometry": far}]}))
    result = runner.invoke(app, ["evaluate", collapsing_pair[0], str(geojson)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {geojson}: the reference does not overlap the map {collapsing_pair[0]} (none of its 1 "
        "feature(s) lies on it); check that both cover the same place and CRS"
    ]
