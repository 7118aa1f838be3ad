"""Names of reference class values, so that reports say "4 water" rather than "4".

Where names come from, in order: an explicit ``--class-names`` (a built-in table's name, or a JSON file
``{"1": "background", ...}``), else a JSON sidecar beside the reference (``REFERENCE.classes.json``,
same format), else none. The built-in tables are those of the labelled scenes the project documents
(``../shared/data``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from eoseg.errors import ConfigurationError

__all__ = ["BUILTIN_CLASS_NAMES", "reference_class_names"]

# LoveDA (Wang et al., NeurIPS 2021 Datasets track; the label values of its masks): 0 is no-data.
LOVEDA_CLASS_NAMES: dict[int, str] = {
    1: "background",
    2: "building",
    3: "road",
    4: "water",
    5: "barren",
    6: "forest",
    7: "agriculture",
}
# SpaceNet footprints as eoseg burns them (eoseg.evaluate.reference.rasterize_reference).
SPACENET_CLASS_NAMES: dict[int, str] = {0: "rest", 255: "building"}

BUILTIN_CLASS_NAMES: dict[str, dict[int, str]] = {
    "loveda": LOVEDA_CLASS_NAMES,
    "spacenet": SPACENET_CLASS_NAMES,
}

SIDECAR_SUFFIX = ".classes.json"


def reference_class_names(reference: str | os.PathLike[str], spec: str | None = None) -> dict[int, str]:
    """The names of the reference's class values (empty when none are known).

    Args:
        reference: The reference raster (local path) or GeoJSON.
        spec: ``None`` (the sidecar, if there is one), a key of :data:`BUILTIN_CLASS_NAMES`
            (``"loveda"``), or a JSON file mapping values to names.

    Returns:
        ``{value: name}``.

    Raises:
        ConfigurationError: ``spec`` is neither a built-in table nor a readable JSON object of names.
    """
    if spec is not None:
        if spec.lower() in BUILTIN_CLASS_NAMES:
            return dict(BUILTIN_CLASS_NAMES[spec.lower()])
        return _read_names_file(Path(spec))
    sidecar = Path(os.fspath(reference) + SIDECAR_SUFFIX)
    return _read_names_file(sidecar) if sidecar.is_file() else {}


def _read_names_file(path: Path) -> dict[int, str]:
    try:
        document = json.loads(path.read_text())
        return {int(value): str(name) for value, name in document.items()}
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigurationError(
            f"{path}: not class names ({error}); give one of {sorted(BUILTIN_CLASS_NAMES)} or a JSON "
            'object like {"1": "background", "2": "building"}'
        ) from error
