"""Task for the last stage of a run: describe the map as a STAC Item and list it in the catalogue."""

from __future__ import annotations

from typing import Any

from prefect import task

from eoseg.catalog.stac import catalogue_map
from tasks.run_names import named_after
from tasks.storage_stages import STORAGE_RETRIES, _retry_unless_bad_input


@task(
    name="catalogue",
    task_run_name=named_after("catalogue", "map_uri"),
    retry_condition_fn=_retry_unless_bad_input,
    **STORAGE_RETRIES,
)
def catalogue_map_task(
    map_uri: str,
    *,
    scene_uri: str,
    model_uri: str | None,
    quicklook_uri: str | None,
    scores_uri: str | None = None,
    catalog_uri: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``MAP.item.json`` beside the map and add it to ``catalog.json`` (written last in a run)."""
    return catalogue_map(
        map_uri,
        scene_uri=scene_uri,
        model_uri=model_uri,
        quicklook_uri=quicklook_uri,
        scores_uri=scores_uri,
        catalog_uri=catalog_uri,
        properties=properties,
    )
