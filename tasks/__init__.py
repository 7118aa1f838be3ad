"""Prefect tasks: thin wrappers over the plain stage functions in :mod:`eoseg`.

Tasks pass URIs and small metadata, never arrays; tasks that touch storage retry with backoff.
"""

import os

# Lines logged by eoseg's plain functions (progress, what was written) appear in Prefect's run logs.
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")
