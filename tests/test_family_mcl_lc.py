"""The family contract for mCL-LC (tests/family_contract.py): pre-train, fine-tune, then predict."""

from typing import Any, ClassVar

from family_contract import FamilyContract


class TestMclLcFamily(FamilyContract):
    family_name = "mcl-lc"
    num_classes = 3
    model_config: ClassVar[dict[str, Any]] = {"in_channels": 3, "num_classes": 3}
    params: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 2,
        "patch_size": 32,
        "roi_size": 4,
        "num_rois": 2,
        "max_steps_per_epoch": 1,
        "device": "cpu",
    }
    finetune_params: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 2,
        "max_steps_per_epoch": 1,
        "device": "cpu",
    }
