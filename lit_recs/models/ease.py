"""EASE: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

    min_B ||X - X B||_F^2 + lambda ||B||_F^2   s.t. diag(B) = 0
    closed form: P = (X^T X + lambda I)^-1,  B = I - P diag(1 / diag(P))  (so B_ij = -P_ij / P_jj)
    s(u, .) = x_u B

X is the 0/1 training matrix [U, I]. Deviations from the paper: none in the fit; at evaluation the
user's row x_u holds every known interaction (training items, plus validation items at test time),
as the paper's strong-generalisation setting does. B is dense [I, I] (I^2 floats: 1.1 GB in float32 at
the 17k items of ML-20M after filtering; use SLIM's sparse weights beyond that).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule
from lit_recs.nn.slim_screened import sparse_gram


def gram(train: Interactions) -> np.ndarray:
    """X^T X of the 0/1 training matrix as a dense float64 array [I, I]."""
    return sparse_gram(train.binary_csr()).toarray().astype(np.float64)  # [I, I], exact counts


def ease_weights(g: Tensor, l2: float) -> Tensor:
    """Gram matrix [I, I] -> EASE's B [I, I] with zero diagonal."""
    p = torch.linalg.inv(g + l2 * torch.eye(len(g), dtype=g.dtype, device=g.device))  # [I, I]
    b = -p / torch.diagonal(p)[None, :]  # [I, I]: B_ij = -P_ij / P_jj
    return b.fill_diagonal_(0.0)


class EASE(ClosedFormModule):
    """Args: l2: the ridge penalty lambda (Steck uses a few hundred on MovieLens)."""

    def __init__(self, num_users: int, num_items: int, l2: float = 500.0, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if l2 <= 0:
            raise ValueError(f"EASE needs l2 > 0 (X^T X alone is singular), got {l2}")
        self.l2 = l2
        self.register_buffer("weights", torch.zeros(num_items, num_items))  # [I, I]

    def fit_interactions(self, train: Interactions) -> None:
        g = torch.as_tensor(gram(train), device=self.weights.device)  # [I, I] float64
        self.weights.copy_(ease_weights(g, self.l2).float())

    def item_weights(self) -> Tensor:
        return self.weights  # [I, I]

    def score(self, batch: EvalBatch) -> Tensor:
        return batch.seen_rows(self.num_items) @ self.weights  # [B, I] @ [I, I] -> [B, I]
