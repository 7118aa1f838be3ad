"""eoseg: unsupervised land-cover segmentation of large EO scenes."""

__version__ = "0.1.0"
