"""Full-ranking top-K recommendation metrics: HR, Recall, NDCG, MRR, Precision and Coverage.

Evaluation is "a matmul and a count": the caller scores every item for a batch of users
(``scores [B, I]``), sets the items that must not be ranked (seen in training, not a candidate)
to ``-inf`` (`exclude_seen`), and passes the held-out relevant items as (row, item) pairs
(``targets [2, T]``, as `EvalBatch` holds them; a bool mask ``[B, I]`` is accepted too).
No Python loop runs over users or items.

Tie policy (pessimistic)
------------------------
Positions are 0-based. The position of a target item ``t`` with score ``s_t`` is

    #{non-target items j with s_j >= s_t}
  + #{other targets ranked before t, targets ordered among themselves by score descending,
      equal scores broken by item index ascending}.

A non-target tied with a target is always ranked ahead of it, so a model that scores everything
equally gets no credit from ties and a constant model never gets lucky. Excluded (``-inf``)
items never rank ahead of a finite-scored target; they count only when the target's own score
is ``-inf`` (targets should never be excluded, but if one is, it lands behind every non-target).

Per user with ``n >= 1`` targets, ``hits@K`` is the number of targets with position ``< K`` and

* ``hr@K``        = 1 if ``hits@K > 0`` else 0
* ``recall@K``    = ``hits@K / n``
* ``precision@K`` = ``hits@K / K``
* ``ndcg@K``      = sum over hit targets of ``1 / log2(p + 2)``, divided by the ideal DCG
  ``sum_{i < min(n, K)} 1 / log2(i + 2)``
* ``mrr@K``       = ``1 / (p_min + 1)`` if the best-placed target's position ``p_min < K`` else 0
* ``coverage@K``  = fraction of the catalogue appearing in at least one counted user's top-K list
  (``torch.topk`` over the scores, ``-inf`` entries ignored; ties broken as ``topk`` does).

Reported values are weighted means over users (``sum(weight * value) / sum(weight)``). Rows
without a target count as weight 0. All states are float64 sums (``dist_reduce_fx="sum"``), so
results are exact under DDP as long as each evaluation user is counted on exactly one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchmetrics
from torch import Tensor

METRIC_NAMES = ("hr", "recall", "ndcg", "mrr", "precision")


def as_pairs(targets: Tensor) -> Tensor:
    """Targets as (row, item) pairs [2, T] sorted by row then item: a bool mask [B, I] is
    converted once; pairs (what `EvalBatch.targets` holds) pass through."""
    if targets.dtype == torch.bool:
        return torch.stack(targets.nonzero(as_tuple=True)) if targets.dim() == 2 else \
            targets.new_zeros(2, 0, dtype=torch.long)  # row-major: items ascend per row
    return targets


def exclude_seen(scores: Tensor, seen: Tensor, keep: Tensor | None = None) -> Tensor:
    """A copy of scores [B, I] with the (row, item) pairs `seen` [2, S] at -inf, except the pairs
    `keep` [2, T] (held-out targets are never excluded, even when also seen)."""
    if not seen.numel():
        return scores
    kept = None if keep is None or not keep.numel() else scores[keep[0], keep[1]]  # [T]
    minus_inf = torch.tensor(float("-inf"), device=scores.device, dtype=scores.dtype)
    scores = scores.index_put((seen[0], seen[1]), minus_inf)  # copy, [B, I]
    if kept is not None:
        scores[keep[0], keep[1]] = kept
    return scores


def target_slots(targets: Tensor) -> tuple[Tensor, Tensor]:
    """Item indices of each row's targets, ascending, left-aligned and padded to T = max targets.

    targets: bool mask [B, I]. Returns ``(index [B, T] long, valid [B, T] bool)``; padded slots
    hold index 0, valid False.
    """
    rows, cols = as_pairs(targets)  # row-major, so cols ascend per row
    return slots_from_pairs(rows, cols, targets.shape[0])


def slots_from_pairs(rows: Tensor, cols: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """`target_slots` from (row, item) pairs already sorted by row, then item: no [B, I] pass."""
    counts = torch.bincount(rows, minlength=batch)  # [B]
    t_max = int(counts.max()) if batch > 0 and rows.numel() else 0
    start = torch.cumsum(counts, 0) - counts  # [B] offset of each row's first target in rows/cols
    slot = torch.arange(rows.numel(), device=rows.device) - start[rows]  # [N]
    index = torch.zeros(batch, t_max, dtype=torch.long, device=rows.device)  # [B, T]
    valid = torch.zeros(batch, t_max, dtype=torch.bool, device=rows.device)  # [B, T]
    index[rows, slot] = cols
    valid[rows, slot] = True
    return index, valid


def _positions_single(scores: Tensor, index: Tensor) -> Tensor:
    """Leave-one-out path (T == 1): one comparison count per row, no sort. Returns [B, 1].

    Counts ``s_j >= s_t`` over all items and subtracts the target itself (the row's only target).
    """
    s_t = scores.gather(1, index)  # [B, 1]
    return (scores >= s_t).sum(1, keepdim=True, dtype=torch.int32).long() - 1  # [B, 1]


def _nontargets_at_or_above(scores: Tensor, pairs: Tensor, s_t: Tensor) -> Tensor:
    """Number of non-target items with score >= each target score. s_t [B, T] -> [B, T]."""
    inf = torch.tensor(float("inf"), device=scores.device, dtype=scores.dtype)
    masked = scores.index_put((pairs[0], pairs[1]), inf)  # [B, I]; +inf is never < s_t
    ascending = masked.sort(1).values  # [B, I]
    below = torch.searchsorted(ascending, s_t.contiguous(), side="left")  # [B, T] non-targets < s_t
    n_targets = torch.bincount(pairs[0], minlength=len(scores))[:, None]  # [B, 1]
    return scores.shape[1] - n_targets - below  # [B, T]


def _rank_among_targets(s_t: Tensor, valid: Tensor) -> Tensor:
    """Rank of each target among its row's targets (score desc, then slot = item index asc)."""
    key = s_t.masked_fill(~valid, float("-inf"))  # [B, T]; padding is right-aligned, stays last
    order = key.sort(dim=1, descending=True, stable=True).indices  # [B, T]
    ranks = torch.arange(key.shape[1], device=key.device).expand_as(order)  # [B, T]
    return torch.empty_like(order).scatter_(1, order, ranks)  # [B, T] inverse permutation


def _positions_multi(scores: Tensor, pairs: Tensor, index: Tensor, valid: Tensor) -> Tensor:
    """General path: one sort of the non-target scores per row plus searchsorted. Returns [B, T]."""
    s_t = scores.gather(1, index)  # [B, T]
    return _nontargets_at_or_above(scores, pairs, s_t) + _rank_among_targets(s_t, valid)


def target_positions(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """0-based rank position of every target under the pessimistic tie policy (module docstring).

    Args:
        scores: ``[B, I]`` float scores, excluded items set to ``-inf``; must not contain NaN.
        targets: the relevant items: (row, item) pairs ``[2, T]`` sorted by row then item, or a
            bool mask ``[B, I]``.

    Returns:
        ``(positions [B, T] long, valid [B, T] bool)`` with T the largest number of targets in a
        row; slot ``j`` of a row is its ``j``-th target in increasing item index; padded slots
        have ``valid == False`` and meaningless positions.
    """
    pairs = as_pairs(targets)  # [2, N]
    index, valid = slots_from_pairs(pairs[0], pairs[1], scores.shape[0])  # [B, T], [B, T]
    if index.shape[1] == 0:
        return index, valid
    if index.shape[1] == 1:
        return _positions_single(scores, index), valid
    return _positions_multi(scores, pairs, index, valid), valid


def _ideal_dcg(n_targets: Tensor, ks: Tensor) -> Tensor:
    """IDCG for n_targets [B] (>= 1) at each K in ks [nK]. Returns [B, nK] float64."""
    ranks = torch.arange(int(ks.max()), dtype=torch.float64, device=ks.device)  # [Kmax]
    table = torch.cat([ranks.new_zeros(1), (1.0 / torch.log2(ranks + 2.0)).cumsum(0)])  # [Kmax+1]
    return table[torch.minimum(n_targets[:, None], ks)]  # [B, nK]


def per_user_metrics(positions: Tensor, valid: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-user metric values from target positions.

    Args:
        positions, valid: ``[B, T]`` as returned by :func:`target_positions`.
        ks: cut-offs.

    Returns:
        ``{name: [B, len(ks)] float64}`` for each name in ``METRIC_NAMES``. Rows without a valid
        target get finite values (zeros) so that they vanish under weight 0.
    """
    if positions.shape[1] == 0:  # no targets at all: one invalid slot keeps reductions defined
        positions = positions.new_zeros(positions.shape[0], 1)  # [B, 1]
        valid = valid.new_zeros(valid.shape[0], 1)  # [B, 1]
    ks_t = torch.as_tensor(list(ks), dtype=torch.long, device=positions.device)  # [nK]
    n = valid.sum(1).clamp(min=1)  # [B]
    pos = positions.to(torch.float64)  # [B, T]
    hit = (valid[:, :, None] & (positions[:, :, None] < ks_t)).to(torch.float64)  # [B, T, nK]
    hits = hit.sum(1)  # [B, nK]
    dcg = (hit * (1.0 / torch.log2(pos + 2.0))[:, :, None]).sum(1)  # [B, nK]
    return {
        "hr": (hits > 0).to(torch.float64),
        "recall": hits / n[:, None],
        "ndcg": dcg / _ideal_dcg(n, ks_t),
        "mrr": (hit * (1.0 / (pos + 1.0))[:, :, None]).amax(1),  # [B, nK] best hit's reciprocal
        "precision": hits / ks_t.to(torch.float64),
    }


def counts_in_top(values: Tensor, indices: Tensor, counted: Tensor, ks: Sequence[int],
                  num_items: int) -> Tensor:
    """How many counted users have each item in their top-K (``-inf`` ignored), from each row's
    top list: values, indices [B, k] (best first), counted [B] bool. Returns [len(ks), I]
    float64 counts."""
    ks_t = torch.as_tensor(list(ks), dtype=torch.long, device=values.device)  # [nK]
    keep = counted[:, None] & (values != float("-inf"))  # [B, k]
    in_cut = torch.arange(indices.shape[1], device=values.device) < ks_t[:, None]  # [nK, k]
    mask = in_cut[:, None, :] & keep[None]  # [nK, B, k]
    offset = torch.arange(len(ks_t), device=values.device)[:, None, None] * num_items  # [nK, 1, 1]
    flat = (offset + indices[None])[mask]  # [M] index into the flattened [nK * I]
    counts = torch.zeros(len(ks_t) * num_items, dtype=torch.float64, device=values.device)
    counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))  # [nK * I]
    return counts.view(len(ks_t), num_items)  # [nK, I]


# ====================================================================== chunked catalogue
def merge_top(values: Tensor, indices: Tensor | None, new_values: Tensor,
              new_indices: Tensor | None, k: int) -> tuple[Tensor, Tensor | None]:
    """The best k of two top lists [B, k1] and [B, k2] (indices may be None: values only)."""
    both = torch.cat([values, new_values], 1)  # [B, k1 + k2]
    top = both.topk(min(k, both.shape[1]), dim=1)  # [B, k]
    if indices is None or new_indices is None:
        return top.values, None
    return top.values, torch.cat([indices, new_indices], 1).gather(1, top.indices)


class ChunkedRanking:
    """What full ranking needs from one batch's scores, gathered one item chunk at a time, so that
    evaluation never holds [B, I]: each target's score, the best k non-target scores (whose count
    at or above a target gives its position exactly while it is below k, and a miss beyond), the
    best k items (coverage, predict) and the sampled protocol's candidate scores.

    Positions equal `target_positions`' wherever they are below k = the largest cut-off, which is
    all the metrics read; a target whose own score is -inf counts as a miss. Ties in the top list
    kept for coverage are broken by `topk` within a chunk and by chunk order across them.

    Args:
        targets: (row, item) pairs [2, T] sorted by row then item; batch_size: B; k: list length.
        candidates: optional [B, C] item indices whose scores are gathered (the sampled protocol).
    """

    def __init__(self, targets: Tensor, batch_size: int, k: int,
                 candidates: Tensor | None = None) -> None:
        self.pairs, self.k = targets, k
        self.index, self.valid = slots_from_pairs(targets[0], targets[1], batch_size)  # [B, T]
        nan = float("nan")
        self.target_scores = torch.full(self.index.shape, nan, device=targets.device)  # [B, T]
        empty = torch.empty(batch_size, 0, device=targets.device)
        self.others: Tensor = empty  # [B, <= k] best non-target scores
        self.top_values: Tensor = empty  # [B, <= k] best scores, any item
        self.top_items: Tensor | None = empty.long()  # [B, <= k]
        self.candidates = candidates
        self.candidate_scores = None if candidates is None else \
            torch.full(candidates.shape, nan, device=targets.device)  # [B, C]

    def add(self, first: int, scores: Tensor) -> None:
        """scores [B, n]: items first .. first + n - 1, seen items already at -inf."""
        last = first + scores.shape[1]
        hit = self.valid & (self.index >= first) & (self.index < last)  # [B, T]
        rows, slots = hit.nonzero(as_tuple=True)
        self.target_scores[rows, slots] = scores[rows, self.index[rows, slots] - first]
        if self.candidates is not None:
            inside = (self.candidates >= first) & (self.candidates < last)  # [B, C]
            rows, cols = inside.nonzero(as_tuple=True)
            self.candidate_scores[rows, cols] = scores[rows, self.candidates[rows, cols] - first]
        # one top list of k + T per chunk serves both: its first k are the chunk's best items,
        # and with the row's (at most T) targets taken out it still holds the best k others
        width = min(self.k + self.index.shape[1], scores.shape[1])
        best = scores.topk(width, dim=1)  # [B, k + T]
        items = best.indices + first  # [B, k + T]
        self.top_values, self.top_items = merge_top(
            self.top_values, self.top_items, best.values[:, :self.k], items[:, :self.k], self.k)
        is_target = ((items[:, :, None] == self.index[:, None, :])
                     & self.valid[:, None, :]).any(2)  # [B, k + T]
        others = best.values.masked_fill(is_target, float("-inf"))  # [B, k + T]
        self.others, _ = merge_top(self.others, None, others, None, self.k)

    def positions(self) -> tuple[Tensor, Tensor]:
        """(positions [B, T], valid [B, T]) as `target_positions` gives them below k."""
        s_t = self.target_scores  # [B, T]
        if torch.isnan(s_t[self.valid]).any():
            raise ValueError("ChunkedRanking: chunks did not cover every target item")
        above = (self.others[:, None, :] >= s_t[:, :, None]).sum(-1)  # [B, T] capped at k
        above = above.masked_fill(s_t == float("-inf"), self.k)  # an excluded target: a miss
        return above + _rank_among_targets(s_t, self.valid), self.valid


def _check_inputs(
    scores: Tensor, targets: Tensor, weights: Tensor | None, num_items: int | None
) -> tuple[Tensor, Tensor]:
    """Validate update() arguments; returns the targets as pairs [2, T] and the weights as
    float64 [B]."""
    if scores.dim() != 2:
        raise ValueError(f"scores must be [B, I], got {tuple(scores.shape)}")
    if targets.dtype == torch.bool and targets.shape != scores.shape:
        raise ValueError(f"a targets mask must be [B, I] like the scores; got "
                         f"{tuple(targets.shape)} and {tuple(scores.shape)}")
    if targets.dtype != torch.bool and (targets.dim() != 2 or targets.shape[0] != 2
                                        or targets.dtype != torch.long):
        raise ValueError(f"targets must be (row, item) pairs [2, T] long or a bool mask [B, I], "
                         f"got {tuple(targets.shape)} {targets.dtype}")
    if num_items is not None and scores.shape[1] != num_items:
        raise ValueError(f"scores has {scores.shape[1]} item columns but num_items={num_items}")
    if scores.numel() > 0 and torch.isnan(scores.amax()):  # amax propagates NaN, cheaper
        raise ValueError(
            "scores contain NaN; mark excluded items with -inf and check the model for NaN output"
        )
    pairs = as_pairs(targets)
    if weights is None:
        return pairs, torch.ones(scores.shape[0], dtype=torch.float64, device=scores.device)
    if weights.shape != scores.shape[:1]:
        raise ValueError(f"weights must be [B]={scores.shape[0]}, got {tuple(weights.shape)}")
    return pairs, weights.to(torch.float64)  # [2, T], [B]


class RankingMetrics(torchmetrics.Metric):
    """Full-ranking top-K metrics with additive float64 states (see the module docstring).

    Args:
        ks: cut-offs K (positive, distinct).
        num_items: catalogue size; when given, ``coverage@K`` is reported too.
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self, ks: Sequence[int] = (5, 10, 20), num_items: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"ks must be distinct positive integers, got {tuple(ks)}")
        if num_items is not None and num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        zeros = torch.zeros(len(self.ks), dtype=torch.float64)  # [nK]
        for name in METRIC_NAMES:
            self.add_state(f"{name}_sum", default=zeros.clone(), dist_reduce_fx="sum")
        self.add_state(
            "weight_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum"
        )
        if num_items is not None:
            counts = torch.zeros(len(self.ks), num_items, dtype=torch.float64)  # [nK, I]
            self.add_state("item_counts", default=counts, dist_reduce_fx="sum")

    def update(self, scores: Tensor | ChunkedRanking, targets: Tensor | None = None,
               weights: Tensor | None = None) -> None:
        """Add a batch: scores [B, I] float (-inf = excluded), targets as (row, item) pairs [2, T]
        (or a bool mask [B, I]), weights [B]; or a batch ranked chunk by chunk (`ChunkedRanking`,
        no targets: it holds them) with its weights [B]."""
        if isinstance(scores, ChunkedRanking):
            self._update_chunked(scores, weights)
            return
        if targets is None:
            raise ValueError("RankingMetrics.update: targets are needed with a score matrix")
        pairs, weights = _check_inputs(scores, targets, weights, self.num_items)  # [2, T], [B]
        positions, valid = target_positions(scores, pairs)  # [B, T], [B, T]
        top = None
        if self.num_items is not None:
            top = scores.topk(min(max(self.ks), scores.shape[1]), dim=1)  # [B, k]
        self.add(positions, valid, weights, None if top is None else (top.values, top.indices))

    def _update_chunked(self, ranking: ChunkedRanking, weights: Tensor | None) -> None:
        positions, valid = ranking.positions()  # [B, T], [B, T]
        if weights is None:
            weights = torch.ones(len(positions), device=positions.device)
        top = None if self.num_items is None else (ranking.top_values, ranking.top_items)
        self.add(positions, valid, weights.to(torch.float64), top)

    def add(self, positions: Tensor, valid: Tensor, weights: Tensor,
            top: tuple[Tensor, Tensor] | None) -> None:
        """Accumulate per-user metrics from target positions [B, T] (valid [B, T]), float64
        weights [B] and, for coverage, each row's top list (values, items [B, k])."""
        weights = weights * valid.any(1)  # [B]; rows without a target count as weight 0
        for name, values in per_user_metrics(positions, valid, self.ks).items():  # [B, nK]
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + weights @ values)  # [nK]
        self.weight_sum = self.weight_sum + weights.sum()
        if self.num_items is not None and top is not None:
            counts = counts_in_top(*top, weights > 0, self.ks, self.num_items)  # [nK, I]
            self.item_counts = self.item_counts + counts

    def compute(self) -> dict[str, Tensor]:
        """Weighted means as 0-dim float64 tensors, keyed ``"<metric>@<K>"``."""
        total = self.weight_sum
        if not total > 0:
            raise ValueError(
                "RankingMetrics.compute(): no user was counted (sum of weights is 0); update() "
                "needs rows with at least one target and a non-zero weight"
            )
        out = {}
        for name in METRIC_NAMES:
            sums = getattr(self, f"{name}_sum")  # [nK]
            out.update({f"{name}@{k}": sums[i] / total for i, k in enumerate(self.ks)})
        if self.num_items is not None:
            covered = (self.item_counts > 0).to(torch.float64).mean(1)  # [nK]
            out.update({f"coverage@{k}": covered[i] for i, k in enumerate(self.ks)})
        return out


# ====================================================================== labelled rows
def auc(scores: Tensor, labels: Tensor) -> Tensor:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties
    counting 1/2 (Mann-Whitney U with average ranks); float64. NaN-free: raises without both
    classes."""
    scores, labels = scores.double().reshape(-1), labels.reshape(-1) > 0.5
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs positive and negative labels, got {n_pos} positives and "
                         f"{n_neg} negatives")
    _, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    upper = torch.cumsum(counts, 0).double()  # [V] 1-based rank of each value's last copy
    average_rank = upper - (counts.double() - 1) / 2  # [V]
    rank_sum = average_rank[inverse][labels].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


class BinaryMetrics(torchmetrics.Metric):
    """AUC and LogLoss of binary labels from logits; exact under DDP (all scores are gathered for
    the AUC, the log-loss is a float64 sum)."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("logits", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("logloss_sum", default=torch.zeros((), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: Tensor, labels: Tensor) -> None:
        """logits [R], labels [R] in {0, 1}."""
        logits, labels = logits.detach().float(), labels.float()
        self.logits.append(logits)
        self.labels.append(labels)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="sum")
        self.logloss_sum = self.logloss_sum + bce.double()
        self.count = self.count + labels.numel()

    def compute(self) -> dict[str, Tensor]:
        logits = torchmetrics.utilities.dim_zero_cat(self.logits)
        labels = torchmetrics.utilities.dim_zero_cat(self.labels)
        return {"auc": auc(logits, labels), "logloss": self.logloss_sum / self.count}


class RatingMetrics(torchmetrics.Metric):
    """RMSE and MAE of rating predictions; float64 sums, exact under DDP."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("se_sum", "ae_sum", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predictions: Tensor, labels: Tensor) -> None:
        """predictions [R], labels [R]."""
        error = predictions.detach().double() - labels.double()  # [R]
        self.se_sum = self.se_sum + error.square().sum()
        self.ae_sum = self.ae_sum + error.abs().sum()
        self.count = self.count + error.numel()

    def compute(self) -> dict[str, Tensor]:
        return {"rmse": (self.se_sum / self.count).sqrt(), "mae": self.ae_sum / self.count}
