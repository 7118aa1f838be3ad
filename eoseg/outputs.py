"""Where a segmentation run puts its outputs: everything beside the map, named after it."""

from __future__ import annotations

from dataclasses import dataclass

from eoseg.io import storage


@dataclass(frozen=True)
class RunOutputs:
    """The files of one run for the map ``MAP.tif``.

    Attributes:
        cog: the label map (Cloud-Optimized GeoTIFF).
        tiles: the scene's tile store, ``MAP.tiles.zarr``.
        labels: the label store, ``MAP.labels.zarr``.
        model: the checkpoint trained by the run, ``MAP.model.pt``.
        quicklook: scene and map side by side, ``MAP.png``.
        scores: evaluation against a reference, ``MAP.scores.json``.
        baseline: the raw-pixel k-means baseline map (``--baseline kmeans``), ``MAP.kmeans.tif``.
        baseline_scores: its evaluation, ``MAP.kmeans.scores.json``.
        tile_maps: the folder of per-input-tile maps (``--per-tile-maps``) that a deployment run of a scene
            of many tiles writes: ``MAP.tile-maps/`` (one COG per tile, a VRT, a quick-look, a STAC
            Collection).
    """

    cog: str
    tiles: str
    labels: str
    model: str
    quicklook: str
    scores: str
    baseline: str
    baseline_scores: str
    tile_maps: str

    @classmethod
    def for_map(cls, cog_uri: str) -> RunOutputs:
        cog = storage.normalise_uri(cog_uri)
        stem = cog[: -len(".tif")] if cog.lower().endswith(".tif") else cog
        stem = stem[: -len(".tiff")] if stem.lower().endswith(".tiff") else stem
        return cls(
            cog=cog,
            tiles=f"{stem}.tiles.zarr",
            labels=f"{stem}.labels.zarr",
            model=f"{stem}.model.pt",
            quicklook=f"{stem}.png",
            scores=f"{stem}.scores.json",
            baseline=f"{stem}.kmeans.tif",
            baseline_scores=f"{stem}.kmeans.scores.json",
            tile_maps=f"{stem}.tile-maps",
        )
