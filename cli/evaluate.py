"""``eoseg evaluate`` (score a label map against a reference) and ``eoseg quicklook`` (a PNG of a scene
and its map). :func:`register` adds them to the app in ``cli/main.py``."""

from __future__ import annotations

import json
from typing import Annotated, cast

import typer

from cli.runs import fail
from cli.summary import ClassNamesOption
from eoseg.errors import EosegError

__all__ = ["register"]


def evaluate(
    label_map: Annotated[str, typer.Argument(help="Label map to score (GeoTIFF from `eoseg run`/`mosaic`).")],
    reference: Annotated[
        str, typer.Argument(help="Reference raster on the same grid (any GDAL format), or GeoJSON polygons.")
    ],
    ignore: Annotated[
        list[int] | None, typer.Option("--ignore", help="Reference value to leave out (repeatable).")
    ] = None,
    matching: Annotated[
        str, typer.Option(help="Cluster -> class mapping: 'majority' (paper protocol) or 'hungarian' (1:1).")
    ] = "majority",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    class_names: ClassNamesOption = None,
) -> None:
    """Score a label map against a reference: per-class and mean F1/IoU, overall accuracy, Cohen's kappa.

    Per-class rows list their support (reference pixels); when every cluster maps to one class (the
    mapping collapsed) the text and the JSON say so ("collapsed", "warning").
    """
    import tempfile

    from eoseg.evaluate.class_names import reference_class_names
    from eoseg.evaluate.reference import is_vector_reference, rasterize_reference
    from eoseg.evaluate.scores import MappingMethod, evaluate_label_map

    if matching not in ("majority", "hungarian"):
        fail(EosegError(f"--matching must be 'majority' or 'hungarian', got {matching!r}"))
    method = cast(MappingMethod, matching)  # one of MappingMethod's values, checked above

    try:
        names = reference_class_names(reference, class_names)
        with tempfile.TemporaryDirectory(prefix="eoseg-eval-") as scratch:
            if is_vector_reference(reference):  # polygons: burn them onto the map's grid first
                reference = rasterize_reference(reference, label_map, f"{scratch}/reference.tif")
            report = evaluate_label_map(
                label_map, reference, ignore_values=tuple(ignore or ()), method=method
            ).with_class_names(names)
    except (EosegError, FileNotFoundError, ValueError) as error:
        fail(error)
    typer.echo(json.dumps(report.to_dict(), sort_keys=True) if as_json else report.to_text())


def quicklook(
    scene: Annotated[str, typer.Argument(help="The scene (GeoTIFF).")],
    label_map: Annotated[str, typer.Argument(help="Its label map (COG).")],
    out: Annotated[str, typer.Option("--out", "-o", help="PNG to write.")],
    max_size: Annotated[int, typer.Option(min=64, help="Longest side of each panel in pixels.")] = 1024,
) -> None:
    """Write a PNG with the scene and its label map side by side, in the map's class colours."""
    from eoseg.mosaic.quicklook import write_quicklook

    try:
        write_quicklook(scene, label_map, out, max_size=max_size)
    except (EosegError, FileNotFoundError, ValueError) as error:
        fail(error)
    typer.echo(f"quick-look: {out}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``quicklook`` to the eoseg app."""
    app.command()(evaluate)
    app.command()(quicklook)
