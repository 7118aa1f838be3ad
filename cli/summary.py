"""What `eoseg run` prints at the end, and the reference class-names option of `run` and `evaluate`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["ClassNamesOption", "format_run_summary"]

# The reference's class names, an option of `evaluate` and of `run`.
ClassNamesOption = Annotated[
    str | None,
    typer.Option(
        help="Names of the reference classes: 'loveda', 'spacenet' or a JSON file {value: name}; "
        "default: REFERENCE.classes.json if present."
    ),
]


def format_run_summary(result: dict[str, Any]) -> str:
    """The lines `eoseg run` and `make demo` print at the end."""
    lines = [
        f"map:        {result['map']}",
        f"quick-look: {result['quicklook']}",
        f"model:      {result['model']}",
        f"tile store: {result['tiles']}",
        f"labels:     {result['labels']}",
    ]
    if result.get("per_tile_maps"):
        tiles = result["per_tile_maps"]
        lines.append(f"tile maps:  {len(tiles['maps'])} COGs, VRT {tiles['vrt']}, STAC {tiles['collection']}")
    if result.get("training"):
        t = result["training"]
        lines.append(
            f"training:   {t['patches']} patches, {t['seconds']} s on {t['device']}, "
            f"final loss {t['final_loss']:.4f}"
        )
    if result.get("scores"):
        from eoseg.evaluate.compare import comparison_text

        lines.append(f"scores:     {result['scores_file']}")
        if result.get("baseline"):
            lines.append(f"baseline:   {result['baseline']}  (raw-pixel k-means, same K and band statistics)")
        lines.append(comparison_text(result["scores"], result.get("baseline_scores"), model_name="map"))
    return "\n".join(lines)
