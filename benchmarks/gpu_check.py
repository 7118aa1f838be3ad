"""GPU check: the GPU-marked tests of eo_models, then training and inference throughput, in one go.

Needs only ``torch`` and ``numpy`` (and ``eo_models`` from this checkout): it is meant for a GPU machine
that has a CUDA torch but not the rest of eoseg's stack. ``benchmarks/gpu_check.sh`` runs it under a
time limit. Measured, each in fp32 and bf16 (:mod:`eo_models.precision`):

- the clusterer's training (Algorithm 1) at the paper's sizes: batch 16 of 64 x 64 px patches, 4 bands,
  J = 50 updates per batch; patch-iterations/s and peak GPU memory;
- mCL-LC pre-training at the paper's sizes: batch 64 of 256 x 256 px patches; patches/s and peak memory
  (bf16 as autocast around the unchanged loop);
- inference of both families on 1024 x 1024 px tiles: megapixels/s from host uint16 blocks (what the
  predict stage does: convert, copy to the device, forward, argmax, copy back) and of the forward alone
  on device-resident tensors. The issue's goal: >= 200 MP/s for the clusterer on one H200.

``--dry`` runs everything at tiny sizes on the CPU in seconds (the CI test keeps this script working).
One results file: ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (``gpu_check_dry.*`` with --dry).

    python3 benchmarks/gpu_check.py [--dry] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from eo_models.clusterer.model import ClustererConfig, SingleSceneClusterer
from eo_models.clusterer.train import ArrayPatchSource, ClustererTrainingParams, train_clusterer
from eo_models.mcl_lc.deeplabv3plus import build_mcl_lc_segmenter
from eo_models.mcl_lc.params import PretrainParams
from eo_models.mcl_lc.pretrain import pretrain_mcl_lc
from eo_models.precision import autocast, resolve_precision
from eo_models.predict import Predictor

BANDS = 4
SIZES: dict[str, dict[str, int]] = {
    # The paper's batch sizes (clusterer: ours, B=16 of 64 px with J=50; mCL-LC: 64 of 256 px).
    "full": {"c_batch": 16, "c_patch": 64, "c_iter": 50, "c_batches": 4, "m_batch": 64, "m_patch": 256,
             "m_steps": 4, "tile": 1024, "tiles": 16, "batch_tiles": 4, "repeats": 3},
    "dry": {"c_batch": 4, "c_patch": 16, "c_iter": 2, "c_batches": 2, "m_batch": 2, "m_patch": 32,
            "m_steps": 1, "tile": 64, "tiles": 2, "batch_tiles": 2, "repeats": 1, "no_warm_up": 1},
}  # fmt: skip


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, into: dict[str, Any]) -> Iterator[None]:
    """Record the peak allocated GPU memory (MiB) of the block in ``into["peak_mib"]`` (None on CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    yield
    into["peak_mib"] = (
        round(torch.cuda.max_memory_allocated(device) / 2**20) if device.type == "cuda" else None
    )


def seconds_of(device: torch.device, run: Callable[[], Any]) -> float:
    synchronise(device)
    start = time.perf_counter()
    run()
    synchronise(device)
    return time.perf_counter() - start


def scene(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """A structured (not white-noise) normalised 4-band image: smooth fields plus noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols] / 37.0
    fields = [np.sin(x * (b + 1) * 0.3) + np.cos(y * (b + 2) * 0.2) for b in range(BANDS)]
    return (np.stack(fields) + 0.3 * rng.standard_normal((BANDS, rows, cols))).astype(np.float32)


def clusterer_training(device: torch.device, precision: str, s: dict[str, int]) -> dict[str, Any]:
    patches = s["c_batch"] * s["c_batches"]
    image = scene(s["c_patch"] * s["c_batches"], s["c_patch"] * s["c_batch"])
    source = ArrayPatchSource(image, s["c_patch"])
    params = ClustererTrainingParams(
        epochs=1, iterations=s["c_iter"], batch_size=s["c_batch"], patch_size=s["c_patch"],
        device=str(device), precision=precision,  # type: ignore[arg-type]
    )  # fmt: skip
    kwargs = {"in_channels": BANDS, "band_mean": [0.0] * BANDS, "band_std": [1.0] * BANDS}
    warm = ClustererTrainingParams(epochs=1, iterations=1, batch_size=s["c_batch"], patch_size=s["c_patch"],
                                   device=str(device), precision=precision)  # type: ignore[arg-type]  # fmt: skip
    if not s.get("no_warm_up"):
        train_clusterer(source, params=warm, **kwargs)  # cuDNN/oneDNN algorithm selection
    result: dict[str, Any] = {"patches": patches, "batch": s["c_batch"], "patch_px": s["c_patch"]}
    with peak_memory(device, result):
        seconds = seconds_of(device, lambda: train_clusterer(source, params=params, **kwargs))
    result.update(seconds=round(seconds, 3), patch_iterations_per_s=round(patches * s["c_iter"] / seconds, 1))
    return result


def mcl_lc_training(device: torch.device, precision: str, s: dict[str, int]) -> dict[str, Any]:
    steps, batch = s["m_steps"], s["m_batch"]
    image = scene(s["m_patch"] * steps, s["m_patch"] * batch, seed=1)
    source = ArrayPatchSource(image, s["m_patch"])
    kwargs = {"in_channels": BANDS, "band_mean": [0.0] * BANDS, "band_std": [1.0] * BANDS}
    params = PretrainParams(epochs=1, batch_size=batch, patch_size=s["m_patch"], device=str(device))
    warm = PretrainParams(epochs=1, batch_size=batch, patch_size=s["m_patch"], device=str(device),
                          max_steps_per_epoch=1)  # fmt: skip
    if not s.get("no_warm_up"):
        with autocast(resolve_precision(precision, device), device):
            pretrain_mcl_lc(source, params=warm, **kwargs)
    result: dict[str, Any] = {"patches": steps * batch, "batch": batch, "patch_px": s["m_patch"]}
    with peak_memory(device, result), autocast(resolve_precision(precision, device), device):
        seconds = seconds_of(device, lambda: pretrain_mcl_lc(source, params=params, **kwargs))
    result.update(seconds=round(seconds, 3), patches_per_s=float(f"{steps * batch / seconds:.3g}"))
    return result


def inference(device: torch.device, precision: str, family: str, s: dict[str, int]) -> dict[str, Any]:
    torch.manual_seed(0)
    if family == "clusterer":
        model: torch.nn.Module = SingleSceneClusterer(ClustererConfig(in_channels=BANDS, num_classes=8))
    else:
        model = build_mcl_lc_segmenter({"in_channels": BANDS, "num_classes": 8})
    predictor = Predictor(
        model, family=family, num_classes=8, in_channels=BANDS, halo=0, band_mean=[1000.0] * BANDS,
        band_std=[300.0] * BANDS, device=device, precision=precision,
    )  # fmt: skip
    rng = np.random.default_rng(2)
    tile, n, per = s["tile"], s["tiles"], s["batch_tiles"]
    blocks = (1000 + 300 * scene(tile, tile)[None] + rng.normal(0, 30, (n, BANDS, tile, tile))).astype(
        np.uint16
    )
    megapixels = n * tile * tile / 1e6

    def from_host() -> None:
        for start in range(0, n, per):
            predictor.predict_batch(blocks[start : start + per])

    on_device = torch.from_numpy(blocks[:per].astype(np.float32) / 1000).to(device)
    on_device = (
        on_device.contiguous(memory_format=torch.channels_last)
        if predictor.precision == "bf16"
        else on_device
    )

    def forward_only() -> None:
        with torch.inference_mode(), autocast(predictor.precision, device):
            for _ in range(0, n, per):
                predictor.model(on_device).argmax(dim=1)

    if not s.get("no_warm_up"):
        from_host()  # algorithm selection
    result: dict[str, Any] = {"precision": predictor.precision, "tile_px": tile, "tiles": n}
    with peak_memory(device, result):
        host = min(seconds_of(device, from_host) for _ in range(s["repeats"]))
    forward = min(seconds_of(device, forward_only) for _ in range(s["repeats"]))
    result.update(
        megapixels_per_s=float(f"{megapixels / host:.3g}"),
        forward_only_megapixels_per_s=float(f"{megapixels / forward:.3g}"),
    )
    return result


def gpu_tests(dry: bool) -> dict[str, Any]:
    """The GPU-marked tests of eo_models: pytest when installed (no eoseg conftest), else called directly."""
    test_file = REPO / "tests" / "test_eo_models_gpu.py"
    if importlib.util.find_spec("pytest") is not None:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--noconftest",
            "-p",
            "no:cacheprovider",
            "-q",
            str(test_file),
        ]
        command += ["-m", "gpu or not gpu"] if dry else ["-m", "gpu"]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
        return {"runner": "pytest", "returncode": done.returncode, "tail": done.stdout[-1500:]}
    spec = importlib.util.spec_from_file_location("test_eo_models_gpu", test_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pytest"] = _PytestStandIn()  # type: ignore[assignment]  # the marker decorator only
    spec.loader.exec_module(module)
    outcomes = {}
    for name in sorted(n for n in dir(module) if n.startswith("test_")):
        try:
            getattr(module, name)()
            outcomes[name] = "passed"
        except Exception:  # noqa: BLE001 (recorded in the results file)
            outcomes[name] = "FAILED: " + traceback.format_exc(limit=3)
    del sys.modules["pytest"]
    return {"runner": "direct calls (no pytest here)", "outcomes": outcomes}


class _PytestStandIn:
    """Enough of pytest for ``pytestmark = pytest.mark.gpu`` where pytest is not installed."""

    class mark:
        gpu = None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU (seconds); for CI")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks" / "results")
    )
    args = parser.parse_args()
    if not args.dry and not torch.cuda.is_available():
        sys.exit("error: no CUDA device: run with --dry for the CPU check, or on a GPU machine")
    device = torch.device("cpu" if args.dry else "cuda")
    sizes = SIZES["dry" if args.dry else "full"]
    started = time.perf_counter()
    report: dict[str, Any] = {
        "mode": "dry (CPU, tiny sizes)" if args.dry else "full",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_auto": resolve_precision("auto", device),
        "sizes": sizes,
        "tests": gpu_tests(args.dry),
        "results": {},
    }
    cases: dict[str, Callable[[str], dict[str, Any]]] = {
        "clusterer training": lambda p: clusterer_training(device, p, sizes),
        "mcl-lc pre-training": lambda p: mcl_lc_training(device, p, sizes),
        "clusterer inference": lambda p: inference(device, p, "clusterer", sizes),
        "mcl-lc inference": lambda p: inference(device, p, "mcl-lc", sizes),
    }
    for name, case in cases.items():
        for precision in ("fp32", "bf16"):
            try:
                outcome = case(precision)
            except Exception as error:  # noqa: BLE001 (one failing case must not lose the others' figures)
                outcome = {"error": f"{type(error).__name__}: {error}"}
            report["results"][f"{name}, {precision}"] = outcome
            print(f"{name}, {precision}: {outcome}", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_results(args.out, "gpu_check_dry" if args.dry else "gpu_check", report)


def write_results(out: Path, name: str, report: dict[str, Any]) -> None:
    lines = [
        f"# GPU check ({report['mode']}): {report['device']}, torch {report['torch']}, CUDA {report['cuda']}",
        "",
        f"auto precision here: {report['bf16_auto']}; total {report['seconds']} s.",
        f"Tests ({report['tests']['runner']}): "
        + (
            f"exit {report['tests']['returncode']}"
            if "returncode" in report["tests"]
            else json.dumps(report["tests"]["outcomes"])
        ),
        "",
        "| case | figures |",
        "|---|---|",
        *(f"| {case} | {json.dumps(figures)} |" for case, figures in report["results"].items()),
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1))
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
