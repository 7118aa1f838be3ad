"""The family contract for mCL-LC (tests/family_contract.py): pre-train, fine-tune, then predict."""

from family_contract import contract_for

TestMclLcFamily = contract_for(
    "mcl-lc",
    num_classes=3,
    params={
        "epochs": 1,
        "batch_size": 2,
        "patch_size": 32,
        "roi_size": 4,
        "num_rois": 2,
        "max_steps_per_epoch": 1,
    },
    finetune_params={"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1},
)
