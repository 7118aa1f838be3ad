"""``eoseg legend``: derive a legend (cluster -> class name, colour) from a small reference."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.runs import fail
from eoseg.errors import EosegError


def legend(
    label_map: Annotated[str, typer.Argument(help="Label map (COG from `eoseg run`/`mosaic`).")],
    reference: Annotated[
        str,
        typer.Argument(
            help="Reference on the map's grid: a raster of class values, or GeoJSON polygons with a "
            "`class` property (a few labelled areas are enough)."
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Legend YAML to write.")],
    ignore: Annotated[
        list[int] | None, typer.Option("--ignore", help="Reference value that is no class (repeatable).")
    ] = None,
    class_name: Annotated[
        list[str] | None,
        typer.Option("--class-name", help="VALUE=NAME for a raster reference's class (repeatable)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing legend file.")] = False,
) -> None:
    """Name every cluster after the reference class it overlaps most (majority), and write the legend.

    Clusters of one class are merged (`merge: true`); clusters with no reference pixel keep their id
    and are listed, those that do not occur in the map at all apart. Apply the legend with
    `eoseg run ... --legend legend.yaml`.
    """
    import tempfile

    from eoseg.evaluate.reference import is_vector_reference
    from eoseg.io.publish import write_text
    from eoseg.io.rasters import label_values
    from eoseg.mosaic.legend import derive_legend, legend_yaml, rasterize_classes
    from eoseg.store.lifecycle import check_file_output

    try:
        check_file_output(out, overwrite=overwrite)
        names: dict[int, str] = {}
        for text in class_name or []:
            value, _, name = text.partition("=")
            if not value.strip().isdigit() or not name.strip():
                raise EosegError(f"--class-name {text}: not VALUE=NAME; write it e.g. as 6=forest")
            names[int(value)] = name.strip()
        with tempfile.TemporaryDirectory(prefix="eoseg-legend-") as scratch:
            ignored = list(ignore or [])
            if is_vector_reference(reference):
                names = rasterize_classes(reference, label_map, f"{scratch}/classes.tif")
                reference, ignored = f"{scratch}/classes.tif", [0, *ignored]
            derived = derive_legend(label_map, reference, class_names=names, ignore_values=ignored)
    except (EosegError, FileNotFoundError, ValueError) as error:
        fail(error)
    # A cluster without reference pixels either occurs where the reference has no class, or not at all.
    present = label_values(label_map) if derived.unmatched else set()
    unreferenced = [c for c in derived.unmatched if c in present]
    absent = [c for c in derived.unmatched if c not in present]
    notes = []
    if unreferenced:
        notes.append(f"no reference pixels for clusters {unreferenced} (named cluster_<id>)")
    if absent:
        notes.append(f"clusters {absent} do not occur in the map (named cluster_<id>)")
    comment = "\n".join([f"derived from {reference} by majority overlap with {label_map}", *notes])
    write_text(out, legend_yaml(derived, comment=comment), overwrite=True)
    for cluster, (name, _) in sorted(derived.clusters.items()):
        typer.echo(f"cluster {cluster} -> {name}")
    for note in notes:
        typer.echo(note)
    typer.echo(f"legend: {out}")


def register(app: typer.Typer) -> None:
    """Add ``legend`` to the eoseg app."""
    app.command("legend")(legend)
