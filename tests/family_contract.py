"""One contract, every model family: build, forward shapes, train, checkpoint round trip, predict a store.

Like segmentation_models.pytorch's ``tests/models/base.py``: a family's test file subclasses
:class:`FamilyContract`, names the family and a CPU-sized configuration, and inherits every test. A new
family gets the whole suite from a few lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from conftest import write_geotiff

from eo_models.checkpoint import load_checkpoint, save_checkpoint, validate_checkpoint
from eo_models.clusterer.train import ArrayPatchSource
from eo_models.family import ModelFamily, get_family
from eo_models.predict import load_predictor
from eo_models.training import Progress


class LabelledArrays:
    """In-memory labelled patches (all labels valid), for families that fine-tune."""

    def __init__(self, patches: ArrayPatchSource, num_classes: int) -> None:
        self.patches = patches
        rng = np.random.default_rng(0)
        self.labels = rng.integers(
            0, num_classes, size=(len(patches), patches.patch_size, patches.patch_size)
        )

    def __len__(self) -> int:
        return len(self.patches)

    def read(self, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return self.patches.read(indices), self.labels[list(indices)]


class FamilyContract:
    """What every registered model family must do; subclasses set the class attributes."""

    family_name: ClassVar[str]
    in_channels: ClassVar[int] = 3
    model_config: ClassVar[dict[str, Any]]  # a small predicting model
    params: ClassVar[dict[str, Any]]  # CPU-sized training hyper-parameters
    finetune_params: ClassVar[dict[str, Any]] = {}
    num_classes: ClassVar[int]
    tile: ClassVar[int] = 64  # side of the test scene's chunks

    @pytest.fixture(scope="class")
    @classmethod
    def family(cls) -> ModelFamily:
        return get_family(cls.family_name)

    @pytest.fixture(scope="class")
    @classmethod
    def scene(cls) -> np.ndarray:
        rng = np.random.default_rng(11)
        return (rng.standard_normal((cls.in_channels, 96, 128)) * 20 + 100).astype(np.float32)

    @pytest.fixture(scope="class")
    @classmethod
    def checkpoint(cls, family: ModelFamily, scene: np.ndarray) -> dict[str, Any]:
        """A checkpoint that predicts: trained (and fine-tuned, for families that need it) on ``scene``."""
        from eo_models.params import params_from_dict

        mean, std = scene.mean(axis=(1, 2)).tolist(), scene.std(axis=(1, 2)).tolist()
        normalised = (scene - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[
            :, None, None
        ]
        patches = ArrayPatchSource(normalised, patch_size=cls.params["patch_size"])
        reports: list[Progress] = []
        params = params_from_dict(family.training_params, cls.params)
        ckpt = family.train(
            patches,
            in_channels=cls.in_channels,
            params=params,
            band_mean=mean,
            band_std=std,
            on_progress=reports.append,
        )
        assert reports and all(np.isfinite(r.metrics["loss"]) for r in reports)
        assert ckpt["history"]["loss"] and ckpt["family"] == family.name
        if family.finetune is not None:
            tuning = params_from_dict(
                family.finetune_params, {**cls.finetune_params, "num_classes": cls.num_classes}
            )
            ckpt = family.finetune(ckpt, LabelledArrays(patches, cls.num_classes), params=tuning)
        return ckpt

    def test_is_registered_with_a_halo_and_typed_params(self, family: ModelFamily) -> None:
        assert family.name == self.family_name and family.halo >= 0
        assert family.training_params.__dataclass_params__.frozen  # type: ignore[attr-defined]
        family.training_params()  # every hyper-parameter has a default

    def test_build_and_forward_shapes(self, family: ModelFamily) -> None:
        model = family.build(self.model_config).eval()
        with torch.no_grad():
            out = model(torch.randn(2, self.in_channels, 64, 48))
        assert out.shape == (2, self.num_classes, 64, 48)

    def test_checkpoint_round_trip_with_weights_only(
        self, checkpoint: dict[str, Any], scene: np.ndarray, tmp_path: Path
    ) -> None:
        validate_checkpoint(checkpoint)
        path = tmp_path / "model.pt"
        save_checkpoint(path, checkpoint)
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert raw["family"] == self.family_name and raw["num_classes"] == self.num_classes
        reloaded = load_checkpoint(path)
        for name, tensor in checkpoint["state_dict"].items():
            torch.testing.assert_close(reloaded["state_dict"][name], tensor, rtol=0, atol=0)
        block = scene[:, :48, :64]
        np.testing.assert_array_equal(
            load_predictor(path, device="cpu").predict(block),
            load_predictor(checkpoint, device="cpu").predict(block),
        )

    def test_predictor_labels_and_nodata(self, checkpoint: dict[str, Any], scene: np.ndarray) -> None:
        predictor = load_predictor(checkpoint, device="cpu")
        assert predictor.halo == get_family(self.family_name).halo_for(checkpoint)
        valid = np.ones(scene.shape[1:], dtype=bool)
        valid[:4] = False
        labels = predictor.predict(scene, valid)
        assert labels.shape == scene.shape[1:] and labels.dtype == np.uint8
        assert labels.max() < self.num_classes
        with pytest.raises(ValueError, match="bands"):
            predictor.predict(scene[:1] if self.in_channels > 1 else np.concatenate([scene, scene]))

    def test_scene_context_equals_whole_scene_inference(
        self, family: ModelFamily, checkpoint: dict[str, Any], scene: np.ndarray
    ) -> None:
        predictor = load_predictor(checkpoint, device="cpu")
        if family.scene_context is None:
            with pytest.raises(ValueError, match="no scene-wide context"):
                predictor.context_partial(scene, None, (slice(None), slice(None)))
            return
        partials = []
        for row in range(0, scene.shape[1], 48):  # tiles with halos, their own pixels as ``inner``
            for col in range(0, scene.shape[2], 64):
                r0, c0 = max(0, row - family.halo), max(0, col - family.halo)
                r1, c1 = (
                    min(scene.shape[1], row + 48 + family.halo),
                    min(scene.shape[2], col + 64 + family.halo),
                )
                inner = (slice(row - r0, row - r0 + 48), slice(col - c0, col - c0 + 64))
                partials.append(predictor.context_partial(scene[:, r0:r1, c0:c1], None, inner))
        context = predictor.combine_context(partials)
        whole = predictor.combine_context(
            [predictor.context_partial(scene, None, (slice(None), slice(None)))]
        )
        # float32 convolutions of a tile and of the whole scene differ in the last bits; the reduction
        # itself is exact (float64), so the contexts agree to float32 precision.
        np.testing.assert_allclose(np.asarray(context), np.asarray(whole), rtol=1e-5, atol=1e-6)
        agreement = (predictor.predict(scene, context=context) == predictor.predict(scene)).mean()
        assert agreement >= 0.999

    def test_predict_stage_on_a_small_store(
        self, checkpoint: dict[str, Any], scene: np.ndarray, tmp_path: Path
    ) -> None:
        from eoseg.mosaic.colors import NODATA_LABEL
        from eoseg.predict.stage import predict_store
        from eoseg.store.layout import open_data_array, read_store_info
        from eoseg.tile.stage import tile_scene

        pixels = np.clip(scene, 1, 250).astype(np.uint8)
        pixels[:, :3, :] = 0  # a nodata strip
        tif = write_geotiff(tmp_path / "scene.tif", pixels, nodata=0)
        store, model, labels = tmp_path / "scene.zarr", tmp_path / "model.pt", tmp_path / "labels.zarr"
        tile_scene(str(tif), str(store), chunk_size=self.tile, show_progress=False)
        save_checkpoint(model, checkpoint)
        info = predict_store(str(store), str(model), str(labels), show_progress=False)
        assert info.complete and info.model["family"] == self.family_name
        assert info.model["halo"] == get_family(self.family_name).halo_for(checkpoint)
        out = np.asarray(open_data_array(str(labels), read_store_info(str(labels)))[...])
        assert out.shape[-2:] == scene.shape[1:]
        assert (out[..., :3, :] == NODATA_LABEL).all()
        assert (out[..., 3:, :] < self.num_classes).all()


def contract_for(
    family_name: str,
    *,
    num_classes: int,
    params: dict[str, Any],
    finetune_params: dict[str, Any] | None = None,
) -> type[FamilyContract]:
    """The contract's test class for one family: CPU training ``params`` (and fine-tuning ones, for a
    family that fine-tunes) for a small model predicting ``num_classes`` classes from 3 bands.

    Assign it to a ``Test...`` name in the family's test file; pytest collects it there.
    """
    attributes: dict[str, Any] = {
        "family_name": family_name,
        "num_classes": num_classes,
        "model_config": {"in_channels": FamilyContract.in_channels, "num_classes": num_classes},
        "params": {**params, "device": "cpu"},
    }
    if finetune_params is not None:
        attributes["finetune_params"] = {**finetune_params, "device": "cpu"}
    return type(f"Test{family_name.title().replace('-', '')}Family", (FamilyContract,), attributes)
