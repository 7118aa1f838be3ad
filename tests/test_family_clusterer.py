"""The family contract for the clusterer (tests/family_contract.py)."""

from typing import Any, ClassVar

from family_contract import FamilyContract


class TestClustererFamily(FamilyContract):
    family_name = "clusterer"
    num_classes = 5
    model_config: ClassVar[dict[str, Any]] = {"in_channels": 3, "num_classes": 5}
    params: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "iterations": 2,
        "num_classes": 5,
        "patch_size": 32,
        "batch_size": 4,
        "device": "cpu",
    }
