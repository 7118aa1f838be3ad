"""eoseg.train."""
