"""Popularity: recommend the items with the most training interactions to everyone.

    s(u, i) = |{u' : (u', i) in train}|

The non-personalised baseline every paper reports. It has no parameters: its counts are read from the
DataModule's training split when fitting starts and stored as a buffer (so they are in checkpoints).
"""

from __future__ import annotations

from typing import Any

import torch

from lit_recs.data.batches import EvalBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule, ItemScorer


class Popularity(ClosedFormModule):
    def __init__(self, num_users: int, num_items: int, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        self.register_buffer("counts", torch.zeros(num_items))  # [I]

    def fit_interactions(self, train: Interactions) -> None:
        counts = train.item_counts()  # [I]
        self.counts.copy_(torch.as_tensor(counts, dtype=torch.float32))

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return lambda items: self.counts[items].expand(len(batch), -1)  # [B, n]
