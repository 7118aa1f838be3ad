"""Ctrl-C (SIGINT) ends a command with one line saying what is kept, exit code 130, nothing published."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def _scene(path: Path, size: int = 4096) -> Path:
    """A 3-band uint8 GeoTIFF large enough that tiling it in 128 px chunks takes a few seconds."""
    pixels = np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8)
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32614",
        "transform": from_origin(500_000, 5_200_000, 1.0, 1.0), "tiled": True,
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)
    return path


def test_ctrl_c_keeps_finished_chunks_and_says_how_to_resume(tmp_path):
    scene, store = _scene(tmp_path / "scene.tif"), tmp_path / "scene.zarr"
    command = [str(Path(sys.executable).parent / "eoseg"), "tile", str(scene), "--out", str(store)]
    command += ["--chunk-size", "128"]
    running = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert running.stderr is not None
    seen = []
    for line in running.stderr:  # the first progress line: about 10 % of the chunks are done
        seen.append(line)
        if re.search(r"tile: \d+/1024 chunks", line):
            break
    running.send_signal(signal.SIGINT)
    _, rest = running.communicate(timeout=60)

    assert running.returncode == 130, "".join(seen) + rest
    assert rest.strip().splitlines()[-1] == (
        "interrupted: nothing was published; finished chunks are kept: run the same command again to "
        "resume (--overwrite starts afresh)"
    )
    assert "Traceback" not in rest
    assert not store.exists(), "an interrupted store must not be published"

    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    done = re.search(r"tile: (\d+) of 1024 chunks to compute \((\d+) done\)", again.stderr)
    assert done is not None, again.stderr
    assert 0 < int(done.group(2)) < 1024 and int(done.group(1)) + int(done.group(2)) == 1024
    assert store.exists()
