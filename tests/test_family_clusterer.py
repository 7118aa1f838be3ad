"""The family contract for the clusterer (tests/family_contract.py)."""

from family_contract import contract_for

TestClustererFamily = contract_for(
    "clusterer",
    num_classes=5,
    params={"epochs": 1, "iterations": 2, "num_classes": 5, "patch_size": 32, "batch_size": 4},
)
