"""eoseg.scene."""
