"""Prefect flows that chain eoseg's stages; each stage is one task driving a Dask computation.

Flow signatures repeat the same typed parameters (URIs, the stages' option models, ``cluster``,
``overwrite``) on purpose: a flow's signature is its Prefect form, so each flow declares its own. The
``duplicates`` pairs left between flow signatures (city-run / segment-scene, city-run / train-model,
tile-scene / mosaic-store / predict) are these parameter lists.
"""

import os

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "eoseg")
