"""eo_models.mcl_lc."""
