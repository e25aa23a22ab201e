"""Losses as pure functions of scores.

Sampled-negative losses: `loss(pos [B, 1] or [B], neg [B, N]) -> scalar` (`bce`, `bpr`, `hinge`,
`sampled_softmax`); choose one in a config by import path:
`--model.init_args.loss lit_recs.losses.bce`. `in_batch_softmax` takes the [B, C] logits of a batch
of positive pairs against every candidate in it (two-tower retrieval).
"""

from __future__ import annotations

import torch
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


def sampled_softmax(pos: Tensor, neg: Tensor) -> Tensor:
    """Sampled softmax (DSSM): per row -log exp(s_pos) / (exp(s_pos) + Σ_n exp(s_n)).

    Scores already carry the temperature (gamma R(Q, D)); the positive is column 0 of [pos, neg].
    """
    logits = torch.cat([_columns(pos), neg], dim=1)  # [B, 1 + N]
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def in_batch_softmax(
    logits: Tensor,
    targets: Tensor,
    row_items: Tensor,
    column_items: Tensor,
    log_q: Tensor | None = None,
) -> Tensor:
    """Full-product softmax over a batch of positive pairs: each row's positive against every
    other column (the other rows' positives, then any extra negatives).

    logits [B, C]: scaled similarities of the B queries with the C candidate items;
    targets [B]: column of each row's own positive; row_items [B] / column_items [C]: item ids.
    A column holding the row's positive item anywhere but at its target (the same item twice in
    the batch: an accidental hit) is left out of that row's softmax. log_q [C]: log of each
    candidate's expected count in the candidate set; subtracted from every logit (the logQ
    correction of sampling bias, Yi et al. 2019).
    """
    if log_q is not None:
        logits = logits - log_q[None, :]  # [B, C]
    hits = row_items[:, None] == column_items[None, :]  # [B, C]
    rows = torch.arange(len(targets), device=logits.device)
    hits[rows, targets] = False
    logits = logits.masked_fill(hits, float("-inf"))
    return F.cross_entropy(logits, targets)
