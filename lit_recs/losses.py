"""Losses as pure functions of scores: `loss(pos [B, 1] or [B], neg [B, N]) -> scalar`.

Choose one in a config by import path: `--model.init_args.loss lit_recs.losses.bce`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _columns(pos: Tensor) -> Tensor:
    return pos if pos.dim() == 2 else pos[:, None]  # [B, 1]


def bpr(pos: Tensor, neg: Tensor) -> Tensor:
    """Bayesian personalised ranking: mean over pairs of -log sigmoid(s_pos - s_neg)."""
    return -F.logsigmoid(_columns(pos) - neg).mean()  # [B, N] -> scalar


def bce(pos: Tensor, neg: Tensor) -> Tensor:
    """Binary cross-entropy with sampled negatives: per user -log σ(s_pos) - Σ_n log(1 - σ(s_n))."""
    pos_term = F.softplus(-_columns(pos)).sum(1)  # [B]
    neg_term = F.softplus(neg).sum(1)  # [B]
    return (pos_term + neg_term).mean()


def hinge(pos: Tensor, neg: Tensor, margin: float = 1.0) -> Tensor:
    """Pairwise hinge (triplet) loss: mean of max(0, margin - s_pos + s_neg)."""
    return F.relu(margin - _columns(pos) + neg).mean()  # [B, N] -> scalar
