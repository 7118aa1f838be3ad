"""Prefect deployments of eoseg's flows (prefect.yaml, schedules, work pools): not built yet (issue 6)."""
