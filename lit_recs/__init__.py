"""lit_recs: a PyTorch Lightning research framework for recommender systems."""

__version__ = "0.1.0"
