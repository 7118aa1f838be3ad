"""The markdown artifact that summarises a deployment run, and how the run ends (completed, or failed).

One table row per scene (status, pixels, seconds, map, STAC item, quick-look, scores), the failures
first, then the quick-looks themselves: presigned links on S3, small local PNGs embedded.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import PurePosixPath
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.objects import State
from prefect.states import Completed

from eoseg.errors import EosegError
from eoseg.io import storage

__all__ = [
    "QUICKLOOK_INLINE_BYTES",
    "QUICKLOOK_LINK_SECONDS",
    "ScenesFailedError",
    "finish_run",
    "publish_summary",
    "quicklook_link",
    "row_name",
]

# A presigned quick-look link stays valid this long (SigV4's maximum is 7 days).
QUICKLOOK_LINK_SECONDS = 7 * 24 * 3600
# Local quick-looks up to this size are embedded in the artifact (a data: URI); larger ones are named.
QUICKLOOK_INLINE_BYTES = 512 * 1024


class ScenesFailedError(EosegError, RuntimeError):
    """Some scenes of a run failed; the others were mapped and catalogued."""


def publish_summary(markdown: str, *, kind: str, key_prefix: str, title: str) -> None:
    """The run's markdown artifact, keyed by ``kind`` and a hash of ``key_prefix`` (one key per target)."""
    key = f"eoseg-{kind}-{hashlib.sha1(key_prefix.encode()).hexdigest()[:10]}"
    create_markdown_artifact(markdown, key=key, description=title)


def _format_scores(scores: dict[str, dict[str, float]] | None) -> str:
    if not scores:
        return "-"
    majority = scores.get("majority", {})
    return f"F1 {majority.get('f1', float('nan')):.3f}, OA {majority.get('oa', float('nan')):.3f} (majority)"


def quicklook_link(uri: str) -> str | None:
    """An address a browser opens for a quick-look PNG, or None.

    On S3: a presigned HTTPS (or the endpoint's HTTP) URL, valid for ``QUICKLOOK_LINK_SECONDS``; the
    artifact never holds a credential, only the signature. Local files up to ``QUICKLOOK_INLINE_BYTES``:
    the PNG itself as a ``data:`` URI. Larger local files: None (the table names the path).
    """
    if storage.is_s3(uri):
        presigned: str = storage.s3_filesystem().url(uri, expires=QUICKLOOK_LINK_SECONDS)
        return presigned
    try:
        with open(uri, "rb") as handle:
            data = handle.read(QUICKLOOK_INLINE_BYTES + 1)
    except OSError:
        return None
    if len(data) > QUICKLOOK_INLINE_BYTES:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _quicklook_cell(quicklook: str | None, link: str | None) -> str:
    if not quicklook:
        return "-"
    if not link:
        return f"`{quicklook}`"
    if link.startswith("data:"):  # embedded once, under "Quick-looks"
        return f"{PurePosixPath(quicklook).name} (below)"
    return f"[{PurePosixPath(quicklook).name}]({link})"


def row_name(row: dict[str, Any]) -> str:
    """How a summary names a row's scene: its file name, or the name of an acquisition of many tiles."""
    return str(row.get("name") or PurePosixPath(row["scene"]).name)


def _summary_row(row: dict[str, Any]) -> str:
    """One markdown table row of a run's summary."""
    failed = row["status"] == "failed"
    last = (row.get("error") or "")[:200] if failed else _format_scores(row.get("scores"))
    cells = [
        row_name(row),
        f"{row['status']} ({row['was']})",
        f"{row['pixels']:,}" if row.get("pixels") else "-",
        f"{row['seconds']:.1f}" if row.get("seconds") is not None else "-",
        row.get("map") or "-",
        row.get("item") or "-",
        _quicklook_cell(row.get("quicklook"), row.get("quicklook_link")),
        last,
    ]
    return "| " + " | ".join(cells) + " |"


def _summary_markdown(title: str, lines: list[str], rows: list[dict[str, Any]]) -> str:
    """The run's artifact: title, context lines, one table row per scene, then the quick-looks themselves."""
    parts = [f"# {title}", "", *lines, ""]
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        parts += [f"**{len(failed)} of {len(rows)} scene(s) failed:**", ""]
        parts += [f"- `{row['scene']}`: {(row.get('error') or '')[:500]}" for row in failed]
        parts += [""]
    if rows:
        parts += [
            "| scene | status | pixels | seconds | map | STAC item | quick-look | scores |",
            "|---|---|---:|---:|---|---|---|---|",
            *[_summary_row(row) for row in rows],
        ]
    images = [row for row in rows if row.get("quicklook_link")]
    if images:
        parts += ["", "## Quick-looks", ""]
        for row in images:
            name = row_name(row)
            parts += [f"**{name}**", "", f"![quick-look of {name}]({row['quicklook_link']})", ""]
        if any(storage.is_s3(row["quicklook"]) for row in images):
            days = QUICKLOOK_LINK_SECONDS // 86400
            parts += [f"(Quick-look links are presigned and expire {days} days after the run.)"]
    return "\n".join(parts) + "\n"


def _titled(title: str, rows: list[dict[str, Any]]) -> str:
    """The title, led by the failure count when scenes failed (the artifact list shows titles)."""
    failed = sum(row["status"] == "failed" for row in rows)
    return f"FAILED {failed} of {len(rows)} scene(s): {title}" if failed else title


def finish_run(
    kind: str,
    title: str,
    lines: list[str],
    rows: list[dict[str, Any]],
    key_prefix: str,
    result: dict[str, Any],
) -> State[dict[str, Any]]:
    """Publish the run's artifact; fail the run if a scene failed, else complete it with a summary message.

    Raises:
        ScenesFailedError: some scenes failed (the others were mapped and catalogued).
    """
    title = _titled(title, rows)
    publish_summary(_summary_markdown(title, lines, rows), kind=kind, key_prefix=key_prefix, title=title)
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        others = "; the others were mapped" if len(failed) < len(rows) else ""
        raise ScenesFailedError(
            f"{len(failed)} of {len(rows)} scene(s) failed{others} (see the run's artifact): "
            + "; ".join(f"{row['scene']}: {row['error']}" for row in failed)
        )
    return Completed(message=title, data=result)
