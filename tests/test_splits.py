"""Splits: partitions of the rows, determinism, and the per-split rules vs brute force."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest

from lit_recs.data.interactions import Interactions
from lit_recs.data.splits import (
    Split,
    fold_split,
    global_random_split,
    leave_one_out,
    random_split,
    split,
    temporal_split,
)

# The tied logs below make leave-one-out and temporal splits warn about time ties (tested at the end).
pytestmark = pytest.mark.filterwarnings(r"ignore:\S+ (leave-one-out|temporal split)\b:UserWarning")


def tied_log(seed: int, num_users: int = 40, num_items: int = 30, t_max: int = 5) -> Interactions:
    """Users with 1, 2, 3, ... events, timestamps from a tiny range (many ties), ratings = row id."""
    rng = np.random.default_rng(seed)
    sizes = np.concatenate([[1, 1, 2, 2, 3, 4], rng.integers(1, 25, size=num_users - 6)])
    users = np.repeat(np.arange(num_users), sizes)
    users = users[rng.permutation(len(users))]  # interleave users in file order
    n = len(users)
    items = rng.integers(0, num_items, size=n)
    ts = rng.integers(0, t_max, size=n)
    return Interactions.from_raw(users, items, np.arange(n, dtype=np.float32), ts)


def no_dup_log(seed: int, num_users: int = 30, num_items: int = 25, n: int = 400) -> Interactions:
    """Distinct (user, item) pairs only."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(num_users * num_items, size=n, replace=False)
    ts = rng.integers(0, 8, size=n)
    return Interactions.from_raw(flat // num_items, flat % num_items,
                                 np.arange(n, dtype=np.float32), ts)


def rows_of(inter: Interactions) -> Counter:
    """Multiset of (user, item, timestamp, row id)."""
    return Counter(zip(inter.users.tolist(), inter.items.tolist(), inter.timestamps.tolist(),
                       inter.ratings.astype(int).tolist()))


def row_ids(inter: Interactions) -> list[int]:
    return inter.ratings.astype(int).tolist()


def all_splits(inter: Interactions, seed: int = 0) -> dict[str, Split]:
    return {
        "loo": leave_one_out(inter),
        "random": random_split(inter, (0.7, 0.15, 0.15), seed=seed),
        "temporal": temporal_split(inter, (0.6, 0.2, 0.2)),
        "global_random": global_random_split(inter, (0.7, 0.2, 0.1), seed=seed),
        "fold": fold_split(inter, 2, 4, 0.25, seed=seed),
    }


@pytest.mark.parametrize("seed", range(3))
def test_every_split_partitions_the_rows(seed):
    inter = tied_log(seed)
    for name, s in all_splits(inter, seed).items():
        parts = (s.train, s.val, s.test)
        total = rows_of(s.train) + rows_of(s.val) + rows_of(s.test)
        assert total == rows_of(inter), name
        ids = row_ids(s.train) + row_ids(s.val) + row_ids(s.test)
        assert sorted(ids) == list(range(len(inter))), name  # every row exactly once
        for p in parts:  # shared id space, no re-indexing
            assert (p.num_users, p.num_items) == (inter.num_users, inter.num_items), name
            assert p.user_ids is inter.user_ids and p.item_ids is inter.item_ids
        assert len(s.val) > 0 and len(s.test) > 0, name


def test_split_dispatch_and_unknown_name():
    inter = tied_log(0)
    assert row_ids(split(inter, "loo").test) == row_ids(leave_one_out(inter).test)
    assert row_ids(split(inter, "random", (0.8, 0.1, 0.1), 3).test) == row_ids(
        random_split(inter, (0.8, 0.1, 0.1), 3).test)
    assert row_ids(split(inter, "temporal", (0.5, 0.25, 0.25)).val) == row_ids(
        temporal_split(inter, (0.5, 0.25, 0.25)).val)
    with pytest.raises(ValueError, match="split must be"):
        split(inter, "chronological")


@pytest.mark.parametrize(
    "ratios", [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1), (0.8, 0.2), (0.8, 0.1, 0.05)]
)
def test_bad_ratios_raise(ratios):
    inter = tied_log(0)
    with pytest.raises(ValueError, match="split_ratios"):
        random_split(inter, ratios)
    with pytest.raises(ValueError, match="split_ratios"):
        temporal_split(inter, ratios)


# ------------------------------------------------------------------ leave-one-out
@pytest.mark.parametrize("seed", range(3))
def test_leave_one_out_matches_brute_force(seed):
    inter = tied_log(seed)
    s = leave_one_out(inter)
    exp_val, exp_test = set(), set()
    for u in range(inter.num_users):
        rows = [r for r in range(len(inter)) if inter.users[r] == u]
        rows.sort(key=lambda r: (inter.timestamps[r], r))  # time, ties by file order
        if len(rows) >= 2:
            exp_test.add(rows[-1])
        if len(rows) >= 3:
            exp_val.add(rows[-2])
    assert set(row_ids(s.test)) == exp_test
    assert set(row_ids(s.val)) == exp_val
    counts = inter.user_counts()
    test_users = Counter(s.test.users.tolist())
    val_users = Counter(s.val.users.tolist())
    for u in range(inter.num_users):
        assert test_users[u] == (1 if counts[u] >= 2 else 0)
        assert val_users[u] == (1 if counts[u] >= 3 else 0)
    single = np.flatnonzero(counts == 1)
    assert len(single) >= 2 and set(single) <= set(s.train.users.tolist())


def test_leave_one_out_ties_go_to_the_later_row():
    # user 0: three events all at t=7 -> rows 0, 1, 2 in file order; row 3 is earlier
    inter = Interactions.from_raw(np.zeros(4, int), np.array([10, 11, 12, 13]),
                                  np.arange(4, dtype=np.float32), np.array([7, 7, 7, 1]))
    s = leave_one_out(inter)
    assert row_ids(s.test) == [2]
    assert row_ids(s.val) == [1]
    assert sorted(row_ids(s.train)) == [0, 3]


# ------------------------------------------------------------------ random
def ratio_counts_reference(n: int, ratios: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, val, test) for a user with n events: floor(ratio * n); test then val raised to 1
    when the ratio is > 0 and the events not yet given away are at least 2."""
    n_val = math.floor(ratios[1] * n)
    n_test = math.floor(ratios[2] * n)
    if n_test == 0 and ratios[2] > 0 and n - n_val - n_test > 1:
        n_test = 1
    if n_val == 0 and ratios[1] > 0 and n - n_val - n_test > 1:
        n_val = 1
    return n - n_val - n_test, n_val, n_test


def test_ratio_counts_reference_table():
    r = (0.8, 0.1, 0.1)
    table = {1: (1, 0, 0), 2: (1, 0, 1), 3: (1, 1, 1), 4: (2, 1, 1), 10: (8, 1, 1),
             19: (17, 1, 1), 20: (16, 2, 2), 25: (21, 2, 2)}
    for n, expected in table.items():
        assert ratio_counts_reference(n, r) == expected
    assert ratio_counts_reference(5, (0.9, 0.0, 0.1)) == (4, 0, 1)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.9, 0.0, 0.1), (0.5, 0.3, 0.2)])
@pytest.mark.parametrize("seed", [0, 5])
def test_random_split_per_user_counts(ratios, seed):
    inter = tied_log(seed)
    s = random_split(inter, ratios, seed=seed)
    counts = inter.user_counts()
    got = [Counter(p.users.tolist()) for p in (s.train, s.val, s.test)]
    for u in range(inter.num_users):
        expected = ratio_counts_reference(int(counts[u]), ratios)
        assert (got[0][u], got[1][u], got[2][u]) == expected, (u, counts[u])
        assert got[0][u] >= 1  # every user keeps something to train on
    if ratios[1] == 0:
        assert len(s.val) == 0


def test_random_split_deterministic_per_seed_and_varies_across_seeds():
    inter = tied_log(1)
    a = random_split(inter, seed=11)
    b = random_split(inter, seed=11)
    for pa, pb in zip((a.train, a.val, a.test), (b.train, b.val, b.test)):
        assert row_ids(pa) == row_ids(pb)
    c = random_split(inter, seed=12)
    assert set(row_ids(a.test)) != set(row_ids(c.test))
    assert set(row_ids(a.val)) != set(row_ids(c.val))
    # per-user counts do not depend on the seed
    assert Counter(a.test.users.tolist()) == Counter(c.test.users.tolist())


def test_random_split_is_not_the_time_order():
    """Over seeds, the test rows of the busiest user change and are not always its last event."""
    inter = tied_log(2)
    big = int(np.argmax(inter.user_counts()))
    last_rows = set(row_ids(leave_one_out(inter).test))
    hits = []
    for seed in range(6):
        test = random_split(inter, seed=seed).test
        hits.append(frozenset(row_ids(test.select(test.users == big))))
    assert any(not h <= last_rows for h in hits)
    assert len(set(hits)) > 1


# ------------------------------------------------------------------ temporal
@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.0, 0.3)])
@pytest.mark.parametrize("seed", range(3))
def test_temporal_split_orders_time_and_matches_brute_force(ratios, seed):
    inter = tied_log(seed, t_max=6)
    s = temporal_split(inter, ratios)
    tr, va, te = s.train.timestamps, s.val.timestamps, s.test.timestamps
    assert tr.max() <= te.min()
    if len(va):
        assert tr.max() <= va.min() and va.max() <= te.min()
    n = len(inter)
    order = sorted(range(n), key=lambda r: (inter.timestamps[r], r))
    cut1 = round(ratios[0] * n)
    cut2 = round((ratios[0] + ratios[1]) * n)
    assert sorted(row_ids(s.train)) == sorted(order[:cut1])
    assert sorted(row_ids(s.val)) == sorted(order[cut1:cut2])
    assert sorted(row_ids(s.test)) == sorted(order[cut2:])


def test_temporal_split_needs_timestamps():
    inter = Interactions.from_raw(np.array([0, 1, 2]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="timestamps"):
        temporal_split(inter)


# ------------------------------------------------------------------ leakage
@pytest.mark.parametrize("seed", range(3))
def test_no_evaluation_pair_reaches_training(seed):
    inter = no_dup_log(seed)
    pairs = list(zip(inter.users.tolist(), inter.items.tolist()))
    assert len(set(pairs)) == len(pairs)
    for name, s in all_splits(inter, seed).items():
        train = set(zip(s.train.users.tolist(), s.train.items.tolist()))
        val = set(zip(s.val.users.tolist(), s.val.items.tolist()))
        test = set(zip(s.test.users.tolist(), s.test.items.tolist()))
        assert test and not test & train, name
        assert not val & train, name
        assert not val & test, name


def test_global_random_split_counts_and_seeds():
    inter = tied_log(0)
    n = len(inter)
    s = global_random_split(inter, (0.7, 0.2, 0.1), seed=5)
    assert (len(s.train), len(s.val), len(s.test)) == (round(0.7 * n), round(0.9 * n) - round(0.7 * n),
                                                       n - round(0.9 * n))
    assert row_ids(global_random_split(inter, (0.7, 0.2, 0.1), seed=5).test) == row_ids(s.test)
    assert row_ids(global_random_split(inter, (0.7, 0.2, 0.1), seed=6).test) != row_ids(s.test)
    assert row_ids(split(inter, "global_random", (0.7, 0.2, 0.1), 5).val) == row_ids(s.val)


def test_fold_split_cuts_blocks_in_file_order_like_mku_sh():
    inter = tied_log(1)
    n = len(inter)
    ids = row_ids(inter)  # ratings hold the row number
    folds = [fold_split(inter, k, 5, 0.1, seed=0) for k in range(1, 6)]
    for k, s in enumerate(folds):
        assert row_ids(s.test) == ids[k * n // 5:(k + 1) * n // 5]  # block k, in order
        assert len(s.val) == round(0.1 * n)
        assert not set(row_ids(s.val)) & set(row_ids(s.test))
    covered = sorted(i for s in folds for i in row_ids(s.test))
    assert covered == sorted(ids)  # the test folds partition the log
    same = split(inter, "fold", (0.8, 0.1, 0.1), 0, fold=3, num_folds=5)
    assert row_ids(same.val) == row_ids(folds[2].val)
    with pytest.raises(ValueError, match="fold must be in 1..num_folds"):
        fold_split(inter, 6, 5)
    with pytest.raises(ValueError, match="validation share"):
        fold_split(inter, 1, 5, 0.9)


# ------------------------------------------------------------------ warnings: file-order decisions
def split_warnings(fn, *args) -> tuple[Split, list[str]]:
    """Run a split, recording every UserWarning it raises (texts, in order)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = fn(*args)
    texts = [str(w.message) for w in caught if w.category is UserWarning]
    return s, texts


def hand_log(ts: list[list[int]] | None, name: str = "toy") -> Interactions:
    """One list of timestamps per user (user u's rows in file order); users interleaved
    round-robin in the file so file order is not user order. ts None: no time column."""
    sizes = [len(t) for t in ts]
    rows = sorted((k, u) for u, size in enumerate(sizes) for k in range(size))  # round-robin
    users = np.array([u for _, u in rows])
    stamps = np.array([ts[u][k] for k, u in rows])
    n = len(rows)
    return Interactions.from_raw(users, np.arange(n) % 7, np.arange(n, dtype=np.float32), stamps,
                                 name=name)


def loo_ties_reference(inter: Interactions) -> tuple[int, int, int, int]:
    """Brute force: (users whose last two events tie, users with >= 2 events,
    users whose 2nd- and 3rd-to-last tie, users with >= 3 events)."""
    by_user: dict[int, list[int]] = {}
    for u, t in zip(inter.users.tolist(), inter.timestamps.tolist()):
        by_user.setdefault(u, []).append(t)
    last2 = n2 = mid = n3 = 0
    for times in by_user.values():
        times.sort()
        if len(times) >= 2:
            n2 += 1
            last2 += times[-1] == times[-2]
        if len(times) >= 3:
            n3 += 1
            mid += times[-2] == times[-3]
    return last2, n2, mid, n3


def test_loo_warns_users_whose_last_events_tie():
    ts = [
        [1, 2, 3, 3],  # last two tie -> test decided by file order
        [1, 2, 2, 3],  # 2nd/3rd-to-last tie -> validation decided by file order
        [5, 5],  # 2 events, tie: test vs train by file order
        [1, 2, 3],  # no tie
        [7],  # 1 event: train only, counted nowhere
        [4, 4, 4, 9],  # 2nd/3rd-to-last tie
        [6, 1, 6, 2],  # last two tie (out of file order)
    ]
    inter = hand_log(ts)
    assert loo_ties_reference(inter) == (3, 6, 2, 5)
    s, texts = split_warnings(leave_one_out, inter)
    assert texts == [
        "toy leave-one-out: 3 of 6 users with 2+ events (50.0%) have their last two events at "
        "the same timestamp: file order decides which is the test event",
        "toy leave-one-out: 2 of 5 users with 3+ events (40.0%) have their second- and "
        "third-to-last events at the same timestamp: file order decides which is the validation "
        "event",
    ]
    assert s.warnings == texts
    # through the dispatcher too
    s2, texts2 = split_warnings(split, inter, "loo")
    assert s2.warnings == texts2 == texts


def test_loo_tie_counts_say_users_when_everyone_is_evaluated():
    inter = hand_log([[1, 1, 2], [3, 4, 4], [1, 2, 3], [0, 0, 0]])
    _, texts = split_warnings(leave_one_out, inter)
    assert texts == [
        "toy leave-one-out: 2 of 4 users (50.0%) have their last two events at the same "
        "timestamp: file order decides which is the test event",
        "toy leave-one-out: 2 of 4 users (50.0%) have their second- and third-to-last events at "
        "the same timestamp: file order decides which is the validation event",
    ]


def test_loo_without_ties_warns_nothing():
    inter = hand_log([[1, 2, 3], [3, 2, 1, 0], [5, 9], [4]])
    s, texts = split_warnings(leave_one_out, inter)
    assert texts == [] and s.warnings == []
    assert sorted(row_ids(s.test)) != []  # the split itself happened


def test_loo_all_identical_timestamps_warn_once_with_counts():
    inter = hand_log([[7] * 4, [7] * 2, [7], [7] * 3], name="flat")
    s, texts = split_warnings(leave_one_out, inter)
    assert texts == [
        "flat leave-one-out: all 10 timestamps are identical; each user's last events in file "
        "order were held out (3 test, 2 validation)"
    ]
    assert s.warnings == texts
    assert (len(s.test), len(s.val)) == (3, 2)


def test_loo_without_time_states_the_file_order_rule_calmly():
    base = hand_log([[0] * 4, [0] * 2, [0], [0] * 3], name="seqs")
    inter = Interactions.from_raw(base.user_ids[base.users], base.item_ids[base.items],
                                  base.ratings, None, name="seqs")
    s, texts = split_warnings(leave_one_out, inter)
    assert texts == [
        "seqs leave-one-out: no timestamps, so time is file order: each user's last event in the "
        "file is the test event (3 users) and the one before it the validation event (2 users)"
    ]
    assert s.warnings == texts
    assert not any(word in texts[0] for word in ("identical", "same timestamp", "warn"))
    # and the rule stated is the rule used: the last row of each user in the file is the test row
    last = {u: r for r, u in enumerate(inter.users.tolist())}
    assert sorted(row_ids(s.test)) == sorted(r for u, r in last.items()
                                             if inter.user_counts()[u] >= 2)


def test_loo_warnings_on_ml100k_match_brute_force(ml100k_root):
    from lit_recs.data.datasets.movielens import MovieLens

    inter = MovieLens("ml-100k", data_dir=str(ml100k_root), download=False).load()
    last2, n2, mid, n3 = loo_ties_reference(inter)
    assert (last2, n2, mid, n3) == (415, 943, 422, 943)  # ML-100K has such ties
    s, texts = split_warnings(split, inter, "loo")
    assert texts == [
        "ml-100k leave-one-out: 415 of 943 users (44.0%) have their last two events at the same "
        "timestamp: file order decides which is the test event",
        "ml-100k leave-one-out: 422 of 943 users (44.8%) have their second- and third-to-last "
        "events at the same timestamp: file order decides which is the validation event",
    ]
    assert s.warnings == texts


def test_temporal_warns_ties_at_the_cuts():
    ts = np.array([1, 0, 1, 3, 2, 1, 0, 2, 1, 3])  # sorted: 0 0 1 1 1 1 2 2 3 3
    inter = Interactions.from_raw(np.arange(10) % 3, np.arange(10), np.arange(10, dtype=np.float32),
                                  ts, name="tt")
    s, texts = split_warnings(temporal_split, inter, (0.4, 0.3, 0.3))  # cuts at 4 and 7
    assert texts == [
        "tt temporal split: the train/validation cut falls inside 4 events at the same timestamp "
        "(1): file order put 2 in train, 2 in validation",
        "tt temporal split: the validation/test cut falls inside 2 events at the same timestamp "
        "(2): file order put 1 in validation, 1 in test",
    ]
    assert s.warnings == texts
    # file order: the rows at t=1 are 0, 2, 5, 8; the first two train
    assert sorted(r for r in row_ids(s.train) if ts[r] == 1) == [0, 2]
    # one run of ties across both cuts: one warning naming all three parts
    ts2 = np.array([0, 5, 5, 5, 5, 5, 5, 5, 5, 9])
    inter2 = Interactions.from_raw(np.arange(10) % 3, np.arange(10), None, ts2, name="tt")
    _, texts2 = split_warnings(temporal_split, inter2, (0.4, 0.3, 0.3))
    assert texts2 == [
        "tt temporal split: the train/validation/test cuts fall inside 8 events at the same "
        "timestamp (5): file order put 3 in train, 3 in validation, 2 in test"
    ]
    # the cuts land between distinct timestamps: nothing to warn about
    ts3 = np.array([0, 1, 2, 3, 4, 4, 5, 6, 7, 7])  # ties, but not across a cut
    _, texts3 = split_warnings(temporal_split, Interactions.from_raw(
        np.arange(10) % 3, np.arange(10), None, ts3), (0.4, 0.3, 0.3))
    assert texts3 == []


def test_temporal_all_identical_timestamps_warn():
    inter = Interactions.from_raw(np.arange(10) % 3, np.arange(10), None, np.full(10, 4),
                                  name="flat")
    s, texts = split_warnings(split, inter, "temporal", (0.8, 0.1, 0.1))
    assert texts == ["flat temporal split: all 10 timestamps are identical; the split follows "
                     "file order (8 train, 1 validation, 1 test)"]
    assert s.warnings == texts


def test_other_splits_carry_no_warnings():
    inter = tied_log(0)  # full of time ties, which these splits do not use
    for name in ("random", "global_random", "fold"):
        s, texts = split_warnings(split, inter, name)
        assert texts == [] and s.warnings == [], name
