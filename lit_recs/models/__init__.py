"""Models: each a RecModule subclass implementing compute_loss(batch) and score(batch)."""

from lit_recs.models.base import ClosedFormModule, RecModule
from lit_recs.models.bert4rec import BERT4Rec, BERT4RecNet
from lit_recs.models.ease import EASE
from lit_recs.models.features import FeatureModule
from lit_recs.models.ffm import FFM
from lit_recs.models.fm import FM
from lit_recs.models.ials import IALS, IALSNet
from lit_recs.models.itemknn import ItemKNN
from lit_recs.models.mf import MF, MFNet
from lit_recs.models.neumf import NeuMF, NeuMFNet
from lit_recs.models.popularity import Popularity
from lit_recs.models.sasrec import SASRec, SASRecNet
from lit_recs.models.sequential import SequenceModule
from lit_recs.models.slim import SLIM, SLIMGradient
from lit_recs.models.two_tower import TowerConfig, TwoTower
from lit_recs.nn.two_tower import TwoTowerNet

__all__ = [
    "BERT4Rec", "BERT4RecNet", "EASE", "FFM", "FM", "ClosedFormModule", "FeatureModule", "IALS",
    "IALSNet", "ItemKNN", "NeuMF", "NeuMFNet", "MF", "MFNet", "Popularity", "RecModule", "SASRec",
    "SASRecNet", "SequenceModule", "SLIM", "SLIMGradient", "TowerConfig", "TwoTower", "TwoTowerNet",
]
