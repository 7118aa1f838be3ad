"""eoseg.evaluate.scores on hand-made rasters with hand-computed answers, and on the SpaceNet mask."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SPACENET_CRS, SPACENET_TRANSFORM
from conftest import write_geotiff as write_raster

from eoseg.evaluate import scores as evaluate
from eoseg.evaluate.scores import (
    ConfusionCounts,
    GridMismatchError,
    confusion_matrix_from_rasters,
    evaluate_label_map,
    map_clusters,
    score,
)

# The SpaceNet mask and PNG references carry no georeferencing; they are compared pixel for pixel.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def spacenet_mask_path(spacenet_dir: Path) -> Path:
    return spacenet_dir / "sample_fp_mask.tif"


def write_geotiff(path: Path, array: np.ndarray, *, nodata: int | None = None) -> str:
    """A one-band GeoTIFF on the SpaceNet sample's grid."""
    return str(write_raster(path, array, crs=SPACENET_CRS, transform=SPACENET_TRANSFORM, nodata=nodata))


def write_png(path: Path, array: np.ndarray) -> str:
    height, width = array.shape
    profile = {"driver": "PNG", "height": height, "width": width, "count": 1, "dtype": "uint8"}
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(array, 1)
    return str(path)


# Three clusters against two reference classes (10 and 20). Pixel pairs (cluster, class):
# (0,10) x5, (0,20) x1, (1,10) x4, (1,20) x3, (2,20) x2  -> 15 pixels, class 10: 9, class 20: 6.
THREE_CLUSTERS = np.array(
    [[0, 0, 0, 0, 0], [0, 1, 1, 1, 1], [1, 1, 1, 2, 2]],
    dtype=np.uint8,
)
TWO_CLASSES = np.array(
    [[10, 10, 10, 10, 10], [20, 10, 10, 10, 10], [20, 20, 20, 20, 20]],
    dtype=np.uint8,
)
THREE_CLUSTER_COUNTS = [[5, 1], [4, 3], [0, 2]]

# Majority: 0->10, 1->10, 2->20. Mapped confusion (rows predicted, columns reference): [[9, 4], [0, 2]].
#   class 10: TP 9, FP 4, FN 0 -> P 9/13, R 1, F1 18/22 = 9/11, IoU 9/13
#   class 20: TP 2, FP 0, FN 4 -> P 1, R 2/6, F1 4/8 = 1/2, IoU 2/6
#   OA 11/15; chance = (13*9 + 2*6)/15^2 = 129/225; kappa = (165-129)/(225-129) = 36/96
MAJORITY_EXPECTED = {
    "mapping": {0: 10, 1: 10, 2: 20},
    "f1": (9 / 11 + 1 / 2) / 2,
    "iou": (9 / 13 + 1 / 3) / 2,
    "oa": 11 / 15,
    "kappa": 36 / 96,
    "per_class": {10: (9 / 13, 1.0, 9 / 11, 9 / 13, 9), 20: (1.0, 1 / 3, 1 / 2, 1 / 3, 6)},
}
# Hungarian: one-to-one 0->10, 1->20 (overlap 5+3=8 beats 0->10, 2->20 with 7); cluster 2 is left
# over and goes to its majority class 20. Mapped confusion: [[5, 1], [4, 5]].
#   class 10: TP 5, FP 1, FN 4 -> P 5/6, R 5/9, F1 10/15, IoU 5/10
#   class 20: TP 5, FP 4, FN 1 -> P 5/9, R 5/6, F1 10/15, IoU 5/10
#   OA 10/15; chance = (6*9 + 9*6)/225 = 108/225; kappa = (150-108)/(225-108) = 42/117
HUNGARIAN_EXPECTED = {
    "mapping": {0: 10, 1: 20, 2: 20},
    "f1": 2 / 3,
    "iou": 1 / 2,
    "oa": 10 / 15,
    "kappa": 42 / 117,
    "per_class": {10: (5 / 6, 5 / 9, 2 / 3, 1 / 2, 9), 20: (5 / 9, 5 / 6, 2 / 3, 1 / 2, 6)},
}


def assert_report_matches(report: evaluate.EvaluationReport, expected: dict) -> None:
    assert report.mapping == expected["mapping"]
    for key in ("f1", "iou", "oa", "kappa"):
        assert getattr(report, key) == pytest.approx(expected[key], abs=1e-12), key
    assert set(report.per_class) == set(expected["per_class"])
    for value, (precision, recall, f1, iou, support) in expected["per_class"].items():
        scores = report.per_class[value]
        assert (scores.precision, scores.recall, scores.f1, scores.iou) == pytest.approx(
            (precision, recall, f1, iou), abs=1e-12
        )
        assert scores.support == support


def assert_all_perfect(report: evaluate.EvaluationReport) -> None:
    assert (report.f1, report.iou, report.oa, report.kappa) == (1.0, 1.0, 1.0, 1.0)
    for scores in report.per_class.values():
        assert (scores.precision, scores.recall, scores.f1, scores.iou) == (1.0, 1.0, 1.0, 1.0)


def test_perfect_map_scores_one_everywhere(tmp_path: Path) -> None:
    reference = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 2, 1]], dtype=np.uint8)
    path = write_geotiff(tmp_path / "reference.tif", reference)

    report = evaluate_label_map(path, path)

    assert_all_perfect(report)
    assert report.mapping == {0: 0, 1: 1, 2: 2}
    assert report.pixels == 12
    assert {value: s.support for value, s in report.per_class.items()} == {0: 3, 1: 4, 2: 5}


@pytest.mark.parametrize("method", ["majority", "hungarian"])
def test_swapped_cluster_ids_score_one_after_mapping(tmp_path: Path, method: str) -> None:
    reference = np.array([[0, 0, 1], [1, 1, 0]], dtype=np.uint8)
    prediction = 1 - reference
    prediction_path = write_geotiff(tmp_path / "prediction.tif", prediction)
    reference_path = write_geotiff(tmp_path / "reference.tif", reference)

    report = evaluate_label_map(prediction_path, reference_path, method=method)

    assert report.mapping == {0: 1, 1: 0}
    assert report.method == method
    assert_all_perfect(report)


def test_counts_of_three_clusters_against_two_classes(tmp_path: Path) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)

    counts = confusion_matrix_from_rasters(prediction_path, reference_path)

    assert counts.prediction_labels == (0, 1, 2)
    assert counts.reference_labels == (10, 20)
    assert counts.counts.tolist() == THREE_CLUSTER_COUNTS
    assert counts.pixels == 15


@pytest.mark.parametrize(
    ("method", "expected"), [("majority", MAJORITY_EXPECTED), ("hungarian", HUNGARIAN_EXPECTED)]
)
def test_majority_and_hungarian_differ_with_more_clusters_than_classes(
    tmp_path: Path, method: str, expected: dict
) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)

    report = evaluate_label_map(prediction_path, reference_path, method=method)

    assert_report_matches(report, expected)
    assert report.pixels == 15


def test_windowed_reading_gives_the_same_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)
    monkeypatch.setattr(evaluate, "_PIXELS_PER_READ", 4)  # 2 x 2 windows over a 3 x 5 raster

    counts = confusion_matrix_from_rasters(prediction_path, reference_path)

    assert counts.counts.tolist() == THREE_CLUSTER_COUNTS


def test_ignored_reference_values_and_prediction_nodata_are_excluded(tmp_path: Path) -> None:
    # An extra row: reference 0 (ignored) under clusters 0, 1, 2; then a prediction-nodata pixel (255)
    # over class 10 and another over class 20. Only the original 15 pixels remain.
    prediction = np.vstack([THREE_CLUSTERS, np.array([[0, 1, 2, 255, 255]], dtype=np.uint8)])
    reference = np.vstack([TWO_CLASSES, np.array([[0, 0, 0, 10, 20]], dtype=np.uint8)])
    prediction_path = write_geotiff(tmp_path / "prediction.tif", prediction, nodata=255)
    reference_path = write_png(tmp_path / "reference.png", reference)

    report = evaluate_label_map(prediction_path, reference_path, ignore_values=[0], method="majority")

    assert report.pixels == 15
    assert_report_matches(report, MAJORITY_EXPECTED)


def test_explicit_prediction_nodata_when_the_file_declares_none(tmp_path: Path) -> None:
    prediction = np.array([[0, 1, 7]], dtype=np.uint8)
    reference = np.array([[0, 1, 1]], dtype=np.uint8)
    prediction_path = write_geotiff(tmp_path / "prediction.tif", prediction)
    reference_path = write_geotiff(tmp_path / "reference.tif", reference)

    counts = confusion_matrix_from_rasters(prediction_path, reference_path, prediction_nodata=7)

    assert counts.prediction_labels == (0, 1)
    assert counts.counts.tolist() == [[1, 0], [0, 1]]


def test_fewer_clusters_than_classes_leaves_a_class_unpredicted() -> None:
    # Reference classes 0, 1, 2 with supports 2, 3, 1; cluster 0 covers the class-0 pixels, cluster 1 the
    # rest. Hungarian: 0->0, 1->1 (overlap 3 > 1). Mapped confusion [[2, 0, 0], [0, 3, 1], [0, 0, 0]]:
    #   class 0 perfect; class 1 TP 3 FP 1 FN 0 -> F1 6/7, IoU 3/4; class 2 never predicted -> all 0.
    counts = ConfusionCounts(np.array([[2, 0, 0], [0, 3, 1]]), (0, 1), (0, 1, 2))

    report = score(counts, map_clusters(counts, method="hungarian"), method="hungarian")

    assert report.mapping == {0: 0, 1: 1}
    assert report.f1 == pytest.approx((1 + 6 / 7 + 0) / 3)
    assert report.iou == pytest.approx((1 + 3 / 4 + 0) / 3)
    assert report.oa == pytest.approx(5 / 6)
    assert report.per_class[2].precision == 0.0
    assert report.per_class[2].support == 1


def test_report_serialises_to_the_documented_json(tmp_path: Path) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)
    report = evaluate_label_map(prediction_path, reference_path)

    document = json.loads(json.dumps(report.to_dict()))

    assert set(document) == {
        *("f1", "iou", "oa", "kappa", "per_class", "mapping", "method", "pixels"),
        *("classes_predicted", "collapsed", "warning"),
    }
    assert document["mapping"] == {"0": 10, "1": 10, "2": 20}
    assert set(document["per_class"]) == {"10", "20"}
    assert set(document["per_class"]["20"]) == {"name", "precision", "recall", "f1", "iou", "support"}
    assert document["per_class"]["20"]["support"] == 6
    assert document["method"] == "majority"
    assert document["pixels"] == 15


def test_text_report_is_an_aligned_table(tmp_path: Path) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)

    lines = evaluate_label_map(prediction_path, reference_path).to_text().splitlines()

    table = lines[1:5]  # header, class 10, class 20, mean
    assert table[0].split() == ["class", "precision", "recall", "f1", "iou", "support"]
    assert len({len(line) for line in table}) == 1
    assert "0.7333" in lines[5] and "0.3750" in lines[5]  # OA 11/15 and kappa 3/8


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    prediction_path = write_geotiff(tmp_path / "prediction_3x5.tif", THREE_CLUSTERS)
    reference_path = write_geotiff(tmp_path / "reference_4x5.tif", np.zeros((4, 5), dtype=np.uint8))

    with pytest.raises(GridMismatchError) as raised:
        confusion_matrix_from_rasters(prediction_path, reference_path)

    message = str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert "prediction_3x5.tif" in message and "reference_4x5.tif" in message
    assert message.startswith(f"{prediction_path}: ")  # error: FILE: what; what to do
    assert "5 x 3 px" in message and "5 x 4 px" in message  # width x height, as the CLI prints sizes
    assert "same grid" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    reference_path = write_geotiff(tmp_path / "reference.tif", TWO_CLASSES)
    missing = tmp_path / "no_such_prediction.tif"

    with pytest.raises(FileNotFoundError, match=re.escape("no_such_prediction.tif")):
        evaluate_label_map(missing, reference_path)


def test_bad_options_are_refused() -> None:
    counts = ConfusionCounts(np.array([[3, 1], [0, 2]]), (0, 1), (0, 1))
    with pytest.raises(ValueError, match="majority"):
        map_clusters(counts, method="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"clusters \[1\]"):
        score(counts, {0: 0})
    with pytest.raises(ValueError, match="absent from the reference"):
        score(counts, {0: 0, 1: 5})


def test_spacenet_mask_against_itself_is_perfect(spacenet_mask_path: Path) -> None:
    with rasterio.open(spacenet_mask_path) as dataset:
        mask = dataset.read(1)
    buildings = int(np.count_nonzero(mask == 255))

    report = evaluate_label_map(spacenet_mask_path, spacenet_mask_path)

    assert_all_perfect(report)
    assert report.pixels == mask.size
    assert report.per_class[255].support == buildings
    assert report.per_class[0].support == mask.size - buildings


def test_spacenet_mask_against_its_inverse_is_perfect_after_majority_mapping(
    spacenet_mask_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with rasterio.open(spacenet_mask_path) as dataset:
        inverse = 255 - dataset.read(1)
    inverse_path = tmp_path / "inverse.tif"
    with rasterio.open(
        inverse_path,
        "w",
        driver="GTiff",
        height=inverse.shape[0],
        width=inverse.shape[1],
        count=1,
        dtype="uint8",
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dataset:
        dataset.write(inverse, 1)
    monkeypatch.setattr(evaluate, "_PIXELS_PER_READ", 256 * 256)  # many windows over the 900 x 900 mask

    report = evaluate_label_map(inverse_path, spacenet_mask_path, method="majority")

    assert report.mapping == {0: 255, 255: 0}
    assert_all_perfect(report)
    assert report.pixels == inverse.size
