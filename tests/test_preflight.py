"""A bad invocation is refused before the heavy imports (torch, Prefect, dask.distributed) and before any
cluster or output: one ``error: FILE: what; what to do`` line, exit code 2, nothing written (issue 12,
point 0: a missing input took `eoseg run` 5-6.5 s to refuse, an existing output 14.7 s)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_geotiff, write_label_store
from test_direct_commands import _env_without_prefect_api

from eoseg.tile.stage import tile_scene

HEAVY_MODULES = ("torch", "prefect", "distributed")
# Every command of the list in one process (each ends with SystemExit), so the test costs one start-up;
# the modules loaded after all of them were refused are what each refusal needed at most.
REFUSE_ALL = """
import json, runpy, sys
commands, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
codes = []
for command in commands:
    sys.argv = ["eoseg", *command]
    print("--- next", file=sys.stderr, flush=True)
    try:
        runpy.run_module("cli.main", run_name="__main__")
        codes.append(0)
    except SystemExit as exit:
        codes.append(exit.code)
print(json.dumps({"codes": codes, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def _refuse(commands: list[list[str]], cwd: Path) -> tuple[list[int], list[str], list[str]]:
    """Run ``commands`` in one fresh process; returns exit codes, stderr of each, heavy modules loaded."""
    env = dict(_env_without_prefect_api(cwd), NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-c", REFUSE_ALL, json.dumps(commands), json.dumps(HEAVY_MODULES)],
        env=env, capture_output=True, text=True, timeout=120, cwd=cwd, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    errors = [part.strip() for part in result.stderr.split("--- next")[1:]]
    return report["codes"], errors, report["loaded"]


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))}


def test_bad_invocations_are_refused_before_heavy_imports_with_one_line(tiny_scene, tmp_path):
    store, one_band, label_store = tmp_path / "tiny.zarr", tmp_path / "one-band.zarr", tmp_path / "pred.zarr"
    tile_scene(str(tiny_scene), str(store), chunk_size=32, show_progress=False)
    one_band_scene = write_geotiff(tmp_path / "one-band.tif", np.full((1, 64, 64), 7, dtype=np.uint8))
    tile_scene(str(one_band_scene), str(one_band), chunk_size=32, show_progress=False)
    write_label_store(str(label_store), np.zeros((64, 64), dtype=np.uint8), 32)
    existing = {name: tmp_path / name for name in ("map.tif", "model.pt", "labels.zarr", "out.tif")}
    for path in existing.values():
        path.write_bytes(b"precious")
    with zipfile.ZipFile(existing["model.pt"], "w") as archive:  # passes the checkpoint's header check
        archive.writestr("archive/data.pkl", b"precious")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(existing["model.pt"].read_bytes()[:40])  # a torn copy: no central directory
    missing = tmp_path / "missing.tif"
    elsewhere = write_geotiff(tmp_path / "wgs84.tif", np.zeros((70, 90), np.uint8), crs="EPSG:4326")
    small = ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--patch-size", "32", "--reference")
    cases = {
        # command: the one error line it must print
        ("run", str(missing), "--out", str(tmp_path / "new" / "map.tif")): f"{missing}: scene not found",
        ("run", str(tiny_scene), "--out", str(existing["map.tif"])): (
            f"{existing['map.tif']}: output already exists; pass --overwrite to replace it"
        ),
        ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--model", "mcl-lc"): (
            "mcl-lc needs pre-trained, fine-tuned weights: run `eoseg train mcl-lc` and `eoseg finetune`"
        ),
        ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--legend", str(tmp_path / "no.yaml")): (
            f"{tmp_path / 'no.yaml'}: legend not found"
        ),
        ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--weights", str(tmp_path / "no.pt")): (
            f"{tmp_path / 'no.pt'}: model checkpoint not found"
        ),
        ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--weights", str(truncated)): (
            f"{truncated}: not a model checkpoint (not a readable PyTorch zip archive"
        ),
        ("predict", str(store), "--model", str(truncated), "--out", str(tmp_path / "l.zarr")): (
            f"{truncated}: not a model checkpoint (not a readable PyTorch zip archive"
        ),
        ("predict", str(store), "--model", str(tiny_scene), "--out", str(tmp_path / "l.zarr")): (
            f"{tiny_scene}: not a model checkpoint (not a readable PyTorch zip archive"
        ),
        (*small, str(missing)): f"{missing}: reference raster not found",
        (*small, str(tmp_path / "no.geojson")): f"{tmp_path / 'no.geojson'}: reference not found",
        (*small, str(tiny_scene), "--class-names", "lovda"): "lovda: not class names",
        (*small, str(elsewhere)): (
            f"{elsewhere}: reference raster is on EPSG:4326, the map will be on EPSG:32616"
        ),
        ("tile", str(tiny_scene), "--out", str(store)): f"{store}: output already exists; pass --overwrite",
        ("tile", str(missing), "--out", str(tmp_path / "new.zarr")): f"{missing}: scene not found",
        ("predict", str(tmp_path / "none.zarr"), "--model", str(existing["model.pt"]), "--out",
         str(tmp_path / "l.zarr")): f"{tmp_path / 'none.zarr'}: store not found",
        ("predict", str(store), "--model", str(tmp_path / "none.pt"), "--out", str(tmp_path / "l.zarr")): (
            f"{tmp_path / 'none.pt'}: model checkpoint not found"
        ),
        ("predict", str(store), "--model", str(existing["model.pt"]), "--out",
         str(existing["labels.zarr"])): (  # a file, not a store: even --overwrite would not replace it
            f"{existing['labels.zarr']}: exists and is not a Zarr store; --overwrite replaces only a store"
        ),
        ("mosaic", str(store), "--out", str(existing["out.tif"])): (
            f"{existing['out.tif']}: output already exists; pass --overwrite"
        ),
        ("train", "clusterer", str(store), "--out", str(existing["model.pt"])): (
            f"{existing['model.pt']}: checkpoint already exists; pass --overwrite to replace it"
        ),
        # usage errors found by the command-line parser: the same one line, naming the command's --help
        ("tile", str(tiny_scene), "--out", str(tmp_path / "new.zarr"), "--chunk-size", "5"): (
            "Invalid value for '--chunk-size': Input should be greater than or equal to 16; "
            "see `eoseg tile --help`"
        ),
        ("tile", str(tiny_scene), "--bogus"): "No such option: --bogus",
        ("tile", str(tiny_scene), str(tiny_scene), "--out", str(tmp_path / "new.zarr")): (
            f"{tiny_scene}: given twice (as a file, in a folder or a VRT); list each tile once"
        ),
        ("train", "clusterer", str(label_store), "--out", str(tmp_path / "new.pt")): (
            f"{label_store}: is a label store (written by eoseg predict), not a tile store"
        ),
        ("predict", str(label_store), "--model", str(existing["model.pt"]), "--out",
         str(tmp_path / "p.zarr")): f"{label_store}: is a label store",
        ("train", "clusterer", str(store), str(one_band), "--out", str(tmp_path / "new.pt")): (
            f"{one_band}: has 1 band(s) but {store} has"
        ),
        ("run", str(tiny_scene), "--out", str(tmp_path / "m.tif"), "--refine-compactness", "-5"): (
            "--refine-compactness: Input should be greater than 0; see the command's --help"
        ),
        ("mosaic", str(store)): "Missing option '--out' / '-o'; see `eoseg mosaic --help`",
        ("segment", str(tiny_scene)): "No such command 'segment'. Did you mean 'legend'? See `eoseg --help`",
        ("bogus",): "No such command 'bogus'; see `eoseg --help`",
    }  # fmt: skip
    before = _tree(tmp_path)
    codes, errors, loaded = _refuse([list(command) for command in cases], tmp_path)
    for (command, expected), code, stderr in zip(cases.items(), codes, errors, strict=True):
        assert code == 2, (command, stderr)
        assert stderr.splitlines() == [stderr.splitlines()[0]], (command, stderr)  # one line, no traceback
        assert stderr.startswith(f"error: {expected}"), (command, stderr)
    assert loaded == [], f"imported before refusing: {loaded}"
    assert _tree(tmp_path) == before  # nothing written, nothing half-written, the outputs untouched
    assert not os.path.exists(tmp_path / "new")


def _refused_with_an_unreachable_prefect_api(tmp_path, *args: str) -> tuple[str, str]:
    """Run ``eoseg ARGS`` with ``PREFECT_API_URL`` on a loopback port nothing listens on; assert exit 2 and
    exactly one stderr line naming ``--no-prefect``; return that line and the API's URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/api"
    env = dict(_env_without_prefect_api(tmp_path), PREFECT_API_URL=url, NO_COLOR="1")
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and "--no-prefect" in lines[0], result.stderr
    return lines[0], url


def test_an_unreachable_prefect_api_refuses_the_command_before_any_work(tmp_path, shared_data):
    """With a Prefect API configured, `eoseg tile` records its run there (cli.prefect_record); a server
    that does not answer is said in one line before anything is written."""
    from conftest import REAL_SCENES

    out = tmp_path / "landsat.zarr"
    line, url = _refused_with_an_unreachable_prefect_api(
        tmp_path, "tile", str(REAL_SCENES["landsat"]), "--out", str(out)
    )
    assert line.startswith(f"error: {url}: the Prefect API did not record the run (")
    assert not out.exists() and not (tmp_path / ".landsat.zarr.partial").exists()


def test_an_unreachable_prefect_api_refuses_a_flow_before_it_starts(tmp_path, shared_data):
    """`eoseg run` runs a Prefect flow; with a configured API that does not answer it stops with one line
    (not Prefect's traceback after its client's retries, exit 1) before any output is started."""
    from conftest import REAL_SCENES

    line, url = _refused_with_an_unreachable_prefect_api(
        tmp_path, "run", str(REAL_SCENES["landsat"]), "--out", str(tmp_path / "map.tif"), "--epochs", "1",
        "--iterations", "2", "--max-patches", "8",
    )  # fmt: skip
    assert line.startswith(f"error: {url}: the Prefect API does not answer (")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("map", ".map"))) == []


def test_a_bad_option_value_is_one_line_naming_the_option(tmp_path, shared_data):
    """An option value the option model refuses (here `--resample`) is said in one line naming the CLI
    option, not pydantic's multi-line report; exit 2, nothing written."""
    from conftest import REAL_SCENES

    out = tmp_path / "landsat.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "tile", str(REAL_SCENES["landsat"]), "--out", str(out),
         "--resample", "bogus"],
        env=dict(_env_without_prefect_api(tmp_path), NO_COLOR="1"), capture_output=True, text=True,
        timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: --resample: Input should be 'nearest', 'bilinear', 'cubic', 'average' or 'mode'; "
        "see the command's --help"
    ]
    assert not out.exists()


@pytest.mark.usefixtures("prefect_server")
def test_the_segment_flow_refuses_a_bad_reference_before_any_work(tiny_scene, tmp_path):
    """Runs that do not come from the CLI: the flow checks --reference and its class names up front."""
    from eoseg.config import EvaluateOptions
    from eoseg.errors import ConfigurationError, SceneNotFoundError
    from flows.segment_flows import segment_scene_flow

    out = tmp_path / "out" / "map.tif"
    with pytest.raises(
        SceneNotFoundError, match=re.escape(f"{tmp_path / 'no.tif'}: reference raster not found")
    ):
        segment_scene_flow(str(tiny_scene), str(out), reference_uri=str(tmp_path / "no.tif"))
    with pytest.raises(ConfigurationError, match="lovda: not class names"):
        segment_scene_flow(
            str(tiny_scene),
            str(out),
            reference_uri=str(tiny_scene),
            evaluate=EvaluateOptions(class_names="lovda"),
        )
    assert not (tmp_path / "out").exists()  # refused before any work
