"""What ``--overwrite`` may replace: only an output of the same kind, never an input, never a folder
(eoseg/store/lifecycle.py); stale GDAL sidecars; unwritable or directory targets refused up front."""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from cli.main import app
from eoseg.errors import OutputExistsError, OutputLocationError
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.store.lifecycle import check_file_output, check_store_output, finish_file_output, open_file_output
from eoseg.tile.stage import tile_scene


def listing(folder):
    """Every path under ``folder`` with its size (files) so that any change shows."""
    return sorted(
        (os.path.relpath(os.path.join(root, name), folder), os.path.getsize(os.path.join(root, name)))
        for root, dirs, files in os.walk(folder)
        for name in files + dirs
    )


def run_cli(*args):
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


@pytest.mark.parametrize("case", ["same-as-input", "user-folder", "other-geotiff"])
def test_tile_overwrite_never_replaces_what_is_not_a_store(tiny_scene, tmp_path, case):
    sandbox = tmp_path / "sandbox"
    (sandbox / "keep").mkdir(parents=True)
    (sandbox / "a.txt").write_text("x")
    victim = tmp_path / "victim.tif"
    victim.write_bytes(tiny_scene.read_bytes())
    out = {"same-as-input": tiny_scene, "user-folder": sandbox, "other-geotiff": victim}[case]
    before = listing(tmp_path)
    code, output = run_cli("tile", tiny_scene, "--out", out, "--overwrite")
    print(code, output)
    assert code == 2
    why = "is also an input" if case == "same-as-input" else "exists and is not a Zarr store"
    assert re.fullmatch(rf"error: {re.escape(str(out))}: {why}[^\n]*choose another --out\n", output)
    assert listing(tmp_path) == before


def test_store_overwrite_replaces_a_zarr_store_only(tiny_scene, tmp_path):
    store = tmp_path / "out.zarr"
    tile_scene(str(tiny_scene), str(store), show_progress=False)
    assert check_store_output(str(store), overwrite=True) == str(store)  # a store: replaced
    with pytest.raises(OutputExistsError, match="is also an input"):
        check_store_output(str(store), overwrite=True, inputs=[str(tmp_path / "." / "out.zarr/")])
    (tmp_path / "plain").mkdir()
    with pytest.raises(OutputExistsError, match="exists and is not a Zarr store"):
        check_store_output(str(tmp_path / "plain"), overwrite=True)
    with pytest.raises(OutputExistsError, match="is also an input"):  # the library refuses too
        tile_scene(str(tiny_scene), str(tiny_scene), overwrite=True, show_progress=False)
    with pytest.raises(OutputExistsError, match="is also an input"):
        mosaic_to_cog(str(store), str(store), band=1, overwrite=True, show_progress=False)
    assert (store / "zarr.json").exists()


def test_mosaic_to_a_directory_or_unwritable_folder_is_one_error_line(tiny_scene, tmp_path):
    store = tmp_path / "labels.zarr"
    tile_scene(str(tiny_scene), str(store), show_progress=False)
    sandbox = tmp_path / "sandbox"
    (sandbox / "keep").mkdir(parents=True)
    before = listing(tmp_path)
    code, output = run_cli("mosaic", store, "--band", 1, "--out", f"{sandbox}/", "--overwrite")
    print(code, output)
    assert (code, output) == (2, f"error: {sandbox}: is a directory; give a file name\n")
    code, output = run_cli("mosaic", store, "--band", 1, "--out", "/proc/nope/x.tif")
    print(code, output)
    assert code == 2
    assert output.startswith("error: /proc/nope/x.tif: cannot create the folder /proc/nope")
    assert output.endswith("; check the path and permissions\n") and output.count("\n") == 1
    assert listing(tmp_path) == before
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputLocationError, match="cannot create the folder"):
        check_file_output(str(blocker / "sub" / "x.tif"), overwrite=True)
    assert not (tmp_path / "nope").exists()
    check_file_output(str(tmp_path / "new" / "deeper" / "x.tif"), overwrite=False)  # creatable: passes
    assert not (tmp_path / "new").exists()  # ... and the probe left nothing


def test_publishing_a_file_removes_a_stale_sidecar(tmp_path):
    target = tmp_path / "city.tif"
    target.write_bytes(b"old map")
    sidecar = tmp_path / "city.tif.aux.xml"
    sidecar.write_text("<PAMDataset>old category names</PAMDataset>")
    output = open_file_output(str(target), plan={"test": 1}, overwrite=True)
    assembled = output.assembly_path("city.tif")
    with open(assembled, "wb") as handle:
        handle.write(b"new map")
    finish_file_output(output, assembled)
    assert target.read_bytes() == b"new map"
    assert not sidecar.exists()


def test_publishing_an_s3_file_removes_a_stale_sidecar(s3_bucket):
    from eoseg.io import storage

    target = f"{s3_bucket}/city.tif"
    fs = storage.s3_filesystem()
    fs.pipe(target, b"old map")
    fs.pipe(target + ".aux.xml", b"<PAMDataset>old</PAMDataset>")
    output = open_file_output(target, plan={"test": 1}, overwrite=True)
    assembled = output.assembly_path("city.tif")
    fs.pipe(assembled, b"new map")
    finish_file_output(output, assembled)
    assert fs.cat(target) == b"new map"
    assert not storage.exists(target + ".aux.xml")
