"""Record a stage called directly as a flow run in a configured Prefect server, without importing Prefect.

Why: importing Prefect (its client alone pulls in the settings, schemas and engine context) takes ~1.5-2 s
on an idle 2-core machine and ~4 s under load, and the flow engine adds ~1 s of state calls and log
shipping around the run: most of the ~3.75 s an `eoseg tile` of a small scene took when a server was
configured (benchmarks/results/command_overhead.md), against ~0.6 s of work. Prefect's REST API is
plain JSON over HTTP, so the run is recorded with the standard library's HTTP client in four round
trips for a short run (create the flow by name, create the flow run in state Running with its
parameters, post the log lines in batches, set the final state), a few milliseconds each on a local
server.

What the server then shows: a flow run of the same flow as ``--prefect`` runs (``tile-scene``,
``mosaic-store``), with its parameters, start and end time, final state (Completed, Failed with the error
message, or Crashed on an interrupt) and eoseg's log lines. What it does not have: task runs, retries,
and the concurrency limits a full flow holds (``eoseg --prefect`` runs the flow for those).

Endpoints used (Prefect 3 REST API, the same on Prefect Cloud): ``POST /flows/``, ``POST /flow_runs/``,
``POST /logs/``, ``POST /flow_runs/{id}/set_state``. Authentication: ``PREFECT_API_KEY`` (bearer token,
Prefect Cloud) or ``PREFECT_API_AUTH_STRING`` (basic auth of a self-hosted server).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import inspect
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from eoseg.errors import EosegError

__all__ = ["PrefectApi", "check_reachable", "recorded_in_prefect"]

logger = logging.getLogger("eoseg.cli")

# Seconds to wait for one API call. A local server answers in milliseconds; the wait is long because a
# temporary SQLite-backed server on a 2-core machine at load 13 can stall for seconds.
API_TIMEOUT_S = 30.0
# Seconds between two batches of a running command's log lines (Prefect's own handler: 2 s).
LOG_BATCH_S = 5.0


@dataclass(frozen=True)
class PrefectApi:
    """A Prefect API to record runs in: ``url`` (e.g. ``http://127.0.0.1:4200/api``) and its credentials."""

    url: str
    key: str | None = None
    auth_string: str | None = None

    def call(self, path: str, body: Any = None, *, method: str = "POST") -> Any:
        """``method`` (POST with ``body`` as JSON, or GET) on ``url + path``; returns the decoded JSON
        answer (``None`` when empty).

        Raises:
            OSError: The server could not be reached or answered with an HTTP error
                (``urllib.error.URLError``/``HTTPError`` are ``OSError``).
        """
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        elif self.auth_string:
            headers["Authorization"] = "Basic " + base64.b64encode(self.auth_string.encode()).decode()
        data = None if method == "GET" else json.dumps(body).encode()
        url = self.url.rstrip("/") + path
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=API_TIMEOUT_S) as answer:
            content = answer.read()
        return json.loads(content) if content else None

    def ui_url(self, flow_run_id: str) -> str:
        """The flow run's page in Prefect's UI (a local server serves it beside ``/api``)."""
        import os

        base = os.environ.get("PREFECT_UI_URL") or self.url.rstrip("/").removesuffix("/api")
        return f"{base}/runs/flow-run/{flow_run_id}"


def check_reachable(api: PrefectApi) -> None:
    """Refuse to start a Prefect flow against an API that does not answer (``GET /health``), in one line
    instead of Prefect's traceback after its client's retries.

    Raises:
        EosegError: The API could not be reached or refused the call.
    """
    try:
        api.call("/health", method="GET")
    except OSError as error:
        raise EosegError(
            f"{api.url}: the Prefect API does not answer ({_reason(error)}); start the server or fix "
            "PREFECT_API_URL, or pass --no-prefect to run without Prefect"
        ) from error


def _json_value(value: Any) -> Any:
    """A parameter as Prefect stores it: option models as their JSON fields, other values as they are."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value if isinstance(value, str | int | float | bool | list | dict | type(None)) else str(value)


def _reason(error: OSError) -> str:
    """What went wrong in one line: the server's answer to a refused call, else the connection error."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code}: {error.read()[:200].decode(errors='replace')}"
    return str(getattr(error, "reason", error))


class _RunLogs(logging.Handler):
    """Sends eoseg's log records of one run to Prefect in batches: at most every ``LOG_BATCH_S`` seconds
    while it runs (a long run's logs show as it goes), and the rest when it ends (:meth:`flush`)."""

    def __init__(self, api: PrefectApi, flow_run_id: str) -> None:
        super().__init__(level=logging.INFO)
        self.api, self.flow_run_id = api, flow_run_id
        self.entries: list[dict[str, Any]] = []
        self.sent_at = time.monotonic()

    def emit(self, record: logging.LogRecord) -> None:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat()
        self.entries.append(
            {"name": record.name, "level": record.levelno, "message": record.getMessage(),
             "timestamp": when, "flow_run_id": self.flow_run_id}
        )  # fmt: skip
        if time.monotonic() - self.sent_at > LOG_BATCH_S:
            with contextlib.suppress(OSError):  # kept, and sent with the next batch
                self.flush()

    def flush(self) -> None:
        """Send the records kept so far (one call).

        Raises:
            OSError: The server could not be reached; the records are kept.
        """
        if self.entries:
            self.api.call("/logs/", self.entries)
            self.entries = []
        self.sent_at = time.monotonic()


def recorded_in_prefect(
    flow_name: str, function: Callable[..., dict[str, Any]], api: PrefectApi
) -> Callable[..., dict[str, Any]]:
    """``function`` (a stage called directly, :mod:`cli.direct`) that also records its run in Prefect.

    The flow run (flow ``flow_name``, the call's arguments as its parameters) is created in state Running
    before the work starts, so an unreachable server refuses the command before anything is written;
    eoseg's log lines (logger ``eoseg``) and the final state are sent when the work ends. A failure to
    send those is logged as a warning: the output is written by then.

    Raises:
        EosegError: The Prefect API could not be reached to create the run (nothing was done).
    """
    signature = inspect.signature(function)

    def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        bound = signature.bind(*args, **kwargs)
        parameters = {name: _json_value(value) for name, value in bound.arguments.items()}
        try:
            flow = api.call("/flows/", {"name": flow_name})
            flow_run = api.call(
                "/flow_runs/",
                {"flow_id": flow["id"], "parameters": parameters, "tags": ["eoseg", "direct"],
                 "state": {"type": "RUNNING", "name": "Running"}},
            )  # fmt: skip
        except OSError as error:
            raise EosegError(
                f"{api.url}: the Prefect API did not record the run ({_reason(error)}); check the server "
                "and PREFECT_API_URL, or pass --no-prefect to run without recording it"
            ) from error
        flow_run_id = str(flow_run["id"])
        from cli.direct import log_to_terminal

        log_to_terminal()
        eoseg_logger = logging.getLogger("eoseg")
        logs = _RunLogs(api, flow_run_id)
        eoseg_logger.addHandler(logs)
        logger.info("Prefect flow run %r of %r: %s", flow_run["name"], flow_name, api.ui_url(flow_run_id))
        state: dict[str, str | None] = {"type": "CRASHED", "name": "Crashed", "message": "interrupted"}
        try:
            result = function(*args, **kwargs)
            state = {"type": "COMPLETED", "name": "Completed", "message": None}
            return result
        except Exception as error:
            state = {"type": "FAILED", "name": "Failed", "message": f"{type(error).__name__}: {error}"}
            raise
        finally:
            eoseg_logger.removeHandler(logs)
            try:
                logs.flush()
                api.call(f"/flow_runs/{flow_run_id}/set_state", {"state": state})
            except OSError as error:
                logger.warning("Prefect flow run %s not updated (%s)", flow_run_id, _reason(error))

    return run
