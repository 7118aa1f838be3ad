"""Prefect deployments of eoseg's flows.

- ``prefect.yaml``: the deployments (``prefect deploy --prefect-file deployments/prefect.yaml --all``);
- ``work_pools.py``: creates the ``eoseg-process``, ``eoseg-docker`` and ``eoseg-kubernetes`` work pools
  from the templates in ``work-pools/`` (``python -m deployments.work_pools``);
- ``acquisition_events.py``: relays bucket notifications as ``eoseg.acquisition.created`` events.

docs/production.md explains how they fit together.
"""
