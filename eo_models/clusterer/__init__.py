"""eo_models.clusterer."""
