"""``make demo``: the main job on a real scene from ``../shared/data`` with the embedded defaults.

Local (ephemeral) Prefect API, a local Dask cluster started for the run, local files. Prints where the
outputs are at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared-data", default=os.environ.get("EOSEG_SHARED_DATA", "../shared/data"),
                        help="folder holding the shared real scenes (default: ../shared/data)")
    parser.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")

    from eoseg.cluster import ClusterSpec
    from eoseg.config import MosaicOptions, TileOptions
    from flows.storage_flows import mosaic_flow, tile_scene_flow

    data = Path(args.shared_data)
    scene = data / "naip" / "m_4709963_se_14_1_20200831.tif"
    if not scene.exists():
        print(f"error: {scene} not found; pass --shared-data pointing at the shared data folder", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store, cog = out / "naip_2020.zarr", out / "naip_2020_nir.tif"
    started = time.perf_counter()
    tile_scene_flow(str(scene), str(store), options=TileOptions(chunk_size=512), cluster=ClusterSpec(),
                    overwrite=True)
    mosaic_flow(str(store), str(cog), options=MosaicOptions(band=4), overwrite=True)
    from rio_cogeo.cogeo import cog_validate

    valid, errors, warnings = cog_validate(str(cog), quiet=True)
    print("\n=== eoseg demo (tile -> COG round trip) ===")
    print(f"scene:        {scene}")
    print(f"tile store:   {store}")
    print(f"COG:          {cog}  (valid COG: {valid}; errors {errors}; warnings {warnings})")
    print(f"elapsed:      {time.perf_counter() - started:.1f} s")
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
