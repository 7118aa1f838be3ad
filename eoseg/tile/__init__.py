"""eoseg.tile."""
