"""ItemKNN: item-based collaborative filtering (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS
2004).

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)      (cosine of the items' user columns)
    s(u, j)   = sum over i in N_k(j) of x_ui sim(i, j)     N_k(j): the k items most similar to j

Deviations: none. The neighbourhoods are stored as a dense [I, I] matrix with k non-zeros per column
(the shape SLIM's weights have), so scoring is one matmul.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule
from lit_recs.models.ease import gram


def knn_similarity(g: Tensor, k: int, shrink: float = 0.0) -> Tensor:
    """Gram matrix [I, I] -> cosine similarities, top-k per column kept, zero diagonal."""
    norms = torch.sqrt(torch.diagonal(g))  # [I]
    sim = g / (norms[:, None] * norms[None, :] + shrink).clamp(min=1e-12)  # [I, I]
    sim.fill_diagonal_(0.0)
    k = min(k, len(g) - 1)
    top = sim.topk(k, dim=0).indices  # [k, I]: the neighbours of each column j
    keep = torch.zeros_like(sim, dtype=torch.bool).scatter_(0, top, True)  # [I, I]
    return sim * keep


class ItemKNN(ClosedFormModule):
    """Args: k: neighbours kept per item; shrink: added to the cosine's denominator."""

    def __init__(self, num_users: int, num_items: int, k: int = 100, shrink: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.shrink = k, shrink
        self.register_buffer("similarity", torch.zeros(num_items, num_items))  # [I, I]

    def fit_interactions(self, train: Interactions) -> None:
        g = torch.as_tensor(gram(train).astype(np.float32), device=self.similarity.device)
        self.similarity.copy_(knn_similarity(g, self.k, self.shrink))

    def item_weights(self) -> Tensor:
        return self.similarity  # [I, I]

    def score(self, batch: EvalBatch) -> Tensor:
        return batch.seen_rows(self.num_items) @ self.similarity  # [B, I] @ [I, I] -> [B, I]
