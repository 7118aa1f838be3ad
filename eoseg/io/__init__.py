"""eoseg.io."""
