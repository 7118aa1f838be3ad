"""Relay bucket notifications to Prefect as ``eoseg.acquisition.created`` events.

The ``reprocess-new-acquisitions`` deployment has a trigger on that event whose resource id starts with
``eoseg.acquisition.<scenes prefix>``; each event starts a run, which maps whatever is new under the
prefix (so a missed or duplicated notification does no harm: the hourly schedule catches up, and a
second run finds nothing new).

Three ways to emit the event:

- **AWS S3 -> Lambda**: deploy this file with :func:`lambda_handler` as the handler (standard library
  only; set ``PREFECT_API_URL``, and ``PREFECT_API_KEY`` for Prefect Cloud) as the target of the bucket's
  ``s3:ObjectCreated:*`` notification, filtered on ``.tif``.
- **MinIO -> webhook**: ``python -m deployments.acquisition_events serve --port 8787`` accepts MinIO's
  webhook notifications (``MINIO_NOTIFY_WEBHOOK_ENDPOINT_<id>=http://relay:8787/``); the
  docker-compose stack in ``infra/`` wires it up.
- **By hand or from another pipeline**: ``python -m deployments.acquisition_events emit s3://bucket/key.tif``.

The event carries the scene URI, size and ETag; never credentials. It is POSTed to the Prefect API's
``/events`` endpoint (what ``prefect.events.emit_event`` does through a websocket).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import sys
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_plus

EVENT_NAME = "eoseg.acquisition.created"
RESOURCE_PREFIX = "eoseg.acquisition."
SCENE_SUFFIXES = (".tif", ".tiff")
logger = logging.getLogger("eoseg.acquisition_events")


def acquisition_event(
    scene_uri: str, *, size: int | None = None, etag: str | None = None, source: str = "manual"
) -> dict[str, Any]:
    """The event announcing ``scene_uri`` (the fields of a Prefect event, less its id and time)."""
    return {
        "event": EVENT_NAME,
        "resource": {
            "prefect.resource.id": f"{RESOURCE_PREFIX}{scene_uri}",
            "prefect.resource.name": scene_uri.rsplit("/", 1)[-1],
        },
        "payload": {"scene_uri": scene_uri, "size": size, "etag": etag, "source": source},
    }


def events_from_s3_notification(notification: dict[str, Any]) -> list[dict[str, Any]]:
    """Events for the ``*.tif``/``*.tiff`` objects created in an S3 (or MinIO) notification document."""
    events = []
    for record in notification.get("Records", []):
        if not str(record.get("eventName", "")).startswith(("ObjectCreated", "s3:ObjectCreated")):
            continue
        s3 = record.get("s3", {})
        bucket = s3.get("bucket", {}).get("name")
        key = unquote_plus(s3.get("object", {}).get("key", ""))
        name = key.rsplit("/", 1)[-1]
        if not bucket or not key.lower().endswith(SCENE_SUFFIXES) or name.startswith("."):
            continue
        events.append(
            acquisition_event(
                f"s3://{bucket}/{key}",
                size=s3.get("object", {}).get("size"),
                etag=s3.get("object", {}).get("eTag"),
                source=record.get("eventSource", "aws:s3"),
            )
        )
    return events


def _api_url(api_url: str | None) -> str:
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        try:
            from prefect.settings import PREFECT_API_URL

            url = PREFECT_API_URL.value()
        except ImportError:
            url = None
    if not url:
        raise RuntimeError(
            "set PREFECT_API_URL to the Prefect API that should receive the events "
            "(e.g. http://prefect-server:4200/api)"
        )
    return url.rstrip("/")


def emit(events: list[dict[str, Any]], *, api_url: str | None = None, timeout: float = 30) -> int:
    """POST the events to the Prefect API's ``/events`` endpoint; returns how many were sent.

    Plain HTTP (standard library only), so a Lambda function or a small relay needs no Prefect install.
    Authentication, when the API needs it, comes from the environment: ``PREFECT_API_KEY`` (Prefect
    Cloud, bearer token) or ``PREFECT_API_AUTH_STRING`` (a server behind basic auth).
    """
    if not events:
        return 0
    now = dt.datetime.now(dt.UTC).isoformat()
    body = json.dumps([{"id": str(uuid.uuid4()), "occurred": now, **event} for event in events]).encode()
    request = urllib.request.Request(
        f"{_api_url(api_url)}/events", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    if os.environ.get("PREFECT_API_KEY"):
        request.add_header("Authorization", f"Bearer {os.environ['PREFECT_API_KEY']}")
    elif os.environ.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status >= 300:
            raise RuntimeError(f"the Prefect API refused the events: HTTP {response.status}")
    for event in events:
        logger.info("emitted %s for %s", EVENT_NAME, event["payload"]["scene_uri"])
    return len(events)


def lambda_handler(event: dict[str, Any], context: Any = None) -> dict[str, int]:
    """AWS Lambda entry point for an S3 ``ObjectCreated`` notification."""
    return {"emitted": emit(events_from_s3_notification(event))}


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            document = json.loads(self.rfile.read(length) or b"{}")
            sent = emit(events_from_s3_notification(document))
        except (ValueError, KeyError) as error:
            self.send_error(400, f"not an S3 notification: {error}")
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(json.dumps({"emitted": sent}).encode())

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s - %s", self.address_string(), format % args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    emit_parser = commands.add_parser("emit", help="announce scenes by URI")
    emit_parser.add_argument("scene_uris", nargs="+")
    commands.add_parser("relay-stdin", help="read one S3/MinIO notification document from stdin")
    serve_parser = commands.add_parser("serve", help="accept MinIO webhook notifications over HTTP")
    serve_parser.add_argument("--host", default="0.0.0.0")
    serve_parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "emit":
        emit([acquisition_event(uri) for uri in args.scene_uris])
    elif args.command == "relay-stdin":
        emit(events_from_s3_notification(json.load(sys.stdin)))
    else:
        logger.info("relaying bucket notifications on %s:%d to Prefect", args.host, args.port)
        ThreadingHTTPServer((args.host, args.port), _WebhookHandler).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
