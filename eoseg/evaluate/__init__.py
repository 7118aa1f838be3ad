"""eoseg.evaluate."""
