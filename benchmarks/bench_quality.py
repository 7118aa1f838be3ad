"""Map quality on every labelled shared scene: the single-scene clusterer against raw-pixel k-means.

Scenes (``../shared/data``): LoveDA ``rural_1`` (1024 x 1024 px, 0.3 m RGB, 6 classes present, 0 =
no-data ignored) and SpaceNet's sample (900 x 900 px, 0.5 m panchromatic; buildings of
``geotiff_labels.geojson`` burnt onto its grid vs the rest). For every scene and seed:

* **clusterer** (Saha et al. 2021), K = 8, trained on a seeded subset of the scene's 64 px patches with
  the CPU configuration of ``make demo`` (``--config demo``: I = 1, J = 10, batch 8, 64 patches) or a
  longer one (``--config long``: I = 2, J = 50, batch 8, 64 patches; the paper's I and J, on a patch
  subset); then one whole-array prediction (what the tiled predict stage reproduces exactly);
* **k-means** on the raw pixels, standardised with the same band statistics, the same K
  (:func:`eoseg.evaluate.baseline.kmeans_labels`, seeded).

* **clusterer+slic**: the same clusterer labels refined by SLIC majority vote with ``--refine slic``'s
  defaults (:mod:`eoseg.predict.refine`), so the comparison is paired;
* with ``--methods mcl-lc`` instead (LoveDA): **mCL-LC** DeepLabv3+ fine-tuned on a seeded 2 % sample
  of the labelled pixels, from random init and after a short mCL-LC pre-training from the same
  weights (``MCL_LC``), scored on the pixels outside the sample.

Every map is scored the same way (:mod:`eoseg.evaluate.mapping`): majority mapping (the paper's) and
one-to-one Hungarian mapping; macro F1, macro IoU, overall accuracy, Cohen's kappa. The table gives
the mean and the spread (population std) over seeds.

Usage::

    .venv/bin/python benchmarks/bench_quality.py                 # 3 seeds, both scenes, ~10 min on 2 loaded cores
    .venv/bin/python benchmarks/bench_quality.py --seeds 0 --scenes loveda   # quick
    .venv/bin/python benchmarks/bench_quality.py --scenes loveda --train-precisions fp32 bf16 \
        --out benchmarks/results/quality_train_precision   # bf16 vs fp32 training, clusterer rows only

Writes ``benchmarks/results/quality.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench_machine import cpu_model

DATA = Path(os.environ.get("EOSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
SCENES = {
    "loveda": (DATA / "loveda" / "rural_1.tif", DATA / "loveda" / "rural_1.labels.tif", (0,)),
    "spacenet": (DATA / "spacenet" / "sample_geotiff.tif", DATA / "spacenet" / "geotiff_labels.geojson", ()),
}
CONFIGS = {
    "demo": {"epochs": 1, "iterations": 10, "batch_size": 8, "max_patches": 64},
    "long": {"epochs": 2, "iterations": 50, "batch_size": 8, "max_patches": 64},
}
METRICS = ("f1", "iou", "oa", "kappa")


class SubsetSource:
    """A seeded subset of an in-memory patch source (``--max-patches`` of the pipeline)."""

    def __init__(self, source: Any, count: int, seed: int) -> None:
        self.source = source
        rng = np.random.default_rng(seed)
        self.indices = np.sort(rng.choice(len(source), min(count, len(source)), replace=False))

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, indices: Any) -> np.ndarray:
        return self.source.read([int(self.indices[i]) for i in indices])


def load_scene(name: str, scratch: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels (bands, rows, cols), valid mask, reference (rows, cols) with ignored pixels invalid."""
    from eoseg.evaluate.reference import is_vector_reference, rasterize_reference
    from eoseg.tile.stage import valid_pixel_mask

    scene_path, reference_path, ignore = SCENES[name]
    with rasterio.open(scene_path) as scene:
        pixels = scene.read()
        valid = valid_pixel_mask(pixels, scene.nodata)
    reference = str(reference_path)
    if is_vector_reference(reference):
        reference = rasterize_reference(reference, str(scene_path), f"{scratch}/{name}_reference.tif")
    with rasterio.open(reference) as source:
        truth = source.read(1)
    for value in ignore:
        valid &= truth != value
    return pixels, valid, truth


def scores(labels: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> dict[str, dict[str, float]]:
    from eoseg.evaluate.confusion import ConfusionCounts, count_pairs
    from eoseg.evaluate.mapping import map_clusters, score

    totals: Counter[tuple[int, int]] = Counter(dict(count_pairs(labels[valid], truth[valid])))
    counts = ConfusionCounts.from_pair_totals(totals)
    out = {}
    for method in ("majority", "hungarian"):
        report = score(counts, map_clusters(counts, method=method), method=method)  # type: ignore[arg-type]
        out[method] = {
            **{key: getattr(report, key) for key in METRICS},
            "collapsed": report.collapsed,
            "per_class_f1": {str(v): s.f1 for v, s in report.per_class.items()},
        }
    return out


def run_clusterer(
    pixels: np.ndarray,
    valid: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    seed: int,
    config: str,
    train_precision: str = "auto",
    predict_precision: str = "auto",
) -> tuple[np.ndarray, float]:
    from eo_models.clusterer.params import ClustererTrainingParams
    from eo_models.clusterer.train import ArrayPatchSource, train_clusterer
    from eo_models.predict import load_predictor

    settings = dict(CONFIGS[config])
    normalised = (pixels.astype(np.float32) - mean[:, None, None]) / std[:, None, None]
    source = SubsetSource(ArrayPatchSource(normalised, 64), settings.pop("max_patches"), seed)
    params = ClustererTrainingParams(**settings, seed=seed, device="cpu", precision=train_precision)
    started = time.perf_counter()
    ckpt = train_clusterer(
        source, in_channels=pixels.shape[0], params=params, band_mean=mean.tolist(), band_std=std.tolist()
    )
    labels = load_predictor(ckpt, device="cpu", precision=predict_precision).predict(pixels, valid)
    return labels, time.perf_counter() - started


MCL_LC = {  # CPU configuration of the mCL-LC rows (the paper: 200 + 20 epochs, batch 64, 256 px)
    "pretrain": {"epochs": 2, "batch_size": 8, "max_patches": 96},
    "finetune": {"epochs": 2, "batch_size": 4, "max_patches": 48, "learning_rate": 1e-4},
    "label_fraction": 0.02,
}


class ArrayLabelledSource:
    """Normalised 64 px patches and their sampled labels (class index; -1 unlabelled) from arrays."""

    def __init__(self, normalised: np.ndarray, labels: np.ndarray, count: int, seed: int) -> None:
        size = 64
        corners = [
            (r, c)
            for r in range(0, labels.shape[0] - size + 1, size)
            for c in range(0, labels.shape[1] - size + 1, size)
            if (labels[r : r + size, c : c + size] >= 0).any()
        ]
        chosen = np.random.default_rng(seed).choice(len(corners), min(count, len(corners)), replace=False)
        self.images = np.stack(
            [normalised[:, r : r + size, c : c + size] for r, c in np.take(corners, chosen, 0)]
        )
        self.labels = np.stack([labels[r : r + size, c : c + size] for r, c in np.take(corners, chosen, 0)])

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.images[list(indices)], self.labels[list(indices)].astype(np.int64)


def run_mcl_lc(
    pixels: np.ndarray, valid: np.ndarray, truth: np.ndarray, mean: np.ndarray, std: np.ndarray, *, seed: int
) -> dict[str, tuple[np.ndarray, float]]:
    """mCL-LC fine-tuned on a seeded 2 % label sample, after pre-training and from random init.

    Both starts are the same seeded weights (pre-training stopped after 0 epochs is the random init),
    fine-tuned identically; returns ``{start: (class-index labels, seconds)}`` and leaves the sampled
    pixels out of ``valid`` (scored on unseen pixels only).
    """
    from eo_models.clusterer.train import ArrayPatchSource
    from eo_models.mcl_lc.model import FinetuneParams, PretrainParams
    from eo_models.mcl_lc.train import finetune_mcl_lc, pretrain_mcl_lc
    from eo_models.predict import load_predictor
    from eoseg.geometry import Window
    from eoseg.train.labels import sampled_label_mask

    classes = sorted(int(v) for v in np.unique(truth[valid]))
    sample = sampled_label_mask(Window(0, 0, *truth.shape), fraction=MCL_LC["label_fraction"], seed=seed)
    sample &= valid
    index = np.full(256, -1, np.int64)
    index[classes] = np.arange(len(classes))
    labels = np.where(sample, index[truth], -1)
    normalised = (pixels.astype(np.float32) - mean[:, None, None]) / std[:, None, None]
    settings = dict(MCL_LC["pretrain"])
    source = SubsetSource(ArrayPatchSource(normalised, 64), settings.pop("max_patches"), seed)
    pretrain = PretrainParams(**settings, patch_size=64, seed=seed, device="cpu")
    common = {"in_channels": pixels.shape[0], "band_mean": mean.tolist(), "band_std": std.tolist()}
    out = {}
    for start, epochs in (("random init", 0), ("pre-trained", None)):
        started = time.perf_counter()
        ckpt = pretrain_mcl_lc(source, params=pretrain, stop_after_epoch=epochs, **common)
        settings = dict(MCL_LC["finetune"])
        tuning = ArrayLabelledSource(normalised, labels, settings.pop("max_patches"), seed)
        tuned = finetune_mcl_lc(
            ckpt, tuning, params=FinetuneParams(num_classes=len(classes), seed=seed, device="cpu", **settings)
        )
        out[start] = (
            load_predictor(tuned, device="cpu").predict(pixels, valid),
            time.perf_counter() - started,
        )
    valid &= ~sample
    return out


def refine_whole(
    pixels: np.ndarray, labels: np.ndarray, valid: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> np.ndarray:
    """``labels`` refined by SLIC majority vote with the default options (what ``--refine slic`` writes)."""
    from eoseg.geometry import Window
    from eoseg.predict.refine import RefineOptions, refine_labels

    height, width = labels.shape
    everything = Window(0, 0, height, width)
    return refine_labels(
        pixels, labels, valid, region=everything, window=everything, options=RefineOptions(refine="slic"),
        height=height, width=width, band_mean=mean, band_std=std,
    )  # fmt: skip


def mcl_lc_rows(
    pixels: np.ndarray,
    valid: np.ndarray,
    truth: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    seeds: list[int],
) -> dict[str, Any]:
    """The mCL-LC rows of one scene: fine-tuned after pre-training and from random init, per seed."""
    methods: dict[str, Any] = {"mcl-lc random init": {"runs": []}, "mcl-lc pre-trained": {"runs": []}}
    for seed in seeds:
        scored = valid.copy()
        maps = run_mcl_lc(pixels, scored, truth, mean, std, seed=seed)
        for start, (labels, seconds) in maps.items():
            result = scores(labels, truth, scored)
            methods[f"mcl-lc {start}"]["runs"].append({"seed": seed, "seconds": seconds, "scores": result})
            print_scores(f"seed {seed} mcl-lc {start:11s}", result)
    for block in methods.values():
        block["summary"] = summarise(block["runs"])
    return methods


def train_precision_rows(
    scene: tuple[np.ndarray, ...], *, seeds: list[int], config: str, precisions: list[str]
) -> dict[str, Any]:
    """The clusterer rows of one scene trained in each of ``precisions``, inferred in fp32, per seed.

    ``scene``: pixels, valid mask, reference, band means and band stds, as ``main`` reads them.
    """
    pixels, valid, truth, mean, std = scene
    methods: dict[str, Any] = {f"clusterer, trained {p}": {"runs": []} for p in precisions}
    for seed in seeds:
        for precision in precisions:
            labels, seconds = run_clusterer(
                pixels,
                valid,
                mean,
                std,
                seed=seed,
                config=config,
                train_precision=precision,
                predict_precision="fp32",
            )
            run = {"seed": seed, "seconds": seconds, "scores": scores(labels, truth, valid)}
            methods[f"clusterer, trained {precision}"]["runs"].append(run)
            print_scores(f"seed {seed} clusterer trained {precision}", run["scores"])
    for block in methods.values():
        block["summary"] = summarise(block["runs"])
    return methods


def print_scores(prefix: str, result: dict[str, Any]) -> None:
    """One progress line: macro F1 and kappa per mapping."""
    print(
        f"{prefix} "
        + "  ".join(f"{m} F1 {result[m]['f1']:.3f} kappa {result[m]['kappa']:.3f}" for m in result),
        flush=True,
    )


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in ("majority", "hungarian"):
        for key in METRICS:
            values = [run["scores"][method][key] for run in runs]
            out[f"{method}_{key}"] = (float(np.mean(values)), float(np.std(values)))
        out[f"{method}_collapsed"] = sum(run["scores"][method]["collapsed"] for run in runs)
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Map quality: single-scene clusterer vs raw-pixel k-means (+ SLIC refinement, + mCL-LC fine-tuning)",
        "",
        f"{results['when']}, {results['machine']}, load average {results['load']}; seeds {results['seeds']}; "
        f"clusterer configuration `{results['config']}` {CONFIGS.get(results['config'], '')} (K = 8, patch 64, "
        f"Adam 1e-3); mCL-LC rows: {results.get('configs', [results['config']])[-1]}.",
        "Mean ± std over seeds. maj. = majority mapping (paper), hung. = Hungarian (one-to-one).",
        "",
        "| scene | method | macro F1 maj. | IoU maj. | OA maj. | kappa maj. | macro F1 hung. | IoU hung. | OA hung. | kappa hung. | collapsed (maj.) | s per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scene, methods in results["scenes"].items():
        for method, block in methods.items():
            s = block["summary"]
            cells = [
                f"{s[f'{m}_{k}'][0]:.3f} ± {s[f'{m}_{k}'][1]:.3f}"
                for m in ("majority", "hungarian")
                for k in METRICS
            ]
            seconds = np.mean([run["seconds"] for run in block["runs"]])
            lines.append(
                f"| {scene} | {method} | "
                + " | ".join(cells)
                + f" | {s['majority_collapsed']}/{len(block['runs'])} | {seconds:.0f} |"
            )
    refined = any("clusterer+slic" in methods for methods in results["scenes"].values())
    lines += (
        [
            "",
            "clusterer+slic: the same clusterer labels refined by SLIC majority vote (`--refine slic`, "
            "default segment size 16 px, compactness 0.5); time = clusterer + refinement.",
            "",
            "Goal (issue 13): clusterer macro F1 above k-means by more than the seed spread on LoveDA.",
        ]
        if refined
        else [""]
    )
    for scene, methods in results["scenes"].items():
        if "clusterer+slic" in methods:
            for mapping in ("majority", "hungarian"):
                gains = [
                    r["scores"][mapping]["f1"] - b["scores"][mapping]["f1"]
                    for r, b in zip(
                        methods["clusterer+slic"]["runs"], methods["clusterer"]["runs"], strict=True
                    )
                ]
                spread = max(
                    methods[m]["summary"][f"{mapping}_f1"][1] for m in ("clusterer", "clusterer+slic")
                )
                verdict = "wins" if min(gains) > spread else "does not win"
                lines.append(
                    f"- {scene}, {mapping}: SLIC refinement - clusterer = {np.mean(gains):+.3f} "
                    f"(per seed {', '.join(f'{g:+.3f}' for g in gains)}), spread {spread:.3f}: **{verdict}**"
                )
        if "mcl-lc pre-trained" in methods:
            for mapping in ("majority", "hungarian"):
                b, a = (
                    methods[f"mcl-lc {start}"]["summary"][f"{mapping}_f1"]
                    for start in ("pre-trained", "random init")
                )
                gap, spread = b[0] - a[0], max(a[1], b[1])
                verdict = "pre-training helps" if gap > spread else "no gain beyond the spread"
                if len(methods["mcl-lc pre-trained"]["runs"]) < 2:
                    verdict = "one seed only: no spread to judge by"
                lines.append(
                    f"- {scene}, {mapping}: mCL-LC pre-trained - random init = {gap:+.3f}, spread {spread:.3f}: "
                    f"**{verdict}**"
                )
        if "clusterer, trained bf16" in methods and "clusterer, trained fp32" in methods:
            for mapping in ("majority", "hungarian"):
                b, a = (
                    methods[f"clusterer, trained {p}"]["summary"][f"{mapping}_f1"] for p in ("bf16", "fp32")
                )
                gap, spread = b[0] - a[0], max(a[1], b[1])
                verdict = (
                    "no worse beyond the seed spread" if gap >= -spread else "worse beyond the seed spread"
                )
                lines.append(
                    f"- {scene}, {mapping}: clusterer trained bf16 - trained fp32 = {gap:+.3f}, "
                    f"spread {spread:.3f}: **{verdict}**"
                )
        if "clusterer" not in methods or "kmeans" not in methods:
            continue
        for mapping in ("majority", "hungarian"):
            c, k = (
                methods["clusterer"]["summary"][f"{mapping}_f1"],
                methods["kmeans"]["summary"][f"{mapping}_f1"],
            )
            gap, spread = c[0] - k[0], max(c[1], k[1])
            verdict = "met" if gap > spread else "not met"
            lines.append(
                f"- {scene}, {mapping}: clusterer - k-means = {gap:+.3f}, spread {spread:.3f}: **{verdict}**"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=list(SCENES))
    parser.add_argument("--config", default="demo", choices=list(CONFIGS))
    parser.add_argument(
        "--methods",
        default="clusterer",
        choices=["clusterer", "mcl-lc"],
        help="clusterer (+ SLIC refinement) and k-means rows, or the mCL-LC fine-tuning rows",
    )
    parser.add_argument(
        "--train-precisions",
        nargs="+",
        choices=["fp32", "bf16"],
        help="only the clusterer rows, trained once per precision given (same seeds, fp32 inference): "
        "does bf16 training change map quality beyond seed noise?",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "quality"))
    parser.add_argument(
        "--combine", nargs="+", metavar="JSON", help="merge earlier runs' JSON (one per scene)"
    )
    args = parser.parse_args()
    if args.combine:
        runs = [json.loads(Path(path).read_text()) for path in args.combine]
        scenes: dict[str, Any] = {}
        for run in runs:  # methods of one scene side by side; one method's seeds from several runs pooled
            for scene, methods in run["scenes"].items():
                for method, block in methods.items():
                    pooled = scenes.setdefault(scene, {}).setdefault(method, {"runs": []})
                    pooled["runs"] += block["runs"]
                    pooled["summary"] = summarise(pooled["runs"])
        merged = {**runs[0], "scenes": scenes, "configs": [run["config"] for run in runs]}
        merged["load"] = ", ".join(run["load"] for run in runs)
        merged["seeds"] = sorted({seed for run in runs for seed in run["seeds"]})
        Path(f"{args.out}.md").write_text(markdown(merged))
        Path(f"{args.out}.json").write_text(json.dumps(merged, indent=1, default=float))
        print(markdown(merged))
        return
    import torch

    from eoseg.evaluate.baseline import kmeans_labels

    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "when": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "machine": cpu_model(),
        "load": f"{os.getloadavg()[0]:.1f}",
        "seeds": args.seeds,
        "config": args.config if args.methods == "clusterer" else f"mcl-lc {MCL_LC}",
        "scenes": {},
    }
    with tempfile.TemporaryDirectory() as scratch:
        for scene in args.scenes:
            pixels, valid, truth = load_scene(scene, scratch)
            values = pixels.reshape(pixels.shape[0], -1)[:, valid.ravel()].astype(np.float64)
            mean, std = values.mean(axis=1), values.std(axis=1)
            if args.methods == "mcl-lc":
                results["scenes"][scene] = mcl_lc_rows(pixels, valid, truth, mean, std, seeds=args.seeds)
                continue
            if args.train_precisions:
                results["scenes"][scene] = train_precision_rows(
                    (pixels, valid, truth, mean, std),
                    seeds=args.seeds,
                    config=args.config,
                    precisions=args.train_precisions,
                )
                continue
            methods: dict[str, Any] = {"clusterer": {"runs": []}, "clusterer+slic": {"runs": []}}
            methods["kmeans"] = {"runs": []}
            for seed in args.seeds:
                labels, seconds = run_clusterer(pixels, valid, mean, std, seed=seed, config=args.config)
                methods["clusterer"]["runs"].append(
                    {"seed": seed, "seconds": seconds, "scores": scores(labels, truth, valid)}
                )
                started = time.perf_counter()  # the same clusterer labels, refined: a paired comparison
                refined = refine_whole(pixels, labels, valid, mean, std)
                methods["clusterer+slic"]["runs"].append(
                    {
                        "seed": seed,
                        "seconds": seconds + time.perf_counter() - started,
                        "scores": scores(refined, truth, valid),
                    }
                )
                started = time.perf_counter()
                labels = kmeans_labels(pixels, valid, num_clusters=8, band_mean=mean, band_std=std, seed=seed)
                methods["kmeans"]["runs"].append(
                    {
                        "seed": seed,
                        "seconds": time.perf_counter() - started,
                        "scores": scores(labels, truth, valid),
                    }
                )
                for name in methods:
                    print_scores(f"{scene} seed {seed} {name:9s}", methods[name]["runs"][-1]["scores"])
            for block in methods.values():
                block["summary"] = summarise(block["runs"])
            results["scenes"][scene] = methods
    results["load_after"] = f"{os.getloadavg()[0]:.1f}"
    text = markdown(results)
    print(text)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(f"{args.out}.md").write_text(text)
    Path(f"{args.out}.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
