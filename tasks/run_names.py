"""Task-run names that say which stage ran on which scene: ``tile[m_4709963_se_14_1_20200831]``.

Prefect's default names (``tile-78b``) do not say which scene a run was about. Each task passes
``task_run_name=named_after("tile", "scene_uri")``; Prefect calls the returned function with the task's
parameters when the run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

# Longest first: "NAME.model.pt" must lose ".model.pt", not only ".pt".
_OUTPUT_SUFFIXES = (
    ".tiles.zarr",
    ".labels.zarr",
    ".scores.json",
    ".item.json",
    ".model.pt",
    ".zarr",
    ".tiff",
    ".tif",
    ".png",
    ".pt",
)


def scene_label(uri: Any) -> str:
    """The scene name in a URI of the scene or of one of its outputs: ``.../NAME.tiles.zarr`` -> ``NAME``."""
    if isinstance(uri, (list, tuple)):
        names = [scene_label(item) for item in uri]
        return names[0] if len(names) == 1 else f"{len(names)} scenes"
    name = PurePosixPath(str(uri).rstrip("/")).name
    for suffix in _OUTPUT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def named_after(stage: str, parameter: str) -> Callable[..., str]:
    """A ``task_run_name`` callable: ``STAGE[scene]``, the scene taken from the task's ``parameter``.

    ``stage`` may name other parameters in braces (``"train-{family}"`` -> ``train-clusterer[naip-v1]``).
    """

    def task_run_name(parameters: dict[str, Any]) -> str:
        value = parameters.get(parameter)
        name = stage.format(**parameters) if "{" in stage else stage
        return f"{name}[{scene_label(value)}]" if value else name

    task_run_name.__name__ = f"{stage}_run_name"
    return task_run_name
