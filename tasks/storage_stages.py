"""Tasks for the stages that move pixels between storage formats: tile and mosaic."""

from __future__ import annotations

from dataclasses import asdict

from prefect import task
from prefect.tasks import exponential_backoff

from eoseg.compute.cluster import connect
from eoseg.errors import EosegError
from eoseg.mosaic.cog import mosaic_to_cog
from eoseg.scene.inspect import inspect_scene
from eoseg.tile.stage import tile_scene
from tasks.run_names import named_after

# Storage hiccups (an S3 503, a dropped connection) are worth retrying; bad input is not.
STORAGE_RETRIES = dict(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5
)


def _retry_unless_bad_input(task, task_run, state) -> bool:
    try:
        state.result()
    except EosegError:
        return False
    except Exception:
        return True
    return False


@task(
    name="inspect-scene",
    task_run_name=named_after("inspect-scene", "scene_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def inspect_scene_task(scene_uri: str, *, allow_ungeoreferenced: bool) -> dict:
    """Validate a scene before any cluster or output exists; returns its description."""
    return inspect_scene(scene_uri, allow_ungeoreferenced=allow_ungeoreferenced).to_dict()


@task(
    name="tile",
    task_run_name=named_after("tile", "scene_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def tile_task(
    scene_uri: str,
    store_uri: str,
    *,
    chunk_size: int,
    overwrite: bool,
    allow_ungeoreferenced: bool,
    scheduler_address: str | None,
) -> dict:
    """Tile a scene into a Zarr store on the Dask cluster; returns the store's metadata."""
    with connect(scheduler_address) as client:
        info = tile_scene(
            scene_uri,
            store_uri,
            chunk_size=chunk_size,
            overwrite=overwrite,
            allow_ungeoreferenced=allow_ungeoreferenced,
            client=client,
        )
    return info.to_attrs()


@task(
    name="mosaic",
    task_run_name=named_after("mosaic", "cog_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def mosaic_task(
    store_uri: str,
    cog_uri: str,
    *,
    band: int | None,
    overwrite: bool,
    overview_resampling: str,
) -> dict:
    """Write one band of a store as a Cloud-Optimized GeoTIFF; returns a summary."""
    return asdict(
        mosaic_to_cog(
            store_uri, cog_uri, band=band, overwrite=overwrite, overview_resampling=overview_resampling
        )
    )
