"""eoseg.mosaic."""
