"""eoseg.catalog."""
