"""Models: each a RecModule subclass implementing compute_loss(batch) and score(batch)."""

from lit_recs.models.base import RecModule
from lit_recs.models.mf import MF, MFNet
from lit_recs.models.popularity import Popularity

__all__ = ["MF", "MFNet", "Popularity", "RecModule"]
