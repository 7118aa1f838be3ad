"""eoseg.store."""
