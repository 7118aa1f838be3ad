"""All workers busy on a city of small tiles (issue 10): one task pool over the chunks of every tile.

The real NAIP 2009 scene (934 x 724 x 4) is cut into 3 x 3 GeoTIFFs; they are tiled into one store
(``eoseg.tile.stage.tile_scene`` with the list), one small clusterer is trained on that store (one
training run for the whole set), and the predict stage runs on a LocalCluster of 2 single-threaded
worker processes while Dask's task stream is recorded. Reported per worker: busy seconds (sum of its
task durations) over the predict stage's wall time, and the tasks it ran.

Run: ``python benchmarks/bench_city_workers.py [--out-dir /tmp/eoseg-city] [--chunk 128]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).resolve().parent / "results"
NAIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "naip" / "m_4709963_se_14_1_20090818.tif"


def cut_scene(scene: Path, folder: Path, pieces: int) -> list[str]:
    """``pieces x pieces`` GeoTIFFs of ``scene`` (edges where they fall), row-major."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(scene) as source:
        rows = [round(i * source.height / pieces) for i in range(pieces + 1)]
        cols = [round(i * source.width / pieces) for i in range(pieces + 1)]
        for i in range(pieces):
            for j in range(pieces):
                window = Window(cols[j], rows[i], cols[j + 1] - cols[j], rows[i + 1] - rows[i])
                profile = dict(source.profile, width=window.width, height=window.height)
                profile.update(transform=source.window_transform(window), blockxsize=128, blockysize=128)
                profile["photometric"] = "MINISBLACK"  # 4 data bands, not RGB + alpha
                path = folder / f"tile_{i}{j}.tif"
                with rasterio.open(path, "w", **profile) as out:
                    out.write(source.read(window=window))
                paths.append(str(path))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="/tmp/eoseg-city-bench")
    parser.add_argument("--chunk", type=int, default=128)
    args = parser.parse_args()
    from distributed import Client, LocalCluster, get_task_stream

    from eoseg.predict.stage import predict_store
    from eoseg.tile.stage import tile_scene
    from eoseg.train.stage import train_on_stores

    out = Path(args.out_dir)
    tiles = cut_scene(NAIP, out / "tiles", 3)
    params = {"epochs": 1, "iterations": 3, "batch_size": 4, "patch_size": 32}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, silence_logs=logging.WARNING
        ) as cluster,
        Client(cluster) as client,
    ):
        tile_scene(tiles, str(out / "city.zarr"), chunk_size=args.chunk, overwrite=True, client=client)
        train_on_stores("clusterer", [str(out / "city.zarr")], str(out / "city.pt"), params=params,
                        max_patches=16, overwrite=True)  # fmt: skip
        started = time.perf_counter()
        with get_task_stream(client) as stream:
            predict_store(str(out / "city.zarr"), str(out / "city.pt"), str(out / "city.labels.zarr"),
                          overwrite=True, client=client)  # fmt: skip
        wall = time.perf_counter() - started
    busy: dict[str, float] = defaultdict(float)
    tasks: dict[str, int] = defaultdict(int)
    for record in stream.data:
        for span in record.get("startstops", ()):
            if span["action"] == "compute":
                busy[record["worker"]] += span["stop"] - span["start"]
        tasks[record["worker"]] += 1
    rows = [
        {"worker": worker, "tasks": tasks[worker], "busy_s": round(busy[worker], 2),
         "utilisation": round(busy[worker] / wall, 3)}
        for worker in sorted(busy)
    ]  # fmt: skip
    result = {
        "tiles": len(tiles), "chunk": args.chunk, "predict_wall_s": round(wall, 2), "workers": rows,
        "load_average_after": [round(v, 1) for v in os.getloadavg()],
        "note": "2 cores shared with other jobs; busy = Dask compute spans of the worker's tasks",
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "city_workers.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
