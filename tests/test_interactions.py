"""`Interactions`: indexing, feature alignment, views and the preprocessing steps vs brute force."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from lit_recs.data.interactions import Interactions, binarize, deduplicate, k_core


def random_log(seed: int, n: int = 300, users: int = 25, items: int = 40, t_max: int = 6):
    """Raw int ids (sparse, unsorted), ratings 1..5 and timestamps with many ties."""
    rng = np.random.default_rng(seed)
    raw_u = rng.choice(np.arange(1000, 1000 + 7 * users, 7), size=n)
    raw_i = rng.choice(np.arange(5, 5 + 3 * items, 3), size=n)
    ratings = rng.integers(1, 6, size=n).astype(np.float32)
    ts = rng.integers(0, t_max, size=n)
    return raw_u, raw_i, ratings, ts


def raw_rows(inter: Interactions) -> list[tuple]:
    """Each row as (raw user, raw item, rating, timestamp), in log order."""
    out = []
    for r in range(len(inter)):
        rating = None if inter.ratings is None else float(inter.ratings[r])
        ts = None if inter.timestamps is None else int(inter.timestamps[r])
        out.append((inter.user_ids[inter.users[r]].item(), inter.item_ids[inter.items[r]].item(),
                    rating, ts))
    return out


# ------------------------------------------------------------------ construction
def test_from_raw_int_ids_contiguous_and_round_trip():
    raw_u, raw_i, ratings, ts = random_log(0)
    inter = Interactions.from_raw(raw_u, raw_i, ratings, ts)
    assert inter.num_users == len(set(raw_u.tolist()))
    assert inter.num_items == len(set(raw_i.tolist()))
    assert set(inter.users.tolist()) == set(range(inter.num_users))
    assert set(inter.items.tolist()) == set(range(inter.num_items))
    assert inter.users.dtype == np.int64 and inter.items.dtype == np.int64
    assert inter.ratings.dtype == np.float32 and inter.timestamps.dtype == np.int64
    np.testing.assert_array_equal(inter.user_ids[inter.users], raw_u)
    np.testing.assert_array_equal(inter.item_ids[inter.items], raw_i)
    # the id maps are one-to-one
    assert len(set(inter.user_ids.tolist())) == inter.num_users
    assert len(set(inter.item_ids.tolist())) == inter.num_items
    np.testing.assert_array_equal(inter.ratings, ratings)
    np.testing.assert_array_equal(inter.timestamps, ts)
    assert len(inter) == len(raw_u)


def test_from_raw_string_ids():
    raw_u = np.array(["bob", "alice", "carol", "bob", "alice", "dave"])
    raw_i = np.array(["x", "y", "x", "z", "z", "w"])
    inter = Interactions.from_raw(raw_u, raw_i)
    assert inter.num_users == 4 and inter.num_items == 4
    assert set(inter.users.tolist()) == {0, 1, 2, 3}
    assert set(inter.items.tolist()) == {0, 1, 2, 3}
    assert list(inter.user_ids[inter.users]) == list(raw_u)
    assert list(inter.item_ids[inter.items]) == list(raw_i)
    # same raw id -> same index
    assert inter.users[0] == inter.users[3] and inter.users[1] == inter.users[4]
    assert inter.users[0] != inter.users[1]
    assert inter.ratings is None and inter.timestamps is None


def test_user_and_item_features_aligned_by_key():
    raw_u = np.array([30, 10, 20, 10, 40])
    raw_i = np.array([7, 8, 7, 9, 9])
    # shuffled rows, an id with no interaction (99), an indexed id without a row (40)
    user_feats = pl.DataFrame({"uid": [99, 20, 10, 30], "age": [50, 20, 10, 30]})
    item_feats = pl.DataFrame({"iid": ["9", "7"], "genre": ["c", "a"]})
    inter = Interactions.from_raw(
        raw_u, raw_i.astype(str), user_features=user_feats, item_features=item_feats,
        user_key="uid", item_key="iid",
    )
    uf, itf = inter.user_features, inter.item_features
    assert uf.height == inter.num_users and itf.height == inter.num_items
    assert uf["uid"].to_list() == inter.user_ids.tolist()
    assert itf["iid"].to_list() == inter.item_ids.tolist()
    ages = dict(zip(user_feats["uid"].to_list(), user_feats["age"].to_list()))
    for idx, raw in enumerate(inter.user_ids.tolist()):
        assert uf["age"][idx] == ages.get(raw)  # None (null) for 40
    assert uf["age"].null_count() == 1
    assert 99 not in uf["uid"].to_list()
    genres = {"9": "c", "7": "a"}
    for idx, raw in enumerate(inter.item_ids.tolist()):
        assert itf["genre"][idx] == genres.get(raw)  # "8" has none
    assert itf["genre"].null_count() == 1


def test_duplicate_feature_keys_raise_naming_the_column():
    feats = pl.DataFrame({"movie": [1, 2, 2], "f": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="movie"):
        Interactions.from_raw(np.array([0, 1]), np.array([1, 2]), item_features=feats,
                              item_key="movie")
    with pytest.raises(ValueError, match="person"):
        Interactions.from_raw(np.array([0, 1]), np.array([1, 2]),
                              user_features=pl.DataFrame({"person": [0, 0]}), user_key="person")


def test_missing_feature_key_column_raises():
    with pytest.raises(ValueError, match="user_id"):
        Interactions.from_raw(np.array([0, 1]), np.array([1, 2]),
                              user_features=pl.DataFrame({"uid": [0, 1]}))


# ------------------------------------------------------------------ select / compact
def test_select_mask_and_index():
    raw_u, raw_i, ratings, ts = random_log(1, n=60)
    inter = Interactions.from_raw(raw_u, raw_i, ratings, ts)
    rows = raw_rows(inter)
    mask = np.random.default_rng(3).random(len(inter)) < 0.4
    sub = inter.select(mask)
    assert raw_rows(sub) == [r for r, m in zip(rows, mask) if m]
    idx = np.array([5, 2, 2, 40])
    sub2 = inter.select(idx)
    assert raw_rows(sub2) == [rows[i] for i in idx]
    for s in (sub, sub2):
        assert (s.num_users, s.num_items) == (inter.num_users, inter.num_items)
        assert s.user_ids is inter.user_ids and s.item_ids is inter.item_ids


def test_compact_reindexes_and_keeps_features_aligned():
    raw_u, raw_i, ratings, ts = random_log(2, n=120)
    ufeat = pl.DataFrame({"user_id": np.unique(raw_u), "f": np.unique(raw_u) * 2})
    ifeat = pl.DataFrame({"item_id": np.unique(raw_i)[::-1], "g": np.unique(raw_i)[::-1] + 0.5})
    inter = Interactions.from_raw(raw_u, raw_i, ratings, ts, user_features=ufeat, item_features=ifeat)
    # drop a few users and items entirely
    drop_u = set(inter.user_ids[[0, 3, 7]].tolist())
    drop_i = set(inter.item_ids[[1, 2, 10, 20]].tolist())
    keep = np.array([u not in drop_u and i not in drop_i for u, i, _, _ in raw_rows(inter)])
    sub = inter.select(keep)
    rows_before = raw_rows(sub)
    comp = sub.compact()
    assert raw_rows(comp) == rows_before
    assert comp.num_users == len(set(sub.users.tolist())) == inter.num_users - 3
    assert comp.num_items == len(set(sub.items.tolist())) == inter.num_items - 4
    assert set(comp.users.tolist()) == set(range(comp.num_users))
    assert set(comp.items.tolist()) == set(range(comp.num_items))
    assert not drop_u & set(comp.user_ids.tolist())
    assert comp.user_features["user_id"].to_list() == comp.user_ids.tolist()
    assert comp.item_features["item_id"].to_list() == comp.item_ids.tolist()
    assert comp.user_features["f"].to_list() == (comp.user_ids * 2).tolist()
    np.testing.assert_allclose(comp.item_features["g"].to_numpy(), comp.item_ids + 0.5)
    # already compact: same content
    again = comp.compact()
    assert raw_rows(again) == rows_before
    assert (again.num_users, again.num_items) == (comp.num_users, comp.num_items)


# ------------------------------------------------------------------ views
def test_csr_and_binary_csr_match_dense():
    raw_u, raw_i, ratings, ts = random_log(4, n=400, users=10, items=12)  # many duplicates
    inter = Interactions.from_raw(raw_u, raw_i, ratings, ts)
    counts = np.zeros((inter.num_users, inter.num_items))
    sums = np.zeros((inter.num_users, inter.num_items))
    for u, i, r in zip(inter.users, inter.items, inter.ratings):
        counts[u, i] += 1
        sums[u, i] += r
    assert counts.max() > 1  # the data do have duplicates
    np.testing.assert_array_equal(inter.csr().toarray(), counts)
    np.testing.assert_allclose(inter.csr("ratings").toarray(), sums, rtol=1e-6)
    b = inter.binary_csr()
    np.testing.assert_array_equal(b.toarray(), (counts > 0).astype(np.float32))
    assert b.shape == (inter.num_users, inter.num_items)
    assert b.has_sorted_indices
    for u in range(b.shape[0]):
        cols = b.indices[b.indptr[u]:b.indptr[u + 1]]
        assert list(cols) == sorted(set(cols.tolist()))
        assert list(cols) == np.flatnonzero(counts[u]).tolist()
    np.testing.assert_array_equal(inter.user_counts(), counts.sum(1))
    np.testing.assert_array_equal(inter.item_counts(), counts.sum(0))


def test_sequences_time_order_with_stable_ties():
    raw_u, raw_i, ratings, ts = random_log(5, n=250, t_max=4)  # lots of equal timestamps
    inter = Interactions.from_raw(raw_u, raw_i, ratings, ts)
    indptr, seq = inter.sequences()
    assert len(indptr) == inter.num_users + 1 and indptr[0] == 0 and indptr[-1] == len(inter)
    for u in range(inter.num_users):
        rows = [r for r in range(len(inter)) if inter.users[r] == u]
        rows.sort(key=lambda r: (inter.timestamps[r], r))  # time, then file order
        assert seq[indptr[u]:indptr[u + 1]].tolist() == [int(inter.items[r]) for r in rows]


@pytest.mark.parametrize("t_max", [1, 4, 10**9, 2**62])  # 2**62: the key overflows: lexsort
@pytest.mark.parametrize("grouped", [False, True])
def test_time_order_equals_lexsort(t_max: int, grouped: bool) -> None:
    rng = np.random.default_rng(t_max % 97)
    n = 400
    users = rng.integers(0, 30, size=n)
    ts = rng.integers(0, t_max, size=n, dtype=np.int64)  # ties when t_max is small
    if grouped:
        users = np.sort(users)
    inter = Interactions(users=users, items=np.zeros(n, np.int64), num_users=30, num_items=1,
                         user_ids=np.arange(30), item_ids=np.arange(1), timestamps=ts)
    order = inter.time_order()
    np.testing.assert_array_equal(order, np.lexsort((ts, users)))
    assert inter.time_order() is order and not order.flags.writeable  # cached, read-only
    no_time = Interactions(users=users, items=np.zeros(n, np.int64), num_users=30, num_items=1,
                           user_ids=np.arange(30), item_ids=np.arange(1))
    np.testing.assert_array_equal(no_time.time_order(), np.lexsort((np.zeros(n), users)))


def test_fingerprint_of_text_ids_follows_their_text() -> None:
    """Text ids are object arrays: hashed by their text, equal for equal logs built apart."""
    make = [lambda: np.array(["u7", "u1", "u7"], dtype=object)] * 2
    a, b = (Interactions.from_raw(m(), np.array([3, 4, 3])) for m in make)
    assert a.user_ids is not b.user_ids and a.fingerprint() == b.fingerprint()
    c = Interactions.from_raw(np.array(["u7", "u2", "u7"], dtype=object), np.array([3, 4, 3]))
    assert c.fingerprint() != a.fingerprint()


def test_sequences_without_timestamps_keep_file_order():
    inter = Interactions.from_raw(np.array([2, 1, 2, 1, 2]), np.array([10, 11, 12, 13, 14]))
    indptr, seq = inter.sequences()
    assert indptr.tolist() == [0, 2, 5]
    assert inter.item_ids[seq].tolist() == [11, 13, 10, 12, 14]


def test_fingerprint_changes_with_data():
    raw_u, raw_i, ratings, ts = random_log(6, n=50)
    base = Interactions.from_raw(raw_u, raw_i, ratings, ts)
    fp = base.fingerprint()
    assert isinstance(fp, str) and len(fp) == 16
    assert Interactions.from_raw(raw_u, raw_i, ratings, ts).fingerprint() == fp
    assert base.select(np.arange(len(base))).fingerprint() == fp

    def changed(**kw) -> str:
        cols = {"users": base.users.copy(), "items": base.items.copy(),
                "ratings": base.ratings.copy(), "timestamps": base.timestamps.copy()}
        for name, (row, value) in kw.items():
            cols[name][row] = value
        return Interactions(num_users=base.num_users, num_items=base.num_items,
                            user_ids=base.user_ids, item_ids=base.item_ids, **cols).fingerprint()

    other_item = (base.items[3] + 1) % base.num_items
    other_user = (base.users[3] + 1) % base.num_users
    fps = {
        changed(items=(3, other_item)),
        changed(users=(3, other_user)),
        changed(ratings=(3, base.ratings[3] + 0.5)),
        changed(timestamps=(3, base.timestamps[3] + 1)),
    }
    assert len(fps) == 4 and fp not in fps
    swapped = base.select(np.r_[1, 0, 2:len(base)])
    assert (base.items[0], base.users[0]) != (base.items[1], base.users[1])
    assert swapped.fingerprint() != fp
    assert base.select(np.arange(len(base) - 1)).fingerprint() != fp
    no_ratings = Interactions.from_raw(raw_u, raw_i, None, ts)
    assert no_ratings.fingerprint() != fp


# ------------------------------------------------------------------ preprocessing
def test_binarize_threshold():
    raw_u, raw_i, ratings, ts = random_log(7, n=200)
    inter = Interactions.from_raw(raw_u, raw_i, ratings, np.arange(200))  # timestamp = row id
    out = binarize(inter, 4.0)
    expected = [r for r in raw_rows(inter) if r[2] >= 4.0]
    assert raw_rows(out) == expected
    assert out.num_users == len({r[0] for r in expected})
    assert out.num_items == len({r[1] for r in expected})
    assert set(out.users.tolist()) == set(range(out.num_users))
    assert binarize(inter, None) is inter
    with pytest.raises(ValueError, match="no ratings"):
        binarize(Interactions.from_raw(raw_u, raw_i), 4.0)
    with pytest.raises(ValueError, match="rating threshold"):
        binarize(inter, 6.0)


@pytest.mark.parametrize("keep", ["first", "last"])
def test_deduplicate_keeps_first_or_last_in_time(keep):
    rng = np.random.default_rng(8)
    n = 300
    raw_u = rng.integers(0, 6, size=n)
    raw_i = rng.integers(0, 5, size=n)
    ts = rng.integers(0, 4, size=n)  # ties between duplicates are common
    tag = np.arange(n, dtype=np.float32)  # rating = row id, to see which event survives
    inter = Interactions.from_raw(raw_u, raw_i, tag, ts)
    groups: dict[tuple[int, int], list[int]] = {}
    for r in range(n):
        groups.setdefault((int(raw_u[r]), int(raw_i[r])), []).append(r)
    pick = min if keep == "first" else max
    chosen = sorted(pick(rows, key=lambda r: (ts[r], r)) for rows in groups.values())
    out = deduplicate(inter, keep)
    assert out.ratings.astype(int).tolist() == chosen  # kept rows, in file order
    assert raw_rows(out) == [raw_rows(inter)[r] for r in chosen]
    assert (out.num_users, out.num_items) == (inter.num_users, inter.num_items)
    # a case spelled out: (u=0, i=0) at t=5 (row 0), t=1 (row 1), t=5 (row 2), t=1 (row 3)
    small = Interactions.from_raw(np.zeros(4, int), np.zeros(4, int), np.arange(4.0),
                                  np.array([5, 1, 5, 1]))
    assert deduplicate(small, keep).ratings.tolist() == ([1.0] if keep == "first" else [2.0])


@pytest.mark.parametrize("keep", ["first", "last"])
@pytest.mark.parametrize("seed", range(3))
def test_deduplicate_hands_on_its_time_order(keep: str, seed: int) -> None:
    raw_u, raw_i, ratings, ts = random_log(seed, n=400, users=12, items=10, t_max=5)
    out = deduplicate(Interactions.from_raw(raw_u, raw_i, ratings, ts), keep)
    carried = out._cache["time_order"]
    fresh = Interactions.from_raw(raw_u, raw_i, ratings, ts).select(np.arange(len(raw_u)))
    fresh = deduplicate(fresh, keep)
    fresh._cache.clear()
    np.testing.assert_array_equal(carried, fresh.time_order())
    np.testing.assert_array_equal(carried, np.lexsort((out.timestamps, out.users)))


def test_deduplicate_without_duplicates_returns_the_log() -> None:
    inter = Interactions.from_raw(np.array([0, 0, 1]), np.array([1, 2, 1]), None, np.array([3, 2, 1]))
    assert deduplicate(inter, "first") is inter and deduplicate(inter, "last") is inter
    empty = inter.select(np.zeros(3, bool))
    assert len(deduplicate(empty, "first")) == 0


def test_deduplicate_all_and_bad_keep():
    inter = Interactions.from_raw(np.array([0, 0, 1]), np.array([1, 1, 1]), None, np.array([1, 2, 3]))
    assert deduplicate(inter, "all") is inter
    assert len(deduplicate(inter, "last")) == 2
    with pytest.raises(ValueError, match="dedup"):
        deduplicate(inter, "middle")


def brute_k_core(rows: list[tuple], min_user: int, min_item: int) -> list[tuple]:
    rows = list(rows)
    while True:
        uc = Counter(r[0] for r in rows)
        ic = Counter(r[1] for r in rows)
        kept = [r for r in rows if uc[r[0]] >= min_user and ic[r[1]] >= min_item]
        if len(kept) == len(rows):
            return kept
        rows = kept


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_user,min_item", [(5, 0), (0, 6), (4, 4), (7, 3), (2, 2)])
def test_k_core_matches_iterative_brute_force(seed, min_user, min_item):
    rng = np.random.default_rng(seed)
    n = 400
    # skewed ids so that filtering cascades
    raw_u = (rng.pareto(1.5, size=n) * 5).astype(int)
    raw_i = (rng.pareto(1.2, size=n) * 5).astype(int)
    inter = Interactions.from_raw(raw_u, raw_i, None, np.arange(n))  # timestamp = row id
    expected = brute_k_core(raw_rows(inter), min_user, min_item)
    assert expected  # these sizes leave something
    out = k_core(inter, min_user, min_item)
    assert raw_rows(out) == expected
    assert out.num_users == len({r[0] for r in expected})
    assert out.num_items == len({r[1] for r in expected})
    assert out.user_counts().min() >= min_user and out.item_counts().min() >= min_item
    assert len(out) < len(inter)  # the filter did remove something


def test_k_core_trivial_and_empty():
    inter = Interactions.from_raw(np.array([0, 1, 1]), np.array([0, 0, 1]))
    assert k_core(inter, 1, 1) is inter
    with pytest.raises(ValueError, match="no interaction left after k-core"):
        k_core(inter, 3, 3)


# ------------------------------------------------------------------ validation
def _make(users, items, num_users=3, num_items=3, **kw) -> Interactions:
    return Interactions(users=np.asarray(users), items=np.asarray(items), num_users=num_users,
                        num_items=num_items, user_ids=np.arange(num_users),
                        item_ids=np.arange(num_items), **kw)


def test_post_init_range_and_length_errors():
    _make([0, 2], [1, 2])  # valid
    _make([], [])  # empty is fine
    with pytest.raises(ValueError, match="user index out of range"):
        _make([0, 3], [1, 2])
    with pytest.raises(ValueError, match="user index out of range"):
        _make([-1, 0], [1, 2])
    with pytest.raises(ValueError, match="item index out of range"):
        _make([0, 1], [1, 3])
    with pytest.raises(ValueError, match="item index out of range"):
        _make([0, 1], [-2, 0])
    with pytest.raises(ValueError, match="'items'"):
        _make([0, 1], [1])
    with pytest.raises(ValueError, match="'ratings'"):
        _make([0, 1], [1, 2], ratings=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="'timestamps'"):
        _make([0, 1], [1, 2], timestamps=np.ones(1, np.int64))


@pytest.mark.parametrize(
    "raw",
    [
        np.array([5, 3, 5, 9, 3, 3]),  # compact ints: lookup-table path
        np.array([2**63 - 1, 2**63 - 3, 2**63 - 1]),  # compact near the int64 limit
        np.array([10**12, 7, 10**12, -4]),  # sparse ints: sort path
        np.array([-3, -1, -3, 0], dtype=np.int32),
        np.array(["b", "a", "b", "c"]),
    ],
)
def test_index_ids_equals_numpy_unique(raw: np.ndarray) -> None:
    from lit_recs.data.interactions import index_ids

    ids, idx = index_ids(raw)
    ref_ids, ref_idx = np.unique(raw, return_inverse=True)
    assert ids.dtype == ref_ids.dtype
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(idx, ref_idx)
