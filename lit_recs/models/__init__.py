"""Models: each a RecModule subclass implementing compute_loss(batch) and score(batch)."""

from lit_recs.models.base import ClosedFormModule, RecModule
from lit_recs.models.bert4rec import BERT4Rec
from lit_recs.models.ease import EASE
from lit_recs.models.itemknn import ItemKNN
from lit_recs.models.mf import MF, MFNet
from lit_recs.models.popularity import Popularity
from lit_recs.models.slim import SLIM, SLIMGradient

__all__ = [
    "BERT4Rec",
    "EASE", "MF", "SLIM", "ClosedFormModule", "ItemKNN", "MFNet", "Popularity", "RecModule",
    "SLIMGradient",
]
