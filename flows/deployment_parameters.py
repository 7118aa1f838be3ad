"""Parameters of the deployment flows: values filled at deploy time, the weights choice, S3 credentials.

``deployments/prefect.yaml`` fills some parameters from the environment when ``prefect deploy`` runs;
:func:`configured` refuses the values that show it was unset. Credentials never travel as parameters:
they come from the worker's environment (``AWS_*``) or from a Prefect Secret block whose *name* is one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from typing import Literal, overload

from eoseg.errors import ConfigurationError

__all__ = ["DEPLOYMENT_VARIABLES", "TRAIN_PER_SCENE", "configured", "s3_credentials", "weights_choice"]

_ENV_PLACEHOLDER = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")
# The parameters deployments/prefect.yaml fills from the environment at deploy time (`{{ $NAME }}`). Prefect
# turns an unset variable into "", so an empty value of one of these names the variable to set.
DEPLOYMENT_VARIABLES = {
    "scenes_prefix": "EOSEG_SCENES_PREFIX",
    "output_prefix": "EOSEG_OUTPUT_PREFIX",
    "weights_uri": "EOSEG_WEIGHTS_URI",
    "legend_uri": "EOSEG_LEGEND_URI",
}
# The explicit weights_uri that means "train the clusterer on each scene" (never an empty value).
TRAIN_PER_SCENE = "train"
_CREDENTIAL_KEYS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region_name": "AWS_REGION",
}


def _how_to_set(name: str) -> str:
    variable = DEPLOYMENT_VARIABLES.get(name)
    with_run = f"pass it with the run (`prefect deployment run ... -p {name}=...`)"
    if variable:
        return f"set {variable} and run `prefect deploy` again, or {with_run}"
    return with_run


@overload
def configured(value: str | None, name: str, *, required: Literal[True]) -> str: ...
@overload
def configured(value: str | None, name: str, *, required: bool = False) -> str | None: ...


def configured(value: str | None, name: str, *, required: bool = False) -> str | None:
    """A parameter's value, None when empty; refuses a ``{{ $VAR }}`` left unresolved at deploy time.

    Args:
        value: the parameter's value as the run received it.
        name: the parameter's name (the error names it, and the environment variable that fills it).
        required: refuse an empty value instead of returning None.

    Raises:
        ConfigurationError: required and empty (``prefect deploy`` turns an unset ``{{ $NAME }}`` into ""),
            or a placeholder left unresolved.
    """
    if value is None or not str(value).strip():
        if required:
            raise ConfigurationError(f"{name} is empty, and this run needs it: {_how_to_set(name)}.")
        return None
    match = _ENV_PLACEHOLDER.search(str(value))
    if match:
        raise ConfigurationError(
            f"{name} is {value!r}: the environment variable {match[1]} was not set when this deployment was "
            f"created. Set it and run `prefect deploy` again, or pass {name} with the run."
        )
    return str(value).strip()


def weights_choice(value: str | None) -> str | None:
    """The checkpoint to apply, or None for the explicit choice ``train`` (train on each scene).

    Raises:
        ConfigurationError: the value is empty: it must name a checkpoint or say ``train``.
    """
    if value is None or not str(value).strip():
        variable = DEPLOYMENT_VARIABLES["weights_uri"]
        raise ConfigurationError(
            f"weights_uri is empty: set {variable} to a published checkpoint (e.g. "
            f"s3://bucket/models/v1.pt) or to '{TRAIN_PER_SCENE}' to train a model on each scene, and run "
            f"`prefect deploy` again; or pass `-p weights_uri=...` with the run."
        )
    weights = configured(value, "weights_uri", required=True)
    return None if weights == TRAIN_PER_SCENE else weights


@contextlib.contextmanager
def s3_credentials(secret_block: str | None) -> Iterator[None]:
    """Use the S3 credentials held by a Prefect Secret block for the duration (default: the environment).

    The block holds a JSON object with ``aws_access_key_id``, ``aws_secret_access_key`` and optionally
    ``aws_session_token``, ``endpoint_url``, ``region_name``. Values go into this process's environment
    (which a local Dask cluster started inside inherits) and are never logged; a remote Dask cluster needs
    the same credentials in its own environment (infra/k8s mounts them from a Kubernetes Secret).
    """
    if not secret_block:
        yield
        return
    import s3fs
    from prefect.blocks.system import Secret

    try:
        block = Secret.load(secret_block)
    except ValueError as error:  # Prefect: "Unable to find block document named ..."
        raise ConfigurationError(
            f"credentials_secret names the Secret block {secret_block!r}, which the Prefect server does not "
            f"hold: create it (docs/production.md, 'Object storage') or pass another credentials_secret"
        ) from error
    # Prefect types load() as "the block, or a coroutine in async code"; the flows are synchronous.
    assert isinstance(block, Secret)
    value = block.get()
    values = json.loads(value) if isinstance(value, str) else dict(value)
    unknown = set(values) - set(_CREDENTIAL_KEYS)
    if unknown or "aws_secret_access_key" not in values:
        raise ConfigurationError(
            f"the Secret block {secret_block!r} must hold a JSON object with "
            f"aws_access_key_id and aws_secret_access_key (unexpected keys: {sorted(unknown)})"
        )
    saved = {env: os.environ.get(env) for env in _CREDENTIAL_KEYS.values()}
    os.environ.update({_CREDENTIAL_KEYS[key]: str(item) for key, item in values.items()})
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        yield
    finally:
        for env, previous in saved.items():
            if previous is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = previous
        s3fs.S3FileSystem.clear_instance_cache()
