"""Plain-PyTorch models for eoseg: architectures, losses, training loops, checkpoints, prediction.

This package depends on torch and numpy only, so that it can be imported on a GPU box that has
nothing else installed. Modules are imported explicitly (``from eo_models.clusterer.model import ...``);
this file stays import-free so that ``import eo_models`` is cheap.

Modules:
    clusterer: the single-scene clusterer of Saha et al. (2021), Table 1.
    clusterer_losses: its pseudo-labels, clustering loss (Eq. 2) and shuffled contrastive loss (Eq. 3).
    train_clusterer: Algorithm 1, and an in-memory ``PatchSource`` for tests and demos.
    checkpoint: the one checkpoint format shared by every model family.
    registry: model family name -> how to build the module, and its inference halo.
    predict: ``load_predictor`` and ``Predictor`` (raw pixel block -> uint8 labels).
"""
