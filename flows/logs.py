"""One logging set-up for every way eoseg runs: the CLI, deployed flow runs, and their ``--watch``.

eoseg logs its story (stage starts, chunk progress every ~10 %, training loss, the Dask dashboard link,
the outputs) through the standard ``eoseg`` logger. Left alone, that logger inherits the root logger's
WARNING level, so none of it reaches Prefect when a worker starts a flow run; and Prefect's
``PREFECT_LOGGING_EXTRA_LOGGERS=eoseg`` only attaches its API handler, it does not set a level. Calling
:func:`configure_logging` once at the start of a run fixes both, whatever the worker's environment:

- the ``eoseg`` logger logs at INFO (DEBUG with ``verbose``);
- Prefect's run-log (API) handler receives eoseg's records, so they show in the run's logs, the UI and
  ``prefect deployment run --watch``; it is attached once, however often this is called;
- Dask's own INFO chatter (``distributed.*``, ``tornado``, ``bokeh``) is kept at WARNING, here and in the
  worker processes of Dask clusters started afterwards (through the ``DASK_LOGGING__*`` environment);
- a failure is logged once: the flow run's logger logs the traceback, and Prefect's engine, which logs
  the same traceback again when the run's process exits, logs only its one-line message;
- a refusal of bad input (an :class:`eoseg.errors.EosegError`) is logged without any traceback unless
  ``verbose``: it is an expected outcome whose message says what to do, and the CLI prints it as its one
  ``error:`` line. (The CLI refuses what it can check before a flow starts, so then no Prefect line at
  all is printed; see ``cli.runs.preflight_scene``.)

This module does not import Prefect at import time; it uses Prefect's logging configuration only when
Prefect has set it up in this process.
"""

from __future__ import annotations

import logging
import os
import sys

EOSEG_LOGGER = "eoseg"
# Libraries whose INFO lines drown a run's own: kept at WARNING unless verbose.
QUIET_LOGGERS = ("distributed", "tornado", "bokeh", "httpx", "asyncio")
# Prefect copies the handlers of this logger to every logger named in PREFECT_LOGGING_EXTRA_LOGGERS.
_PREFECT_EXTRA = "prefect.extra"
# Where Prefect logs a failed flow run's traceback a second time: the run's own logger (the flow engine's
# "Engine execution exited with unexpected exception") and the flow-run process's engine logger.
_SECOND_TRACEBACK_LOGGERS = ("prefect.flow_runs", "prefect.engine")


def configure_logging(verbose: bool = False) -> logging.Logger:
    """Make eoseg's INFO lines reach the terminal and the Prefect run logs; quiet Dask's chatter.

    Idempotent: a second call neither duplicates handlers nor changes anything else.

    Args:
        verbose: log eoseg's DEBUG lines as well, and leave the libraries' INFO lines on.

    Returns:
        The ``eoseg`` logger.
    """
    eoseg = logging.getLogger(EOSEG_LOGGER)
    eoseg.setLevel(logging.DEBUG if verbose else logging.INFO)
    library_level = logging.INFO if verbose else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    for name in list(logging.root.manager.loggerDict):  # distributed sets levels on some of its children
        if name.startswith("distributed."):
            logging.getLogger(name).setLevel(library_level)
    # Worker processes of Dask clusters started from here read their log levels from the environment.
    level_name = logging.getLevelName(library_level).lower()
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", level_name)
    os.environ.setdefault("DASK_LOGGING__TORNADO", "critical")
    if "dask.config" in sys.modules:  # read the environment already: distributed's import would set INFO
        import dask.config

        dask.config.set({"logging.distributed": level_name, "logging.tornado": "critical"})
    _attach_prefect_run_log_handlers(eoseg)
    for name in _SECOND_TRACEBACK_LOGGERS:
        prefect_logger = logging.getLogger(name)
        if not any(isinstance(existing, _TracebackOnce) for existing in prefect_logger.filters):
            prefect_logger.addFilter(_TracebackOnce())
    for name in _REFUSAL_LOGGERS:
        prefect_logger = logging.getLogger(name)
        for existing in [f for f in prefect_logger.filters if isinstance(f, _RefusalWithoutTraceback)]:
            prefect_logger.removeFilter(existing)
        if not verbose:
            prefect_logger.addFilter(_RefusalWithoutTraceback())
    return eoseg


# Where Prefect logs a task's or flow's exception with its traceback.
_REFUSAL_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


class _RefusalWithoutTraceback(logging.Filter):
    """Log an eoseg refusal (an ``EosegError``) as its one-line message, without Prefect's traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from eoseg.errors import EosegError

        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, EosegError):
            record.msg = f"{type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


class _TracebackOnce(logging.Filter):
    """Drop the second copy of a failed flow run's traceback, keeping the engine's one-line message.

    When a flow run fails, Prefect's flow engine logs "Encountered exception during execution" with the
    traceback (to the run's logs and the terminal), then re-raises, and logs "Engine execution exited with
    unexpected exception" with the same traceback again (to both as well). Installed by
    :func:`configure_logging`, i.e. once the flow function runs, whose exceptions the first message covers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "exited with unexpected exception" in record.getMessage():
            from eoseg.errors import EosegError

            error = record.exc_info[1]
            # A refusal's message was logged above without a traceback (_RefusalWithoutTraceback).
            where = (
                "its message is above"
                if isinstance(error, EosegError)
                else "traceback in the flow run's log above"
            )
            record.msg = f"{record.getMessage()} ({type(error).__name__}; {where})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _attach_prefect_run_log_handlers(logger: logging.Logger) -> None:
    """Give ``logger`` exactly the handlers Prefect gives its extra loggers (the run-log API handler).

    Prefect's ``setup_logging`` may run more than once in a process and then creates new handler objects;
    stale copies of Prefect's API handler are replaced rather than kept beside the new ones, so that no
    line is sent twice. eoseg records still propagate to the root logger, whose console handler prints
    them once in the terminal.
    """
    import sys

    if "prefect" not in sys.modules:  # Prefect not in use here: nothing to attach to
        return
    try:
        from prefect.logging.handlers import APILogHandler
    except ImportError:
        return
    extra_handlers = logging.getLogger(_PREFECT_EXTRA).handlers
    wanted = [handler for handler in extra_handlers if isinstance(handler, APILogHandler)]
    if not wanted:  # Prefect's logging is not set up in this process (yet): nothing to copy
        return
    for handler in list(logger.handlers):
        if isinstance(handler, APILogHandler) and handler not in wanted:
            logger.removeHandler(handler)
    for handler in wanted:
        if handler not in logger.handlers:
            logger.addHandler(handler)
