"""Which tile stores a model is trained on: stores of one sensor, and stores that can be reused.

No Prefect here; the flows call these to decide what to tile and what to train on.
"""

from __future__ import annotations

from collections.abc import Sequence

from eoseg.errors import BandCountError, IncompleteStoreError, SceneNotFoundError
from eoseg.io import storage
from eoseg.store.layout import StoreInfo, read_store_info

__all__ = ["read_same_band_stores", "reusable_tile_store"]


def reusable_tile_store(store_uri: str, scene_uri: str) -> bool:
    """Whether ``store_uri`` is a finished image store tiled from ``scene_uri``."""
    if not storage.exists(store_uri):
        return False
    try:
        info = read_store_info(store_uri, require_complete=False)
    except IncompleteStoreError:
        return False
    return bool(
        info.complete
        and info.kind == "image"
        and storage.normalise_uri(info.source_uri) == storage.normalise_uri(scene_uri)
    )


def read_same_band_stores(store_uris: Sequence[str]) -> list[StoreInfo]:
    """The infos of finished image stores that all have the same band count.

    Raises:
        BandCountError: naming the first store whose band count differs (or that is not an image store).
    """
    if not store_uris:
        raise SceneNotFoundError("no tile store given: pass at least one STORE.zarr (from `eoseg tile`)")
    infos = [read_store_info(uri) for uri in store_uris]
    first = infos[0]
    for uri, info in zip(store_uris, infos, strict=True):
        if info.kind != "image":
            raise BandCountError(f"{uri}: a {info.kind} store; training needs image stores from `eoseg tile`")
        if info.band_count != first.band_count:
            raise BandCountError(
                f"{uri}: has {info.band_count} band(s) but {store_uris[0]} has {first.band_count}; every "
                "training store must have the same bands (one network input). Train on stores of one "
                "sensor, or convert the scenes to common bands before tiling them."
            )
    return infos
