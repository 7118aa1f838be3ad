"""`eoseg tile` without a Prefect API or a requested cluster imports only what its work needs and runs on
threads: the fixed cost per command (issue 12, point 0) is mostly imports (dask.array + xarray +
rioxarray alone were ~1 s), and worker processes cost the tile stage ~3x its CPU (issue 12, point 4)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from conftest import REAL_SCENES
from test_direct_commands import _env_without_prefect_api

from eoseg.store.layout import read_store_info

# Not needed to tile one chunk: the store's metadata is written with zarr alone (eoseg.store.layout),
# the STAC catalogue, Prefect, Dask's cluster and torch belong to other commands.
HEAVY_MODULES = ("dask.array", "xarray", "rioxarray", "pandas", "pystac", "prefect", "distributed", "torch")
RUN_TILE = """
import json, runpy, sys
heavy = sys.argv[3:]
sys.argv = ["eoseg", "tile", sys.argv[1], "--out", sys.argv[2], "--chunk-size", "256"]
try:
    runpy.run_module("cli.main", run_name="__main__")
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_tile_runs_on_threads_importing_no_dask_array_xarray_prefect_or_torch(tmp_path, shared_data):
    store = tmp_path / "landsat.zarr"
    result = subprocess.run(
        [sys.executable, "-c", RUN_TILE, str(REAL_SCENES["landsat"]), str(store), *HEAVY_MODULES],
        env=_env_without_prefect_api(tmp_path), capture_output=True, text=True, timeout=120, cwd=tmp_path,
        check=False,
    )  # fmt: skip
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["code"] in (0, None), result.stderr
    assert report["loaded"] == [], f"imported by `eoseg tile`: {report['loaded']}"
    assert "12 chunks of GIL-releasing work: running on threads in this process" in result.stderr
    # the store written without xarray is still the layout xarray and rioxarray read (docs/store-layout.md)
    info = read_store_info(str(store))
    dataset = xr.open_zarr(Path(store), consolidated=False, mask_and_scale=False, decode_coords="all")
    assert dataset["image"].rio.crs.to_wkt() == dataset["spatial_ref"].attrs["crs_wkt"]
    assert dataset["image"].rio.transform() == info.geobox.affine
    assert dataset["image"].rio.nodata == info.nodata == 0
