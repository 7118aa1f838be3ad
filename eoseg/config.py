"""Validated options of each stage (pydantic), shared by the CLI, the flows and the deployments.

Every field has a description, so the Prefect UI renders a documented form for flow parameters.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eoseg.mosaic.cog import MAX_SINGLE_COG_PIXELS
from eoseg.predict.refine import RefineOptions
from eoseg.tile.stage import DEFAULT_CHUNK_SIZE
from eoseg.train.options import TrainingOptions, finetune_options, training_options

__all__ = [
    "ClustererTrainingOptions",
    "EvaluateOptions",
    "MclLcFinetuneOptions",
    "MclLcTrainingOptions",
    "MosaicOptions",
    "PredictOptions",
    "RefineOptions",
    "TileOptions",
    "TrainingOptions",
]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TileOptions(_Options):
    """How a scene becomes a Zarr tile store."""

    chunk_size: int = Field(
        default=DEFAULT_CHUNK_SIZE, ge=16, le=16384,
        description="Chunk edge in pixels (all bands per chunk). Memory per Dask task is about "
        "chunk_size^2 x bands x bytes per pixel.",
    )  # fmt: skip
    allow_ungeoreferenced: bool = Field(
        default=False, description="Accept a raster without CRS; outputs are then pixel grids without CRS."
    )
    warp_gcps: bool = Field(
        default=False,
        description="Warp a scene georeferenced only by ground control points (GCPs) onto a regular grid "
        "(GDAL's warped VRT, nearest neighbour); without it such a scene is refused.",
    )
    resample: Literal["nearest", "bilinear", "cubic", "average", "mode"] | None = Field(
        default=None,
        description="Tiles of a many-file scene on another grid (CRS, pixel size, origin) are warped onto "
        "the first tile's grid with this GDAL resampling method; empty: such tiles are refused.",
    )


class MosaicOptions(_Options):
    """How a store becomes a Cloud-Optimized GeoTIFF."""

    band: int | None = Field(
        default=None,
        ge=1,
        description="1-based band to write from an image store (label stores: leave empty).",
    )
    overview_resampling: Literal["nearest", "mode"] = Field(
        default="nearest", description="Overview resampling: nearest (fast) or mode (majority class)."
    )
    max_pixels: int = Field(
        default=MAX_SINGLE_COG_PIXELS, ge=1,
        description="Largest map written as one COG, in pixels (default 4 gigapixels); a larger area needs "
        "per-tile maps.",
    )  # fmt: skip


# Training options per model family, derived from the family's hyper-parameter dataclass in eo_models
# (declared once there; see eoseg.train.options). Module-level names so that flows can type their
# parameters with them (the Prefect UI renders a form from the schema).
ClustererTrainingOptions = training_options("clusterer")
MclLcTrainingOptions = training_options("mcl-lc")
MclLcFinetuneOptions = finetune_options("mcl-lc")


class PredictOptions(_Options):
    """Tiled inference over a tile store."""

    halo: int | None = Field(
        default=None, ge=0,
        description="Context pixels read around each chunk (overlap-tile); "
        "empty: the model family's default.",
    )  # fmt: skip
    attention_pooling: Literal["scene", "tile"] = Field(
        default="scene",
        description="Scene-wide context of families that have one (the clusterer's channel attention): "
        "'scene' reduces it over the whole scene in a first pass (tiled output equals whole-scene output), "
        "'tile' pools per tile (one pass, faster).",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Arithmetic: 'auto' (bf16 where the CPU has AMX/AVX512-BF16 or the GPU supports bf16, "
        "else fp32), 'fp32', or 'bf16' (bfloat16 autocast, channels_last). Recorded in the label store "
        "and the map's tags.",
    )
    refine: RefineOptions = Field(
        default_factory=RefineOptions,
        description="Superpixel (SLIC) majority-vote refinement of the labels; off by default.",
    )


class EvaluateOptions(_Options):
    """How a run's map is scored against a reference (``eoseg run --reference``)."""

    ignore: list[int] = Field(
        default_factory=list,
        description="Reference values that are not classes (e.g. LoveDA's 0 = no-data); not evaluated.",
    )
    class_names: str | None = Field(
        default=None,
        description="Names of the reference classes: a built-in table ('loveda', 'spacenet') or a JSON file "
        "{value: name}; empty: REFERENCE.classes.json beside the reference, if any.",
    )
    baseline: Literal["kmeans"] | None = Field(
        default=None,
        description="Also map the scene with raw-pixel k-means (same K and band statistics as the model) "
        "and score that map the same way, as MAP.kmeans.tif and MAP.kmeans.scores.json.",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the baseline's pixel sample and k-means.")


def check_run_model(model: str, *, weights_uri: str | None, training: TrainingOptions) -> None:
    """Refuse a segmentation run (``segment-scene``, ``eoseg run``) that cannot get its model: a family
    that must be fine-tuned first without ``weights_uri``, or training options of another family.

    Cheap (no torch), so the CLI asks before anything starts and the flow asks again.

    Raises:
        ConfigurationError: What is wrong and what to run instead.
        KeyError: ``model`` is not a registered family (:func:`eo_models.family.get_family`).
    """
    from eo_models.family import get_family
    from eoseg.errors import ConfigurationError

    family = get_family(model)
    # finetune_params, not finetune: the latter imports the family's torch code (seconds).
    if weights_uri is None and family.finetune_params is not None:
        raise ConfigurationError(
            f"{model} needs pre-trained, fine-tuned weights: run `eoseg train {model}` and "
            "`eoseg finetune`, then pass --weights"
        )
    if weights_uri is None and training.params_class is not family.training_params:
        raise ConfigurationError(f"the training options given are not those of the {model} model family")
