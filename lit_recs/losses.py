"""Losses as plain callables of scores; a model takes one as its `loss` argument.

Three families, by what they read:

- `PairLoss`: `loss(pos [B, 1] or [B], neg [B, N]) -> scalar`: `bce`, `bpr`, `hinge` / `Hinge`,
  `sampled_softmax` (MF, NeuMF, two-tower with sampled negatives);
- `InBatchSoftmax`: the [B, C] logits of a batch of positive pairs against every candidate in it
  (two-tower retrieval; `in_batch_softmax` is its function);
- `CatalogueLoss`: `loss(query [M, D], table [I, D], bias [I], labels [M]) -> scalar`, a softmax
  or binary objective over the item catalogue scored as query @ table.T + bias: `full_ce`,
  `SampledCE`, `SampledBCE`, `GBCE` (sequence models).

A config names a function by import path (`loss: lit_recs.losses.bce`) or a loss class with its
arguments (`loss: {class_path: lit_recs.losses.Hinge, init_args: {margin: 0.5}}`). The aliases
below are `Callable[..., Any]` on purpose: it is the type under which the config parser accepts
both forms.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_recs.runtime import check_memory

PairLoss = Callable[..., Any]  # (pos [B, 1] or [B], neg [B, N]) -> scalar
CatalogueLoss = Callable[..., Any]  # (query [M, D], table [I, D], bias [I], labels [M]) -> scalar


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


class Hinge:
    """`hinge` with a margin other than 1, for configs: `class_path: lit_recs.losses.Hinge`."""

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = margin

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        return hinge(pos, neg, self.margin)


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


class InBatchSoftmax:
    """`in_batch_softmax` as a model's loss, with how its candidate set is built.

    Args:
        logq_correction: subtract log of each candidate's expected count (the model computes it
            from the data's sampling probabilities).
        gather_across_devices: the candidates of every process (all_gather with gradients), not
            only this process's batch.
    """

    def __init__(self, logq_correction: bool = False, gather_across_devices: bool = False) -> None:
        self.logq_correction, self.gather_across_devices = logq_correction, gather_across_devices

    def __call__(self, logits: Tensor, targets: Tensor, row_items: Tensor, column_items: Tensor,
                 log_q: Tensor | None = None) -> Tensor:
        return in_batch_softmax(logits, targets, row_items, column_items, log_q)


def full_ce(query: Tensor, table: Tensor, bias: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of a softmax over the whole catalogue: logits = query @ table.T + bias
    [M, I], labels [M] item indices. Refuses before allocating when the logits, their softmax and
    its gradient (3 x M x I floats) exceed the memory available."""
    cells = query.shape[0] * table.shape[0]
    if cells * 12 > 1 << 30 and query.device.type == "cpu":  # large enough to be worth a check
        check_memory("full_ce", 3 * cells * query.element_size(),
                     f"3 [M, I] float matrices at M = {query.shape[0]:,} positions, I = "
                     f"{table.shape[0]:,} items", "Use a sampled softmax: loss class_path "
                     "lit_recs.losses.SampledCE (init_args num_sampled), or smaller batches.")
    return F.cross_entropy(torch.addmm(bias, query, table.T), labels)


class SampledCE:
    """Cross-entropy of a softmax over [target, K negatives]: the K negatives are drawn uniformly
    and shared by the batch, their logits corrected by log Q (uniform Q: the same constant for
    every negative, log(K / I)), and a negative equal to a row's target is masked out of that row.

    For catalogues whose full [M, I] logits do not fit; with K << I it trains the same ranking.
    """

    def __init__(self, num_sampled: int = 1000) -> None:
        if num_sampled < 1:
            raise ValueError(f"SampledCE: num_sampled must be >= 1, got {num_sampled}")
        self.num_sampled = num_sampled

    def __call__(self, query: Tensor, table: Tensor, bias: Tensor, labels: Tensor) -> Tensor:
        num_items = len(table)
        negatives = torch.randint(0, num_items, (self.num_sampled,), device=query.device)  # [K]
        pos = (query * table[labels]).sum(-1, keepdim=True) + bias[labels, None]  # [M, 1]
        neg = query @ table[negatives].T + bias[negatives]  # [M, K]
        neg = neg - math.log(self.num_sampled / num_items)  # log Q correction
        neg = neg.masked_fill(negatives[None, :] == labels[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1)  # [M, 1 + K]
        return F.cross_entropy(logits, torch.zeros_like(labels))


def other_items(labels: Tensor, k: int, num_items: int) -> Tensor:
    """k items per row drawn uniformly (with replacement) from the num_items - 1 items other than
    the row's label: labels [M] -> [M, K]."""
    shift = torch.randint(1, num_items, (len(labels), k), device=labels.device)  # [M, K] in 1..I-1
    return (labels[:, None] + shift) % num_items


def catalogue_logits(query: Tensor, table: Tensor, bias: Tensor, items: Tensor) -> Tensor:
    """query [M, D] scored against its own items [M, K]: logits [M, K]. Through the full [M, I]
    product when that is no larger than gathering [M, K, D] item vectors (K * D >= I)."""
    if items.shape[1] * query.shape[1] >= len(table):
        return torch.addmm(bias, query, table.T).gather(1, items)  # [M, I] -> [M, K]
    return torch.bmm(table[items], query[:, :, None])[..., 0] + bias[items]  # [M, K, D] -> [M, K]


class SampledBCE:
    """Binary cross-entropy of each position's target against `num_negatives` items drawn
    uniformly per position from the other I - 1 items (SASRec's loss with 1 negative, Kang &
    McAuley 2018):

        loss = mean over positions of  -beta log sigma(s_pos) - sum_k log(1 - sigma(s_k))

    with beta = 1 here (`GBCE` sets it). Summed over the negatives as SASRec and `bce` do.
    """

    def __init__(self, num_negatives: int = 1) -> None:
        if num_negatives < 1:
            raise ValueError(f"{type(self).__name__}: num_negatives must be >= 1, got "
                             f"{num_negatives}")
        self.num_negatives = num_negatives

    def beta(self, num_items: int) -> float:
        """The positive term's weight: 1 (plain binary cross-entropy)."""
        return 1.0

    def __call__(self, query: Tensor, table: Tensor, bias: Tensor, labels: Tensor) -> Tensor:
        num_items = len(table)
        if self.num_negatives > num_items - 1:
            raise ValueError(f"{type(self).__name__}: num_negatives={self.num_negatives} exceeds "
                             f"the {num_items - 1} items other than a target")
        negatives = other_items(labels, self.num_negatives, num_items)  # [M, K]
        pos = (query * table[labels]).sum(-1) + bias[labels]  # [M]
        neg = catalogue_logits(query, table, bias, negatives)  # [M, K]
        beta = self.beta(num_items)
        return (beta * F.softplus(-pos) + F.softplus(neg).sum(1)).mean()


class GBCE(SampledBCE):
    """gBCE (Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential Recommendation
    Trained with Negative Sampling", RecSys 2023): `SampledBCE` with the positive's probability
    raised to beta, sigma(s_pos)^beta, which undoes the overconfidence that sampling negatives
    causes:

        alpha = K / (I - 1)  (the sampling rate),   beta = alpha (t (1 - 1/alpha) + 1/alpha)

    t = 0 is plain BCE (beta = 1), t = 1 the fully calibrated beta = alpha. The paper's defaults:
    256 negatives, t = 0.75. Its code averages over the K + 1 logits; summed here over the
    negatives, a constant factor that Adam's steps do not see.
    """

    def __init__(self, num_negatives: int = 256, t: float = 0.75) -> None:
        super().__init__(num_negatives)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"GBCE: t must be in [0, 1], got {t}")
        self.t = t

    def beta(self, num_items: int) -> float:
        alpha = self.num_negatives / (num_items - 1)
        return alpha * (self.t * (1 - 1 / alpha) + 1 / alpha)
