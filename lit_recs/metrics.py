"""Full-ranking top-K recommendation metrics: HR, Recall, NDCG, MRR, Precision and Coverage,
under a pessimistic tie policy or as exact expectations over random orders within ties.

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

Tie policy (expected), ``RankingMetrics(ties="expected")``
-----------------------------------------------------------
The exact expectation of every metric above (coverage aside) when the items of equal score are
put in a uniformly random order, in closed form. For a target ``t`` of a row let

    g_t = #{items j != t with s_j > s_t}  (targets and non-targets: all ahead of t)
    e_t = #{items j != t with s_j = s_t}  (t's tie group has e_t + 1 items)

A random order within ties puts ``t`` at position ``g_t + U``, U uniform on {0 .. e_t}, so

* ``P(p_t < K)`` = ``clamp((K - g_t) / (e_t + 1), 0, 1)``
* ``E[1{p_t < K} / log2(p_t + 2)]`` = ``(D(min(g_t + e_t + 1, K)) - D(min(g_t, K))) / (e_t + 1)``,
  with ``D(m) = sum_{p < m} 1 / log2(p + 2)`` (the ideal-DCG table),

and recall, precision and DCG, sums over targets, take the sums of these (linearity of
expectation; NDCG divides by the fixed ideal DCG). HR and MRR read the best-placed target only,
which is always in the tie group of the highest target score: with ``g`` items strictly above it,
``m`` targets and ``r`` non-targets in that group, the best target's position is ``g + X``, X the
number of non-targets before the first of the ``m`` targets in a random order of the group:

    P(X >= x) = C(r, x) / C(r + m, x) = prod_{j < x} (r - j) / (r + m - j)   (hypergeometric)

    E[hr@K]  = P(X < K - g) = 1 - P(X >= K - g)                       (0 when g >= K)
    E[mrr@K] = sum_{x < K - g} P(X = x) / (g + x + 1)

(with one target, m = 1, these reduce to the linear formulas). Each needs, per target, only the
counts of non-targets strictly above and tied with it (one more comparison, or one more
`searchsorted`, beside the pessimistic count) and its rank and ties among the row's few targets (a
sort of [B, T]); the tables run over x < max(K), no tensor is [B, I, I] or [B, T, T]. Both policies
come from the same counts: with ``ties="expected"``, `compute` reports the expected values under
the usual names and the pessimistic ones under ``pessimistic/<metric>@K`` (`tie_gaps` pairs them).
Coverage is the same under both policies (it reads `topk`'s lists, not the targets' positions). A
target whose score is ``-inf`` ties with the excluded items in the whole-matrix path and is a miss
in the chunked one, under both policies (targets are never excluded by `exclude_seen`).

Reported values are weighted means over users (``sum(weight * value) / sum(weight)``). Rows
without a target count as weight 0. All states are float64 sums (``dist_reduce_fx="sum"``), so
results are exact under DDP as long as each evaluation user is counted on exactly one process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchmetrics
from torch import Tensor

METRIC_NAMES = ("hr", "recall", "ndcg", "mrr", "precision")
TIES = ("pessimistic", "expected")  # RankingMetrics' tie policies
PESSIMISTIC = "pessimistic"  # the key segment of pessimistic values reported beside expected ones
# tie_gaps reports a metric when |expected - pessimistic| exceeds this: half a unit in the 4th
# decimal that tables print, i.e. a difference a reader of such a table could see
TIE_GAP_TOLERANCE = 5e-5


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


# cells compared at once on a CPU: a block's bool result stays in cache, which counts 4-5x faster
# than one [B, I] pass (512 x 65,536 float32 scores, 1 thread)
COUNT_BLOCK_CELLS = 1 << 19


def count_in_rows(compare: Callable[[Tensor, Tensor], Tensor], scores: Tensor, values: Tensor,
                  rows: Tensor | None = None) -> Tensor:
    """``compare(scores, values)`` counted along each row: scores [B, n], values [B, 1] ->
    [B, 1] long (or [R, 1] for the rows [R] given). On a CPU a block of rows of about
    COUNT_BLOCK_CELLS cells at a time (one row at a time only for rows of that many cells or
    more, where the loop's cost vanishes beside the row's); elsewhere in one pass."""
    if rows is not None:
        values = values[rows]  # [R, 1]
    total = len(values)
    if scores.device.type != "cpu" or total == 0:
        picked = scores if rows is None else scores[rows]
        return compare(picked, values).sum(1, keepdim=True, dtype=torch.int32).long()
    step = max(1, COUNT_BLOCK_CELLS // max(scores.shape[1], 1))
    parts = []
    for lo in range(0, total, step):
        block = scores[lo:lo + step] if rows is None else scores[rows[lo:lo + step]]
        parts.append(compare(block, values[lo:lo + step]).sum(1, keepdim=True, dtype=torch.int32))
    return torch.cat(parts).long()  # [B or R, 1]


def _at_or_above_single(scores: Tensor, s_t: Tensor) -> Tensor:
    """Items other than the row's only target with ``s_j >= s_t``: s_t [B, 1] -> [B, 1]."""
    return count_in_rows(torch.ge, scores, s_t) - 1  # [B, 1]


def _positions_single(scores: Tensor, index: Tensor) -> Tensor:
    """Leave-one-out path (T == 1): one comparison count per row, no sort. Returns [B, 1].

    Counts ``s_j >= s_t`` over all items and subtracts the target itself (the row's only target).
    """
    return _at_or_above_single(scores, scores.gather(1, index))  # [B, 1]


def _sorted_nontargets(scores: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    """Each row's scores ascending with its targets moved to the end as +inf (never < a score),
    [B, I], and its number of non-targets [B, 1]."""
    inf = torch.tensor(float("inf"), device=scores.device, dtype=scores.dtype)
    masked = scores.index_put((pairs[0], pairs[1]), inf)  # [B, I]
    n_targets = torch.bincount(pairs[0], minlength=len(scores))[:, None]  # [B, 1]
    return masked.sort(1).values, scores.shape[1] - n_targets  # [B, I], [B, 1]


def _nontargets_at_or_above(scores: Tensor, pairs: Tensor, s_t: Tensor) -> Tensor:
    """Number of non-target items with score >= each target score. s_t [B, T] -> [B, T]."""
    ascending, n_nontargets = _sorted_nontargets(scores, pairs)  # [B, I], [B, 1]
    below = torch.searchsorted(ascending, s_t.contiguous(), side="left")  # [B, T] non-targets < s_t
    return n_nontargets - below  # [B, T]


def _above_and_tied(ascending: Tensor, total: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """How many of each row's ``total`` [B, 1] real entries (the first ones of the ascending rows
    ``ascending`` [B, n]; the rest are +inf) are > and == each of ``values`` [B, T]."""
    values = values.contiguous()
    below = torch.searchsorted(ascending, values, side="left")  # [B, T] entries < value
    at_or_below = torch.searchsorted(ascending, values, side="right")  # [B, T] entries <= value
    return total - at_or_below, at_or_below - below  # [B, T], [B, T]


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


def _dcg_table(ks: Tensor) -> Tensor:
    """D(m) = sum_{p < m} 1 / log2(p + 2) for m = 0 .. max(ks): [Kmax + 1] float64."""
    ranks = torch.arange(int(ks.max()), dtype=torch.float64, device=ks.device)  # [Kmax]
    return torch.cat([ranks.new_zeros(1), (1.0 / torch.log2(ranks + 2.0)).cumsum(0)])  # [Kmax+1]


def _ideal_dcg(n_targets: Tensor, ks: Tensor) -> Tensor:
    """IDCG for n_targets [B] (>= 1) at each K in ks [nK]. Returns [B, nK] float64."""
    return _dcg_table(ks)[torch.minimum(n_targets[:, None], ks)]  # [B, nK]


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


@dataclass(frozen=True)
class TieCounts:
    """What both tie policies need of each target slot [B, T] (slots as `target_positions`'):
    non-targets scored strictly above it (``above``; in `ChunkedRanking`, exact while below k and
    k beyond) and equal to it (``tied``; exact wherever ``above`` is below k), its score, and
    whether the slot holds a target (``valid``)."""

    above: Tensor  # [B, T] long
    tied: Tensor  # [B, T] long
    scores: Tensor  # [B, T]
    valid: Tensor  # [B, T] bool

    def positions(self) -> Tensor:
        """Pessimistic positions [B, T]: non-targets at or above, then the targets' own order."""
        return self.above + self.tied + _rank_among_targets(self.scores, self.valid)


def tie_counts(scores: Tensor, targets: Tensor) -> TieCounts:
    """`TieCounts` of every target (arguments as `target_positions`'): leave-one-out rows count
    ``s_j > s_t`` beside the pessimistic ``s_j >= s_t`` (no sort); several targets per row take a
    second `searchsorted` of the same sorted row."""
    pairs = as_pairs(targets)  # [2, N]
    index, valid = slots_from_pairs(pairs[0], pairs[1], scores.shape[0])  # [B, T], [B, T]
    s_t = scores.gather(1, index)  # [B, T]
    if index.shape[1] == 1:
        above = count_in_rows(torch.gt, scores, s_t)  # [B, 1]
        return TieCounts(above, _at_or_above_single(scores, s_t) - above, s_t, valid)
    if index.shape[1] == 0:
        return TieCounts(index, index, s_t, valid)
    ascending, n_nontargets = _sorted_nontargets(scores, pairs)  # [B, I], [B, 1]
    return TieCounts(*_above_and_tied(ascending, n_nontargets, s_t), s_t, valid)


def expected_user_metrics(counts: TieCounts, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-user expected metric values [B, len(ks)] float64 under a uniformly random order within
    ties (module docstring: "Tie policy (expected)"), from each target's `TieCounts`. Rows without
    a valid target get finite values, as in `per_user_metrics`."""
    valid, s_t = counts.valid, counts.scores  # [B, T]
    ks_t = torch.as_tensor(list(ks), dtype=torch.long, device=valid.device)  # [nK]
    batch, k_max = valid.shape[0], int(ks_t.max())
    if valid.shape[1] == 0:
        zeros = torch.zeros(batch, len(ks_t), dtype=torch.float64, device=valid.device)
        return {name: zeros for name in METRIC_NAMES}
    # the row's other targets: strictly above each target and tied with it (its own slot aside)
    n = valid.sum(1, keepdim=True)  # [B, 1]
    key = s_t.masked_fill(~valid, float("inf"))  # [B, T]; padding last in ascending order
    ahead, level = _above_and_tied(key.sort(1).values, n, s_t)  # [B, T], [B, T]
    ahead, level = ahead * valid, level * valid  # padding (NaN scores in chunks) counts nothing
    g = counts.above + ahead  # [B, T] items strictly above the target
    e = counts.tied + (level - 1).clamp(min=0)  # [B, T] other items tied with it
    # linear metrics: P(p_t < K) and E[1{p_t < K} / log2(p_t + 2)], p_t uniform on g .. g + e
    g3, e3 = g[:, :, None], e[:, :, None]  # [B, T, 1]
    width = (e3 + 1).to(torch.float64)  # [B, T, 1]
    p_hit = torch.minimum((ks_t - g3).clamp(min=0), e3 + 1) / width  # [B, T, nK]
    table = _dcg_table(ks_t)  # [Kmax + 1]
    gain = (table[torch.minimum(g3 + e3 + 1, ks_t)] - table[torch.minimum(g3, ks_t)]) / width
    mask = valid[:, :, None].to(torch.float64)  # [B, T, 1]
    hits, dcg = (p_hit * mask).sum(1), (gain * mask).sum(1)  # [B, nK]
    # HR and MRR: the best target is g_top + X, X hypergeometric over the top tie group
    best = key.masked_fill(~valid, float("-inf")).argmax(1, keepdim=True)  # [B, 1] first top slot
    g_top = g.gather(1, best)  # [B, 1]
    m = level.gather(1, best).clamp(min=1)  # [B, 1] targets in the top group
    r = counts.tied.gather(1, best)  # [B, 1] non-targets in it
    x = torch.arange(k_max, device=valid.device)  # [Kmax]
    factor = (r - x).clamp(min=0) / (r + m - x).clamp(min=1).to(torch.float64)  # [B, Kmax]
    at_least = torch.cat([factor.new_ones(batch, 1), factor.cumprod(1)], 1)  # [B, Kmax+1] P(X>=x)
    first = at_least[:, :-1] - at_least[:, 1:]  # [B, Kmax] P(X = x)
    reciprocal = first / (g_top + x + 1).to(torch.float64)  # [B, Kmax]
    rr = torch.cat([factor.new_zeros(batch, 1), reciprocal.cumsum(1)], 1)  # [B, Kmax + 1]
    room = (ks_t - g_top).clamp(0, k_max)  # [B, nK] values of X that still hit
    n = n[:, 0].clamp(min=1)  # [B]
    return {
        "hr": 1.0 - at_least.gather(1, room),
        "recall": hits / n[:, None],
        "ndcg": dcg / _ideal_dcg(n, ks_t),
        "mrr": rr.gather(1, room),
        "precision": hits / ks_t.to(torch.float64),
    }


def tie_gaps(values: Mapping[str, Any], tolerance: float = TIE_GAP_TOLERANCE
             ) -> dict[str, dict[str, float]]:
    """Where the tie policy matters: for each key of ``values`` with a pessimistic twin (the same
    key with a ``pessimistic/`` segment before the metric, as `RankingMetrics(ties="expected")`
    reports it, e.g. ``test/sampled99/pessimistic/hr@10`` beside ``test/sampled99/hr@10``) and
    ``|expected - pessimistic| > tolerance``: ``{key: {"expected", "pessimistic", "tie_gap"}}``
    with ``tie_gap = expected - pessimistic``, in key order."""
    out = {}
    for key in sorted(values):
        head, sep, metric = key.rpartition(f"{PESSIMISTIC}/")
        twin = head + metric
        if not sep or "/" in metric or (head and not head.endswith("/")) or twin not in values:
            continue
        expected, pessimistic = float(values[twin]), float(values[key])
        if abs(expected - pessimistic) > tolerance:
            out[twin] = {"expected": expected, "pessimistic": pessimistic,
                         "tie_gap": expected - pessimistic}
    return out


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

    For the expected tie policy (``count_ties``) it also keeps, per row, how many non-targets
    score exactly the list's last value (``tail_ties``, those beyond the list included). A target
    that the list does not put k or more items above scores at least that value, so its tied
    non-targets are all in the list, or, at that value, are ``tail_ties``: `counts` equals
    `tie_counts` wherever ``above`` < k, however far the tie group extends.

    Args:
        targets: (row, item) pairs [2, T] sorted by row then item; batch_size: B; k: list length.
        candidates: optional [B, C] item indices whose scores are gathered (the sampled protocol).
        count_ties: keep ``tail_ties``, which `counts` (the expected tie policy) needs.
    """

    def __init__(self, targets: Tensor, batch_size: int, k: int,
                 candidates: Tensor | None = None, count_ties: bool = False) -> None:
        self.pairs, self.k, self.count_ties = targets, k, count_ties
        self.index, self.valid = slots_from_pairs(targets[0], targets[1], batch_size)  # [B, T]
        nan = float("nan")
        self.target_scores = torch.full(self.index.shape, nan, device=targets.device)  # [B, T]
        empty = torch.empty(batch_size, 0, device=targets.device)
        self.others: Tensor = empty  # [B, <= k] best non-target scores
        self.tail_ties = torch.zeros(batch_size, dtype=torch.long, device=targets.device)  # [B]
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
        merged, _ = merge_top(self.others, None, others, None, self.k)  # [B, <= k]
        if self.count_ties:
            self.tail_ties = self._ties_at(merged[:, -1:], scores, best.values, others, hit)
        self.others = merged

    def _ties_at(self, last: Tensor, scores: Tensor, best: Tensor, others: Tensor,
                 hit: Tensor) -> Tensor:
        """Non-targets seen so far, this chunk's included, whose score equals ``last`` [B, 1]
        (the merged list's last value) -> [B]. Before this chunk, all of them are in the old list
        unless ``last`` is its last value too (then ``tail_ties`` counts them). In this chunk,
        they are in its top list ``best`` [B, k + T] (``others``: the same, targets at -inf)
        unless ``last`` is the list's last value and the chunk has more items: only those rows
        (a tie group running past the list) take one comparison over the chunk's scores [B, n]."""
        if self.others.shape[1]:
            before = torch.where(self.others[:, -1] == last[:, 0], self.tail_ties,
                                 (self.others == last).sum(1))  # [B]
        else:
            before = torch.zeros_like(self.tail_ties)
        here = (others == last).sum(1)  # [B]
        if best.shape[1] < scores.shape[1]:
            rows = (best[:, -1] == last[:, 0]).nonzero()[:, 0]  # [R] tie groups past the list
            if rows.numel():
                most = 2 * rows.numel() > len(scores)  # then all rows: slices, no gather
                in_chunk = count_in_rows(torch.eq, scores, last)[rows, 0] if most else \
                    count_in_rows(torch.eq, scores, last, rows)[:, 0]  # [R]
                targets = ((self.target_scores[rows] == last[rows]) & hit[rows]).sum(1)  # [R]
                here = here.index_put((rows,), in_chunk - targets)
        return before + here  # [B]

    def positions(self) -> tuple[Tensor, Tensor]:
        """(positions [B, T], valid [B, T]) as `target_positions` gives them below k."""
        s_t = self.target_scores  # [B, T]
        if torch.isnan(s_t[self.valid]).any():
            raise ValueError("ChunkedRanking: chunks did not cover every target item")
        above = (self.others[:, None, :] >= s_t[:, :, None]).sum(-1)  # [B, T] capped at k
        above = above.masked_fill(s_t == float("-inf"), self.k)  # an excluded target: a miss
        return above + _rank_among_targets(s_t, self.valid), self.valid

    def counts(self) -> TieCounts:
        """`TieCounts` as `tie_counts` gives them wherever ``above`` < k (an excluded target, or
        one with k or more items above, gets ``above`` = k: a miss)."""
        if not self.count_ties:
            raise ValueError("ChunkedRanking.counts needs the ties counted while ranking: "
                             "ChunkedRanking(..., count_ties=True)")
        self.positions()  # checks that every target was seen
        s_t, others = self.target_scores, self.others[:, None, :]  # [B, T], [B, 1, k]
        above = (others > s_t[:, :, None]).sum(-1)  # [B, T] capped at the list's length
        above = above.masked_fill(s_t == float("-inf"), self.k)
        listed = (others == s_t[:, :, None]).sum(-1)  # [B, T]
        at_tail = s_t == self.others[:, -1:]  # [B, T] the tie group may go beyond the list
        tied = torch.where(at_tail, self.tail_ties[:, None], listed)  # [B, T]
        return TieCounts(above, tied, self.target_scores, self.valid)


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
        ties: ``pessimistic`` (a target tied with non-targets ranks after them) or ``expected``
            (the exact expectation under a uniformly random order within ties; the pessimistic
            values are reported beside them, as ``pessimistic/<metric>@K``).
        **kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(
        self, ks: Sequence[int] = (5, 10, 20), num_items: int | None = None,
        ties: str = "pessimistic", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if ties not in TIES:
            raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
        self.ties = ties
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or min(self.ks) < 1 or len(set(self.ks)) != len(self.ks):
            raise ValueError(f"ks must be distinct positive integers, got {tuple(ks)}")
        if num_items is not None and num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        zeros = torch.zeros(len(self.ks), dtype=torch.float64)  # [nK]
        for name in METRIC_NAMES:
            self.add_state(f"{name}_sum", default=zeros.clone(), dist_reduce_fx="sum")
        for name in self._expected_names():
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
        counts = None
        if self.ties == "expected":
            counts = tie_counts(scores, pairs)
            positions, valid = counts.positions(), counts.valid  # [B, T], [B, T]
        else:
            positions, valid = target_positions(scores, pairs)  # [B, T], [B, T]
        top = None
        if self.num_items is not None:
            top = scores.topk(min(max(self.ks), scores.shape[1]), dim=1)  # [B, k]
        self.add(positions, valid, weights, None if top is None else (top.values, top.indices),
                 counts)

    def _update_chunked(self, ranking: ChunkedRanking, weights: Tensor | None) -> None:
        positions, valid = ranking.positions()  # [B, T], [B, T]
        if weights is None:
            weights = torch.ones(len(positions), device=positions.device)
        top = None if self.num_items is None else (ranking.top_values, ranking.top_items)
        counts = ranking.counts() if self.ties == "expected" else None
        self.add(positions, valid, weights.to(torch.float64), top, counts)

    def _expected_names(self) -> tuple[str, ...]:
        """Names of the expected-policy states (none under the pessimistic policy)."""
        return tuple(f"expected_{name}" for name in METRIC_NAMES) if self.ties == "expected" \
            else ()

    def add(self, positions: Tensor, valid: Tensor, weights: Tensor,
            top: tuple[Tensor, Tensor] | None, counts: TieCounts | None = None) -> None:
        """Accumulate per-user metrics from target positions [B, T] (valid [B, T]), float64
        weights [B], for coverage each row's top list (values, items [B, k]), and under the
        expected policy the targets' `TieCounts` (the same slots as the positions)."""
        weights = weights * valid.any(1)  # [B]; rows without a target count as weight 0
        values = per_user_metrics(positions, valid, self.ks)  # {name: [B, nK]}
        if self.ties == "expected":
            if counts is None:
                raise ValueError("RankingMetrics(ties='expected').add needs the targets' TieCounts")
            expected = expected_user_metrics(counts, self.ks)
            values.update({f"expected_{name}": expected[name] for name in METRIC_NAMES})
        for name, value in values.items():  # [B, nK]
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + weights @ value)  # [nK]
        self.weight_sum = self.weight_sum + weights.sum()
        if self.num_items is not None and top is not None:
            counts = counts_in_top(*top, weights > 0, self.ks, self.num_items)  # [nK, I]
            self.item_counts = self.item_counts + counts

    def compute(self) -> dict[str, Tensor]:
        """Weighted means as 0-dim float64 tensors, keyed ``"<metric>@<K>"`` (and, under the
        expected policy, the pessimistic values keyed ``"pessimistic/<metric>@<K>"``)."""
        total = self.weight_sum
        if not total > 0:
            raise ValueError(
                "RankingMetrics.compute(): no user was counted (sum of weights is 0); update() "
                "needs rows with at least one target and a non-zero weight"
            )
        out = {}
        # the policy's values under the usual names; the pessimistic ones beside expected ones
        sources = {"": "expected_", f"{PESSIMISTIC}/": ""} if self.ties == "expected" else \
            {"": ""}  # key prefix -> state prefix
        for prefix, state in sources.items():
            for name in METRIC_NAMES:
                sums = getattr(self, f"{state}{name}_sum")  # [nK]
                out.update({f"{prefix}{name}@{k}": sums[i] / total for i, k in enumerate(self.ks)})
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
