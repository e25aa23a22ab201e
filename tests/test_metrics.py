from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from lit_recs.metrics import (
    RankingMetrics,
    _positions_multi,
    _positions_single,
    target_positions,
    target_slots,
)

KS = (1, 2, 3, 5, 10, 40)  # 40 exceeds every catalogue below
NAMES = ("hr", "recall", "ndcg", "mrr", "precision")


# ------------------------------------------------------------------ brute force reference
def ranking_list(score_row, target_row):
    """Explicit ranking: score desc; on ties non-targets first; then item index."""
    return sorted(range(len(score_row)), key=lambda j: (-score_row[j], bool(target_row[j]), j))


def reference_user(score_row, target_row, ks):
    return list_metrics([bool(target_row[j]) for j in ranking_list(score_row, target_row)], ks)


def list_metrics(rel, ks):
    """Every metric at every K of one ranked list: rel[p] = whether position p holds a target."""
    n = sum(rel)
    out = {}
    for k in ks:
        top = rel[:k]
        hits = sum(top)
        out[f"hr@{k}"] = float(hits > 0)
        out[f"recall@{k}"] = hits / n
        out[f"precision@{k}"] = hits / k
        dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(top) if r)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(n, k)))
        out[f"ndcg@{k}"] = dcg / idcg
        out[f"mrr@{k}"] = next((1 / (i + 1) for i, r in enumerate(top) if r), 0.0)
    return out


def reference_coverage(scores, targets, weights, ks, num_items):
    """Only valid when finite scores are distinct within a row (topk ties are arbitrary)."""
    seen = {k: set() for k in ks}
    for s, t, w in zip(scores, targets, weights):
        if w <= 0 or not t.any():
            continue
        order = [j for j in ranking_list(s, t) if s[j] != -np.inf]
        for k in ks:
            seen[k].update(order[:k])
    return {f"coverage@{k}": len(seen[k]) / num_items for k in ks}


def reference(scores, targets, weights, ks, num_items=None, user=reference_user):
    """Weighted means over counted rows of user(score_row, target_row, ks)'s metrics."""
    total, sums = 0.0, {}
    for s, t, w in zip(scores, targets, weights):
        if w == 0 or not t.any():
            continue
        total += w
        for key, v in user(s, t, ks).items():
            sums[key] = sums.get(key, 0.0) + w * v
    out = {key: v / total for key, v in sums.items()}
    if num_items is not None:
        out.update(reference_coverage(scores, targets, weights, ks, num_items))
    return out


def reference_positions(score_row, target_row):
    order = ranking_list(score_row, target_row)
    return [order.index(j) for j in np.flatnonzero(target_row)]  # targets in item-index order


# ----------------------------------------------------------------------------- random cases
def random_case(rng, mode, distinct=False):
    b, i = int(rng.integers(1, 13)), int(rng.integers(1, 31))
    if distinct:
        scores = rng.permuted(np.tile(np.arange(i, dtype=np.float64), (b, 1)), axis=1)
    else:
        scores = rng.integers(0, 4, size=(b, i)).astype(np.float64)  # many ties
    if mode == "loo":
        targets = np.zeros((b, i), dtype=bool)
        targets[np.arange(b), rng.integers(0, i, size=b)] = True
    else:
        targets = rng.random((b, i)) < rng.random((b, 1)) * 0.6
    targets[rng.random(b) < 0.15] = False  # rows without targets
    excluded = (rng.random((b, i)) < 0.25) & ~targets
    excluded |= targets & (rng.random((b, i)) < 0.03)  # the rare excluded target
    scores[excluded] = -np.inf
    weights = (rng.random(b) > 0.2).astype(np.float64)  # padding rows with weight 0
    if not (weights[targets.any(1)] > 0).any():
        weights[:] = 1.0
        targets[0, 0] = True
        scores[0, 0] = max(scores[0, 0], 0.0)
    return scores, targets, weights


def run_metric(scores, targets, weights, ks=KS, num_items=None, dtype=torch.float32):
    metric = RankingMetrics(ks=ks, num_items=num_items)
    metric.update(torch.tensor(scores, dtype=dtype), torch.tensor(targets), torch.tensor(weights))
    return {k: float(v) for k, v in metric.compute().items()}


def assert_close(got, want, tol):
    assert got.keys() == want.keys()
    for key in want:
        assert abs(got[key] - want[key]) <= tol, (key, got[key], want[key])


@pytest.mark.parametrize("mode", ["loo", "multi"])
def test_matches_reference_random(mode):
    rng = np.random.default_rng(0 if mode == "loo" else 1)
    for case in range(150):
        scores, targets, weights = random_case(rng, mode)
        if not (targets.sum(1) > 0).any():
            continue
        dtype = torch.float64 if case % 2 else torch.float32
        got = run_metric(scores, targets, weights, dtype=dtype)
        assert_close(got, reference(scores, targets, weights, KS), 1e-9)


def test_matches_reference_fractional_weights():
    rng = np.random.default_rng(2)
    for _ in range(50):
        scores, targets, weights = random_case(rng, "multi")
        weights = weights * rng.choice([0.5, 1.0, 3.0], size=len(weights))
        assert_close(
            run_metric(scores, targets, weights), reference(scores, targets, weights, KS), 1e-9
        )


def test_coverage_matches_reference_distinct_scores():
    rng = np.random.default_rng(3)
    for case in range(80):
        scores, targets, weights = random_case(rng, "multi" if case % 2 else "loo", distinct=True)
        n = scores.shape[1]
        got = run_metric(scores, targets, weights, num_items=n)
        assert_close(got, reference(scores, targets, weights, KS, num_items=n), 1e-9)


@pytest.mark.parametrize("mode", ["loo", "multi"])
def test_target_positions_match_reference(mode):
    rng = np.random.default_rng(4 if mode == "loo" else 5)
    for _ in range(100):
        scores, targets, _ = random_case(rng, mode)
        s, t = torch.tensor(scores), torch.tensor(targets)
        positions, valid = target_positions(s, t)
        assert valid.sum(1).tolist() == targets.sum(1).tolist()
        for row in range(len(scores)):
            got = positions[row][valid[row]].tolist()
            assert got == reference_positions(scores[row], targets[row])


def test_loo_fast_path_agrees_with_multi_path():
    rng = np.random.default_rng(6)
    for _ in range(100):
        scores, targets, _ = random_case(rng, "loo")
        s, t = torch.tensor(scores, dtype=torch.float32), torch.tensor(targets)
        index, valid = target_slots(t)
        if index.shape[1] != 1:
            continue
        fast = _positions_single(s, index)
        slow = _positions_multi(s, torch.stack(t.nonzero(as_tuple=True)), index, valid)
        assert torch.equal(fast[valid], slow[valid])
        for row in np.flatnonzero(targets.any(1)):
            assert fast[row, 0].item() == reference_positions(scores[row], targets[row])[0]


def test_loo_batches_take_the_sort_free_path(monkeypatch):
    def fail(*args):
        raise AssertionError("multi-target path used for a leave-one-out batch")

    monkeypatch.setattr("lit_recs.metrics._positions_multi", fail)
    targets = torch.zeros(4, 6, dtype=torch.bool)
    targets[[0, 1, 3], [2, 0, 5]] = True  # row 2 has no target
    positions, valid = target_positions(torch.arange(24.0).view(4, 6), targets)
    assert positions.shape == (4, 1) and valid[:, 0].tolist() == [True, True, False, True]
    assert positions[valid].tolist() == [3, 5, 0]


def test_row_with_every_item_a_target():
    scores = torch.tensor([[1.0, 3.0, 3.0, -math.inf]])
    positions, valid = target_positions(scores, torch.ones(1, 4, dtype=torch.bool))
    assert valid.all()
    assert positions.tolist() == [[2, 0, 1, 3]]


# ----------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("distinct", [False, True])
def test_independent_of_batching_and_process_split(distinct):
    rng = np.random.default_rng(7)
    b, n = 37, 25
    if distinct:
        scores = rng.permuted(np.tile(np.arange(n, dtype=np.float64), (b, 1)), axis=1)
    else:
        scores = rng.integers(0, 5, size=(b, n)).astype(np.float64)
    targets = rng.random((b, n)) < 0.15
    targets[::3] = False
    targets[::3, 0] = True  # a mix of single- and multi-target rows
    targets[5] = False
    scores[(rng.random((b, n)) < 0.2) & ~targets] = -np.inf
    weights = (rng.random(b) > 0.1).astype(np.float64)
    s, t, w = torch.tensor(scores), torch.tensor(targets), torch.tensor(weights)
    num_items = n if distinct else None

    def metric_over(rows, batch):
        metric = RankingMetrics(ks=KS, num_items=num_items)
        for lo in range(0, len(rows), batch):
            part = rows[lo : lo + batch]
            metric.update(s[part], t[part], w[part])
        return metric

    everyone = torch.arange(b)
    want = {k: float(v) for k, v in metric_over(everyone, b).compute().items()}
    assert len(want) == len(KS) * (len(NAMES) + distinct)
    for batch in (1, 4, 16):
        got = {k: float(v) for k, v in metric_over(everyone, batch).compute().items()}
        assert_close(got, want, 1e-12)

    perm = torch.as_tensor(rng.permutation(b))
    rank0, rank1 = metric_over(perm[:15], 4), metric_over(perm[15:], 7)
    summed = RankingMetrics(ks=KS, num_items=num_items)  # all-reduce(sum) by hand
    summed.update(s[:0], t[:0], w[:0])  # an empty batch is a no-op
    for name, value in rank0.metric_state.items():
        setattr(summed, name, value + rank1.metric_state[name])
    assert_close({k: float(v) for k, v in summed.compute().items()}, want, 1e-12)
    rank0.merge_state(rank1)
    assert_close({k: float(v) for k, v in rank0.compute().items()}, want, 1e-12)


def test_states_are_float64_sums():
    metric = RankingMetrics(ks=(1, 5), num_items=7)
    assert set(metric._reductions) == {f"{n}_sum" for n in NAMES} | {"weight_sum", "item_counts"}
    for name, state in metric.metric_state.items():
        assert state.dtype == torch.float64, name
        assert metric._reductions[name] is dim_zero_sum, name


# ----------------------------------------------------------------------------- special models
def test_constant_model_gets_no_credit_from_ties():
    rng = np.random.default_rng(8)
    b, n = 20, 30
    targets = rng.random((b, n)) < 0.2
    targets[:, 0] = True
    targets[:, 10:] = False  # >= 20 non-targets per row
    scores = torch.zeros(b, n)
    got = run_metric(scores.numpy(), targets, np.ones(b), ks=(1, 5, 10, 20))
    for k in (1, 5, 10, 20):
        for name in NAMES:
            assert got[f"{name}@{k}"] == 0.0, (name, k)


def test_perfect_model():
    rng = np.random.default_rng(9)
    b, n = 16, 20
    targets = rng.random((b, n)) < 0.3
    targets[:, 3] = True
    scores = targets.astype(np.float64)  # targets 1, non-targets tied at 0
    scores[(rng.random((b, n)) < 0.3) & ~targets] = -np.inf
    got = run_metric(scores, targets, np.ones(b), ks=(1, 3, 10))
    n_t = targets.sum(1)
    for k in (1, 3, 10):
        assert got[f"ndcg@{k}"] == pytest.approx(1.0, abs=1e-12)
        assert got[f"hr@{k}"] == 1.0
        assert got[f"mrr@{k}"] == 1.0
        assert got[f"recall@{k}"] == pytest.approx(np.mean(np.minimum(n_t, k) / n_t), abs=1e-12)


def test_hand_checked_ties():
    # target item 1 scores 2 and ties with non-targets 0 and 3 -> position 2
    metric = RankingMetrics(ks=(1, 3))
    metric.update(torch.tensor([[2.0, 2.0, 1.0, 2.0]]), torch.tensor([[False, True, False, False]]))
    got = {k: float(v) for k, v in metric.compute().items()}
    assert got["hr@1"] == 0.0 and got["mrr@1"] == 0.0
    assert got["hr@3"] == 1.0 and got["recall@3"] == 1.0
    assert got["mrr@3"] == pytest.approx(1 / 3)
    assert got["ndcg@3"] == pytest.approx(0.5)
    assert got["precision@3"] == pytest.approx(1 / 3)


def test_coverage_hand_checked():
    inf = -math.inf
    scores = torch.tensor(
        [
            [3.0, 2.0, 1.0, 0.0, inf],  # top1 {0}, top2 {0, 1}, top3 {0, 1, 2}
            [0.0, 5.0, inf, inf, inf],  # top1 {1}, top2 {1, 0}, top3 {1, 0} (-inf ignored)
            [0.0, 0.0, 0.0, 0.0, 9.0],  # weight 0: not counted
            [0.0, 0.0, 0.0, 9.0, 9.0],  # no target: not counted
        ]
    )
    targets = torch.zeros(4, 5, dtype=torch.bool)
    targets[0, 3] = targets[1, 0] = targets[2, 4] = True
    metric = RankingMetrics(ks=(1, 2, 3), num_items=5)
    metric.update(scores, targets, torch.tensor([1.0, 1.0, 0.0, 1.0]))
    got = metric.compute()
    assert float(got["coverage@1"]) == pytest.approx(0.4)
    assert float(got["coverage@2"]) == pytest.approx(0.4)
    assert float(got["coverage@3"]) == pytest.approx(0.6)
    assert float(metric.weight_sum) == 2.0


# ----------------------------------------------------------------------------- errors
def test_nan_scores_raise():
    metric = RankingMetrics(ks=(1,))
    scores = torch.tensor([[0.5, float("nan"), 0.1]])
    with pytest.raises(ValueError, match="NaN"):
        metric.update(scores, torch.tensor([[True, False, False]]))


def test_no_users_counted_raises():
    metric = RankingMetrics(ks=(1,))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no user was counted"):
        metric.compute()  # never updated
    metric.update(
        torch.zeros(2, 3),
        torch.tensor([[True, False, False], [False] * 3]),
        torch.tensor([0.0, 1.0]),
    )  # padded row with a target, real row without
    with pytest.raises(ValueError, match="no user was counted"):
        metric.compute()


def test_bad_inputs_raise():
    metric = RankingMetrics(ks=(1,), num_items=4)
    with pytest.raises(ValueError, match="num_items"):
        metric.update(torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        metric.update(torch.zeros(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="weights"):
        metric.update(torch.zeros(2, 4), torch.ones(2, 4, dtype=torch.bool), torch.ones(3))
    with pytest.raises(ValueError, match="ks"):
        RankingMetrics(ks=(5, 5))


def test_targets_as_pairs_give_the_metrics_of_the_mask():
    """EvalBatch hands (row, item) pairs to RankingMetrics; a [B, I] mask must mean the same."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (6, 9), generator=gen).float()  # many ties
    scores[0, 2] = -math.inf
    mask = torch.rand(6, 9, generator=gen) < 0.3
    mask[4] = False  # a row without targets
    pairs = torch.stack(mask.nonzero(as_tuple=True))  # [2, T] sorted by row then item
    weights = torch.tensor([1.0, 1.0, 0.5, 1.0, 1.0, 0.0])
    from_mask, from_pairs = RankingMetrics(KS, num_items=9), RankingMetrics(KS, num_items=9)
    from_mask.update(scores, mask, weights)
    from_pairs.update(scores, pairs, weights)
    a, b = from_mask.compute(), from_pairs.compute()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"pairs \[2, T\] long or a bool mask"):
        from_pairs.update(scores, pairs.float(), weights)
