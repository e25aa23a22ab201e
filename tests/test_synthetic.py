"""Synthetic: shapes, determinism, exact sampling, and that the planted structure is real."""

from __future__ import annotations

import numpy as np
import pytest

import lit_recs.data.datasets.synthetic as synthetic
from lit_recs.data.datasets.synthetic import Synthetic
from lit_recs.data.interactions import Interactions


@pytest.fixture(scope="module")
def default() -> tuple[Synthetic, Interactions]:
    src = Synthetic()
    return src, src.load()


def assert_valid(inter: Interactions, src: Synthetic) -> None:
    """Sizes, dtypes, ranges, grouping by user, no duplicate pair, increasing timestamps."""
    n_u, n_i = src.num_users, src.num_items
    assert (inter.num_users, inter.num_items, inter.name) == (n_u, n_i, "synthetic")
    np.testing.assert_array_equal(inter.user_ids, np.arange(n_u))
    np.testing.assert_array_equal(inter.item_ids, np.arange(n_i))
    assert inter.users.dtype == inter.items.dtype == inter.timestamps.dtype == np.int64
    counts = inter.user_counts()
    np.testing.assert_array_equal(counts, src.planted().counts)
    assert counts.min() >= 1 and counts.max() <= n_i
    assert np.all(np.diff(inter.users) >= 0)  # grouped by user, in time order
    assert inter.items.min() >= 0 and inter.items.max() < n_i
    pairs = inter.users * n_i + inter.items
    assert len(np.unique(pairs)) == len(inter), "duplicate (user, item) pair"
    same_user = inter.users[1:] == inter.users[:-1]
    assert np.all(np.diff(inter.timestamps)[same_user] > 0), "timestamps not increasing"
    assert inter.timestamps.min() > 0
    if src.with_ratings:
        assert inter.ratings.dtype == np.float32
        assert set(np.unique(inter.ratings)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    else:
        assert inter.ratings is None


def test_sizes_and_ranges(default):
    src, inter = default
    assert_valid(inter, src)
    assert 18_000 < len(inter) < 22_000  # 1000 users x ~20
    assert 3.0 < inter.ratings.mean() < 4.0
    assert len(np.unique(inter.ratings)) == 5


def test_deterministic():
    a = Synthetic(300, 200, 15, seed=3).load()
    b = Synthetic(300, 200, 15, seed=3).load()
    assert a.fingerprint() == b.fingerprint()
    np.testing.assert_array_equal(a.ratings, b.ratings)
    assert Synthetic(300, 200, 15, seed=4).load().fingerprint() != a.fingerprint()


def test_options_and_validation():
    src = Synthetic(50, 40, 5, rank=1, popularity_exponent=0, sequential_strength=1.0,
                    noise=0, with_ratings=False)  # fmt: skip
    assert_valid(src.load(), src)
    with pytest.raises(ValueError, match="noise"):
        Synthetic(noise=1.5)
    with pytest.raises(ValueError, match="num_items"):
        Synthetic(num_items=0)


def test_users_can_hold_every_item():
    """Counts capped at num_items; users exhausting the catalogue still get distinct items."""
    src = Synthetic(200, 30, 100, noise=0.0)
    inter = src.load()
    assert_valid(inter, src)
    assert np.all(inter.user_counts() == 30)


def test_many_chunks(monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK_BITS", 64 * 200)  # 64 users per chunk
    monkeypatch.setattr(synthetic, "STREAM_CELLS", 64 * 8)  # short streams: many re-draws
    src = Synthetic(500, 200, 30)
    inter = src.load()
    assert_valid(inter, src)
    assert inter.fingerprint() == src.load().fingerprint()


def test_without_replacement_sampling_is_exact():
    """1st item ~ p_u; 2nd ~ p_u restricted to the other items (sampling w/o replacement)."""
    src = Synthetic(20_000, 12, 3, sequential_strength=0.0, noise=0.2, seed=1)
    inter, truth = src.load(), src.planted()
    indptr, seq = inter.sequences()
    p = truth.item_distribution(np.arange(src.num_users))  # [U, I]
    first = np.bincount(seq[indptr[:-1]], minlength=12) / src.num_users
    np.testing.assert_allclose(first, p.mean(0), atol=0.012)
    two = np.flatnonzero(np.diff(indptr) >= 2)
    second = np.bincount(seq[indptr[two] + 1], minlength=12) / len(two)
    q = p[two]  # P(2nd = i) = sum_j p_j p_i / (1 - p_j), j != i
    expect = (q * ((q / (1 - q)).sum(1, keepdims=True) - q / (1 - q))).mean(0)
    np.testing.assert_allclose(second, expect, atol=0.012)


def test_sequential_structure(default):
    src, inter = default
    successor = src.planted().successor
    assert np.all(np.sort(successor) == np.arange(src.num_items))  # a permutation ...
    seen, i = {0}, 0
    for _ in range(src.num_items - 1):  # ... and a single cycle
        i = int(successor[i])
        seen.add(i)
    assert len(seen) == src.num_items
    _, seq = inter.sequences()
    same = inter.users[1:] == inter.users[:-1]
    follows = (seq[1:] == successor[seq[:-1]])[same].mean()
    assert follows > 0.35  # strength 0.5, minus successors already had
    chance = inter.item_counts().max() / len(inter)  # bound on chance of any given next item
    assert follows > 20 * chance
    plain = Synthetic(sequential_strength=0.0).load()
    _, seq0 = plain.sequences()
    same0 = plain.users[1:] == plain.users[:-1]
    assert (seq0[1:] == successor[seq0[:-1]])[same0].mean() < 0.05


def test_low_rank_beats_popularity():
    """Held-out last item: the true p_u ranks it far better than popularity does."""
    src = Synthetic(sequential_strength=0.0)
    inter, truth = src.load(), src.planted()
    indptr, seq = inter.sequences()
    last = seq[indptr[1:] - 1]
    train = np.ones(len(seq), dtype=bool)
    train[indptr[1:] - 1] = False
    rows = np.repeat(np.arange(src.num_users), np.diff(indptr) - 1)

    def hit_rate(scores: np.ndarray, k: int = 10) -> float:
        scores = scores.copy()
        scores[rows, seq[train]] = -np.inf  # rank only items the user has not had
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        return float((top == last[:, None]).any(1).mean())

    popularity = np.bincount(seq[train], minlength=src.num_items).astype(float)
    pop_hr = hit_rate(np.tile(popularity, (src.num_users, 1)))
    true_hr = hit_rate(truth.item_distribution(np.arange(src.num_users)))
    assert true_hr > 1.8 * pop_hr, (true_hr, pop_hr)


def test_popularity_and_ratings(default):
    src, inter = default
    truth = src.planted()
    counts = inter.item_counts()
    assert np.sort(counts)[-src.num_items // 10 :].sum() > 0.35 * len(inter)  # long tail
    top = np.argsort(-truth.popularity)[: src.num_items // 10]  # top 10% of the Zipf prior
    flat = Synthetic(popularity_exponent=0.0).load().item_counts()  # same factors, no prior
    assert counts[top].sum() / len(inter) > 1.5 * flat[top].sum() / flat.sum()
    z = truth.affinity(inter.users, inter.items)
    assert np.corrcoef(z, inter.ratings)[0, 1] > 0.4


def test_medium_size_runs():
    src = Synthetic(20_000, 5_000, 50)
    inter = src.load()
    assert 0.97e6 < len(inter) < 1.03e6
    assert inter.binary_csr().nnz == len(inter)
