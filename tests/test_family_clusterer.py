"""The family contract for the clusterer (tests/family_contract.py)."""

from family_contract import FamilyContract


class TestClustererFamily(FamilyContract):
    family_name = "clusterer"
    num_classes = 5
    model_config = {"in_channels": 3, "num_classes": 5}
    params = {"epochs": 1, "iterations": 2, "num_classes": 5, "patch_size": 32, "batch_size": 4, "device": "cpu"}
