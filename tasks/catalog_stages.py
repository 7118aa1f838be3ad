"""Task for the last stage of a run: describe the map as a STAC Item and list it in the catalogue."""

from __future__ import annotations

from eoseg.catalog.stac import catalogue_map
from tasks.storage_task import storage_task

# The plain function is the task: ``MAP.item.json`` beside the map, added to ``catalog.json`` (written
# last in a run).
catalogue_map_task = storage_task("catalogue", run_name_from="map_uri")(catalogue_map)
