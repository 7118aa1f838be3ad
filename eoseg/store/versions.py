"""Which store layouts this eoseg reads: the ``layout_version`` of a store's ``eoseg`` attribute.

The history of the layout is in docs/store-layout.md. A store is read when its version lies between
:data:`OLDEST_READABLE_LAYOUT_VERSION` and :data:`LAYOUT_VERSION`; a store without a version (written
before versions were checked) is read when its attributes hold every field this eoseg needs, else it is
refused with the command that re-tiles it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eoseg.errors import IncompleteStoreError

LAYOUT_VERSION = 2
"""The layout this eoseg writes."""

OLDEST_READABLE_LAYOUT_VERSION = 1
"""The oldest layout this eoseg still reads unchanged."""

REQUIRED_FIELDS = (
    "kind", "height", "width", "band_count", "dtype", "chunk_rows", "chunk_cols", "crs_wkt", "transform",
    "nodata", "band_names", "band_descriptions", "source_uri",
)  # fmt: skip


class StoreLayoutError(IncompleteStoreError):
    """The store was written with a layout this eoseg does not read (older, newer, or unversioned)."""


def retile_hint(uri: str, source_uri: object) -> str:
    """The command that rewrites the store at ``uri`` in the current layout."""
    scene = source_uri if isinstance(source_uri, str) and source_uri else "SCENE"
    return f"re-tile it with `eoseg tile {scene} --out {uri} --overwrite`"


def check_layout_version(uri: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``eoseg`` attributes of the store at ``uri``, checked readable and stamped with their version.

    Args:
        uri: the store (named in error messages).
        attrs: the store group's ``eoseg`` attribute as read.

    Returns:
        A copy of ``attrs`` with ``layout_version`` set (unversioned, compatible stores get
        :data:`OLDEST_READABLE_LAYOUT_VERSION`).

    Raises:
        StoreLayoutError: the version is newer or older than this eoseg reads, or an unversioned store
            lacks a field; the message says how to re-tile it.
    """
    values = dict(attrs)
    version = values.get("layout_version")
    hint = retile_hint(uri, values.get("source_uri"))
    if version is None:
        missing = [name for name in REQUIRED_FIELDS if name not in values]
        if missing:
            raise StoreLayoutError(
                f"{uri}: the store predates versioned layouts and lacks {', '.join(missing)}; {hint}."
            )
        version = OLDEST_READABLE_LAYOUT_VERSION
    if not isinstance(version, int) or version > LAYOUT_VERSION:
        raise StoreLayoutError(
            f"{uri}: the store has layout version {version!r}, newer than the {LAYOUT_VERSION} this eoseg "
            f"reads; upgrade eoseg, or {hint}."
        )
    if version < OLDEST_READABLE_LAYOUT_VERSION:
        raise StoreLayoutError(
            f"{uri}: the store has layout version {version}, older than the {OLDEST_READABLE_LAYOUT_VERSION} "
            f"this eoseg reads; {hint}."
        )
    values["layout_version"] = version
    return values
