"""eoseg.compute."""
