"""Prefect flows that chain eoseg's stages; each stage is one task driving a Dask computation."""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")
