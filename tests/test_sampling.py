"""Negative sampling vs a dense positives matrix, distributions, and the batch / shard samplers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from lit_recs.data import sampling
from lit_recs.data.sampling import EpochBatchSampler, EvalShardSampler, NegativeSampler, eval_negatives

NUM_USERS, NUM_ITEMS = 30, 50


def dense_positives(seed: int = 0) -> np.ndarray:
    """[U, I] 0/1; user 0 has all but 3 items, user 1 all but 5, user 2 none, the rest ~half."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((NUM_USERS, NUM_ITEMS)) < 0.5).astype(np.float32)
    dense[0] = 1
    dense[0, [4, 17, 33]] = 0
    dense[1] = 1
    dense[1, [0, 21, 22, 40, 49]] = 0
    dense[2] = 0
    return dense


def as_csr(dense: np.ndarray) -> sp.csr_matrix:
    return sp.csr_matrix(dense)


# ------------------------------------------------------------------ NegativeSampler
@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
@pytest.mark.parametrize("distinct", [False, True])
def test_sample_never_returns_a_positive(distribution, distinct):
    dense = dense_positives(1)
    sampler = NegativeSampler(as_csr(dense), distribution)
    users = np.repeat(np.arange(NUM_USERS), 20)
    n = 2 if distinct else 8  # user 0 has only 3 negatives
    neg = sampler.sample(users, n, np.random.default_rng(0), distinct=distinct)
    assert neg.shape == (len(users), n) and neg.dtype == np.int64
    assert neg.min() >= 0 and neg.max() < NUM_ITEMS
    for b, u in enumerate(users):
        for j in neg[b]:
            assert dense[u, j] == 0, (u, j)
    assert set(neg[users == 0].ravel().tolist()) <= {4, 17, 33}
    assert set(neg[users == 1].ravel().tolist()) <= {0, 21, 22, 40, 49}


@pytest.mark.parametrize("table", [True, False])
def test_sample_is_positive_matches_dense(monkeypatch, table: bool):
    """Both membership paths: the dense bool table and the binary search over sorted keys."""
    monkeypatch.setattr(sampling, "DENSE_CELLS", NUM_USERS * NUM_ITEMS if table else 0)
    dense = dense_positives(2)
    sampler = NegativeSampler(as_csr(dense))
    assert (sampler._dense is not None) == table
    users = np.arange(NUM_USERS)
    items = np.tile(np.arange(NUM_ITEMS), (NUM_USERS, 1))
    np.testing.assert_array_equal(sampler.is_positive(users[:, None], items), dense > 0)
    rng = np.random.default_rng(3)
    u, i = rng.integers(0, NUM_USERS, 500), rng.integers(0, NUM_ITEMS, (500, 4))
    np.testing.assert_array_equal(sampler.is_positive(u[:, None], i), dense[u[:, None], i] > 0)


def test_sample_dense_user_distinct_gets_exactly_the_remaining_items():
    dense = np.ones((2, 12), np.float32)
    dense[0, [2, 5, 11]] = 0
    dense[1, 7] = 0
    sampler = NegativeSampler(as_csr(dense))
    neg = sampler.sample(np.zeros(50, dtype=np.int64), 3, np.random.default_rng(1), distinct=True)
    for row in neg:
        assert sorted(row.tolist()) == [2, 5, 11]
    neg = sampler.sample(np.array([1, 0, 1]), 1, np.random.default_rng(1))
    assert neg[:, 0].tolist()[::2] == [7, 7] and neg[1, 0] in (2, 5, 11)


def test_sample_distinct_rows_have_no_repeats():
    dense = dense_positives(4)
    sampler = NegativeSampler(as_csr(dense))
    users = np.repeat(np.arange(2, NUM_USERS), 10)
    n = 15
    neg = sampler.sample(users, n, np.random.default_rng(2), distinct=True)
    for b, u in enumerate(users):
        assert len(set(neg[b].tolist())) == n
        assert not dense[u, neg[b]].any()
    # without `distinct`, repeats do happen at this size (so the check above can fail)
    loose = sampler.sample(users, n, np.random.default_rng(2))
    assert any(len(set(r.tolist())) < n for r in loose)


def test_sample_deterministic_for_seeded_rng():
    sampler = NegativeSampler(as_csr(dense_positives(5)), "popularity", alpha=0.7)
    users = np.arange(2, NUM_USERS)
    a = sampler.sample(users, 6, np.random.default_rng(42))
    b = sampler.sample(users, 6, np.random.default_rng(42))
    c = sampler.sample(users, 6, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_user_with_every_item_raises():
    dense = dense_positives(6)
    dense[5] = 1
    sampler = NegativeSampler(as_csr(dense))
    with pytest.raises(ValueError, match="user 5"):
        sampler.sample(np.array([3, 5, 7]), 2, np.random.default_rng(0))


def test_not_enough_distinct_negatives_raises():
    sampler = NegativeSampler(as_csr(dense_positives(7)))
    with pytest.raises(ValueError, match="items left to draw"):
        sampler.sample(np.array([0]), 4, np.random.default_rng(0), distinct=True)  # only 3 left


def test_bad_distribution_raises():
    with pytest.raises(ValueError, match="distribution"):
        NegativeSampler(as_csr(dense_positives()), "zipf")


def chi_square(observed: np.ndarray, expected_p: np.ndarray, draws: int) -> tuple[float, int]:
    support = expected_p > 0
    exp = expected_p[support] * draws
    stat = float((((observed[support] - exp) ** 2) / exp).sum())
    return stat, int(support.sum()) - 1


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.0, 2.0])
def test_popularity_frequencies_follow_count_power_alpha(alpha):
    rng = np.random.default_rng(8)
    dense = np.zeros((NUM_USERS, NUM_ITEMS), np.float32)
    # skewed popularity, with some items never seen; user 0 has no positives (no rejection)
    p_item = np.linspace(0.02, 0.9, NUM_ITEMS)
    dense[1:] = rng.random((NUM_USERS - 1, NUM_ITEMS)) < p_item
    dense[:, [0, 9, 26]] = 0
    counts = dense.sum(0)
    assert (counts == 0).sum() == 3 and (counts > 0).sum() > 40
    sampler = NegativeSampler(as_csr(dense), "popularity", alpha=alpha)
    draws = 200_000
    neg = sampler.sample(np.zeros(draws // 10, np.int64), 10, np.random.default_rng(9))
    observed = np.bincount(neg.ravel(), minlength=NUM_ITEMS).astype(np.float64)
    weights = np.array([c ** alpha if c > 0 else 0.0 for c in counts])
    expected = weights / weights.sum()
    assert observed[counts == 0].sum() == 0  # never-seen items are never drawn
    stat, dof = chi_square(observed, expected, draws)
    assert stat < dof + 6 * np.sqrt(2 * dof), (stat, dof)
    if alpha == 0.0:  # uniform over the items with a nonzero count
        np.testing.assert_allclose(expected[counts > 0], 1 / (counts > 0).sum())
    # and the test is sharp enough to reject the uniform distribution when alpha != 0
    if alpha != 0.0:
        uniform = (counts > 0) / (counts > 0).sum()
        assert chi_square(observed, uniform, draws)[0] > dof + 6 * np.sqrt(2 * dof)


def test_uniform_frequencies():
    dense = dense_positives(10)
    sampler = NegativeSampler(as_csr(dense))
    draws = 100_000
    neg = sampler.sample(np.full(draws // 10, 2, np.int64), 10, np.random.default_rng(3))  # user 2: none
    observed = np.bincount(neg.ravel(), minlength=NUM_ITEMS).astype(np.float64)
    stat, dof = chi_square(observed, np.full(NUM_ITEMS, 1 / NUM_ITEMS), draws)
    assert stat < dof + 6 * np.sqrt(2 * dof)


# ------------------------------------------------------------------ eval_negatives
@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_eval_negatives_distinct_exclude_positives_and_are_seeded(distribution):
    dense = dense_positives(11)
    users = np.arange(NUM_USERS)
    n = 2
    a = eval_negatives(as_csr(dense), users, n, distribution, seed=5)
    assert a.shape == (NUM_USERS, n)
    np.testing.assert_array_equal(a, eval_negatives(as_csr(dense), users, n, distribution, seed=5))
    users = np.arange(2, NUM_USERS)  # users 0 and 1 have fewer than 12 items left
    n = 12
    a = eval_negatives(as_csr(dense), users, n, distribution, seed=5)
    b = eval_negatives(as_csr(dense), users, n, distribution, seed=5)
    c = eval_negatives(as_csr(dense), users, n, distribution, seed=6)
    assert a.shape == (len(users), n)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for row, u in zip(a, users):
        assert len(set(row.tolist())) == n
        assert not dense[u, row].any()


# ------------------------------------------------------------------ EvalShardSampler
@pytest.mark.parametrize("num_rows", [0, 1, 7, 10, 64, 101])
@pytest.mark.parametrize("batch_size", [1, 3, 16])
@pytest.mark.parametrize("replicas", [1, 2, 3, 8])
def test_eval_shards_cover_each_row_once(num_rows, batch_size, replicas):
    per_rank = []
    for rank in range(replicas):
        sampler = EvalShardSampler(num_rows, batch_size, replicas, rank)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        per_rank.append(batches)
    sizes = [[len(b) for b in batches] for batches in per_rank]
    assert all(s == sizes[0] for s in sizes)  # same number of batches, same sizes on every rank
    assert all(0 < s <= batch_size for s in sizes[0])
    flat = np.concatenate([np.concatenate(b) for b in per_rank if b] or [np.empty(0, np.int64)])
    real = flat[flat != -1]
    assert sorted(real.tolist()) == list(range(num_rows))  # each row exactly once
    assert ((flat == -1) | ((flat >= 0) & (flat < num_rows))).all()
    assert len(flat) - len(real) < replicas  # at most one padding slot per rank


def test_eval_shard_bad_rank():
    with pytest.raises(ValueError, match="rank"):
        EvalShardSampler(10, 2, num_replicas=2, rank=2)


# ------------------------------------------------------------------ EpochBatchSampler
def epoch_rows(sampler: EpochBatchSampler) -> list[np.ndarray]:
    out = []
    for b, (epoch, index, rows) in enumerate(sampler):
        assert epoch == sampler.epoch and index == b
        out.append(np.asarray(rows))
    assert len(out) == len(sampler)
    return out


@pytest.mark.parametrize("num_rows,batch_size,replicas", [(100, 7, 1), (100, 7, 3), (17, 4, 4),
                                                           (64, 8, 2), (5, 10, 2), (3, 2, 5)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_epoch_batches_disjoint_and_sized(num_rows, batch_size, replicas, drop_last):
    seen_epochs = []
    for epoch in (0, 1):
        shards = []
        for rank in range(replicas):
            sampler = EpochBatchSampler(num_rows, batch_size, seed=3, num_replicas=replicas,
                                        rank=rank, drop_last=drop_last)
            sampler.set_epoch(epoch)
            batches = epoch_rows(sampler)
            share = num_rows // replicas
            if drop_last:
                assert all(len(b) == batch_size for b in batches)
                assert len(batches) == share // batch_size
            else:
                assert sum(len(b) for b in batches) == share
                assert all(0 < len(b) <= batch_size for b in batches)
            shards.append(np.concatenate(batches) if batches else np.empty(0, np.int64))
        flat = np.concatenate(shards)
        assert len(set(flat.tolist())) == len(flat)  # disjoint across ranks and batches
        assert ((flat >= 0) & (flat < num_rows)).all()
        if not drop_last:
            assert len(flat) == replicas * (num_rows // replicas)
        seen_epochs.append(flat)
    if len(seen_epochs[0]) > 3:
        assert not np.array_equal(seen_epochs[0], seen_epochs[1])


def test_epoch_permutation_changes_per_epoch_and_is_seeded():
    def rows(seed: int, epoch: int) -> list[int]:
        s = EpochBatchSampler(200, 16, seed=seed, num_replicas=2, rank=1)
        s.set_epoch(epoch)
        return np.concatenate(epoch_rows(s)).tolist()

    assert rows(0, 0) == rows(0, 0)
    assert rows(0, 4) == rows(0, 4)
    assert rows(0, 0) != rows(0, 1)
    assert rows(0, 1) != rows(0, 2)
    assert rows(0, 0) != rows(1, 0)
    # a whole permutation on one process
    s = EpochBatchSampler(200, 16, seed=0)
    assert sorted(np.concatenate(epoch_rows(s)).tolist()) == list(range(200))
    assert np.concatenate(epoch_rows(s)).tolist() != list(range(200))


def test_users_with_few_items_left_always_get_their_negatives() -> None:
    """Rejection alone fails often when 1-3 of 1000 items are left; the exact fallback never does."""
    num_items = 1000
    rows, cols = [], []
    for user, left in enumerate([1, 2, 3]):
        rows += [user] * (num_items - left)
        cols += list(range(left, num_items))
    pos = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(3, num_items))
    sampler = NegativeSampler(pos)
    for seed in range(20):
        neg = sampler.sample(np.array([0, 1, 2]), 1, np.random.default_rng(seed))
        assert neg[0, 0] == 0 and neg[1, 0] in (0, 1) and neg[2, 0] in (0, 1, 2)
        both = sampler.sample(np.array([2]), 3, np.random.default_rng(seed), distinct=True)
        assert sorted(both[0].tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="user 1 has 2 items left"):
        sampler.sample(np.array([1]), 3, np.random.default_rng(0), distinct=True)


def reference_sample(sampler: NegativeSampler, users: np.ndarray, n: int,
                     rng: np.random.Generator, distinct: bool) -> np.ndarray:
    """The plain algorithm `sample` speeds up: every round re-checks every row at once."""
    def rejected(neg: np.ndarray) -> np.ndarray:
        bad = sampler.is_positive(users[:, None], neg)
        return bad | brute_repeats(neg) if distinct else bad

    if sampler.hard_pool is not None and sampler.distribution == "hard":
        pool = sampler.hard_pool[users]
        neg = np.take_along_axis(pool, rng.integers(0, pool.shape[1], (len(users), n)), 1)
    else:
        neg = sampler._draw((len(users), n), rng)
    for _ in range(sampling.FAST_ROUNDS):
        bad = rejected(neg)
        if not bad.any():
            return neg
        neg[bad] = sampler._draw((int(bad.sum()),), rng)
    return sampler._fallback(users, neg, rejected(neg), rng, distinct)


def brute_repeats(x: np.ndarray) -> np.ndarray:
    return np.array([[v in row[:j] for j, v in enumerate(row)] for row in x.tolist()],
                    dtype=bool).reshape(x.shape)


@pytest.mark.parametrize("distribution", ["uniform", "popularity", "hard"])
@pytest.mark.parametrize("distinct", [False, True])
@pytest.mark.parametrize(("check_cells", "rounds"), [(1, 1), (7, 32), (1 << 20, 2)])
def test_sample_equals_the_plain_rejection_loop(monkeypatch, distribution, distinct, check_cells,
                                                rounds):
    """Re-checking only redrawn rows, in blocks of CHECK_CELLS draws, draws the very same items
    (the sampled protocol's negatives must not change), the exact fallback included (few
    rounds: users 0 and 1, with 3 and 5 items left, reach it)."""
    monkeypatch.setattr(sampling, "CHECK_CELLS", check_cells)
    monkeypatch.setattr(sampling, "FAST_ROUNDS", rounds)
    calls = []
    fallback = NegativeSampler._fallback
    monkeypatch.setattr(NegativeSampler, "_fallback",
                        lambda self, *a: calls.append(1) or fallback(self, *a))
    dense = dense_positives(6)
    sampler = NegativeSampler(as_csr(dense), distribution, alpha=0.8)
    if distribution == "hard":
        sampler.hard_pool = np.random.default_rng(0).integers(0, NUM_ITEMS, (NUM_USERS, 6))
    users = np.repeat(np.arange(NUM_USERS), 3)
    n = 3 if distinct else 5
    for seed in range(3):
        got = sampler.sample(users, n, np.random.default_rng(seed), distinct)
        reached = len(calls)
        want = reference_sample(sampler, users, n, np.random.default_rng(seed), distinct)
        np.testing.assert_array_equal(got, want)
        assert reached or rounds > 1  # one rejection round leaves draws for the fallback


def test_repeats_matches_brute_force():
    x = np.random.default_rng(0).integers(0, 6, (200, 5))
    np.testing.assert_array_equal(sampling._repeats(x), brute_repeats(x))
    assert not sampling._repeats(np.zeros((4, 1), np.int64)).any()
    assert sampling._repeats(np.zeros((0, 3), np.int64)).shape == (0, 3)
