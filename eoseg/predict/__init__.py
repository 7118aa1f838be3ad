"""eoseg.predict."""
