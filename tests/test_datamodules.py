"""DataModules: sizes, evaluation batches, fixed sampled negatives, training batches, sharding, errors.

Every expectation is rebuilt here by hand from `dm.splits` (python sets per user), never from the
CSR helpers the DataModule itself uses.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from lit_recs.data.datamodules import NegativeSamplingDataModule, RecDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.data.interactions import Interactions

STAGES = ("val", "test", "predict")


def synthetic(seed: int = 3, num_users: int = 120, num_items: int = 200, per_user: float = 10.0):
    return Synthetic(num_users=num_users, num_items=num_items, interactions_per_user=per_user,
                     seed=seed)


def user_sets(inter: Interactions, num_users: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(num_users)]
    for u, i in zip(inter.users.tolist(), inter.items.tolist()):
        sets[u].add(i)
    return sets


def expected_sets(dm: RecDataModule, stage: str) -> tuple[list[set[int]], list[set[int]] | None]:
    """(seen, targets) per user for a stage, from the split."""
    n = dm.num_users
    train, val, test = (user_sets(part, n) for part in (dm.splits.train, dm.splits.val, dm.splits.test))
    if stage == "val":
        return train, val
    if stage == "test":
        return [a | b for a, b in zip(train, val)], test
    return [a | b | c for a, b, c in zip(train, val, test)], None


def row_sets(pairs, num_rows: int) -> list[set[int]]:
    """(row, item) pairs [2, P] -> one set of items per row (duplicates would be lost: checked)."""
    rows, items = pairs[0].tolist(), pairs[1].tolist()
    assert len(set(zip(rows, items))) == len(rows), "a (row, item) pair appears twice"
    out: list[set[int]] = [set() for _ in range(num_rows)]
    for r, i in zip(rows, items):
        out[r].add(i)
    return out


def check_eval_batch(batch, expected_users: list[int | None], seen, targets, sampled=None) -> None:
    """expected_users[b] is the user of row b, None for padding."""
    assert len(batch) == len(expected_users)
    assert batch.seen.shape[0] == 2 and batch.targets.shape[0] == 2
    seen_rows = row_sets(batch.seen, len(batch))
    target_rows = row_sets(batch.targets, len(batch))
    for b, user in enumerate(expected_users):
        if user is None:
            assert batch.weights[b].item() == 0.0
            assert not seen_rows[b] and not target_rows[b]
            continue
        assert batch.weights[b].item() == 1.0
        assert batch.users[b].item() == user
        assert seen_rows[b] == seen[user], (b, user)
        assert target_rows[b] == (targets[user] if targets is not None else set()), (b, user)
        if sampled is not None:
            np.testing.assert_array_equal(batch.sampled[b].numpy(), sampled[user])


# ------------------------------------------------------------------ sizes
def test_sizes_answer_right_after_init_ml100k(ml100k_root):
    raw = np.loadtxt(ml100k_root / "ml-100k" / "u.data", dtype=np.int64)
    dm = RecDataModule(dataset="ml-100k")
    assert (dm.num_users, dm.num_items) == (943, 1682)
    assert dm.num_users == len(np.unique(raw[:, 0])) and dm.num_items == len(np.unique(raw[:, 1]))
    liked = raw[raw[:, 2] >= 4]
    dm4 = RecDataModule(dataset="ml-100k", rating_threshold=4)
    assert dm4.num_items == len(np.unique(liked[:, 1])) < 1682  # items without a 4+ are dropped
    assert dm4.num_users == len(np.unique(liked[:, 0]))
    assert len(dm4.data) == len(liked)
    assert dm4.data.items.max() == dm4.num_items - 1 and dm4.data.users.max() == dm4.num_users - 1


def test_sizes_of_a_synthetic_source():
    dm = RecDataModule(dataset=synthetic(num_users=77, num_items=91))
    assert (dm.num_users, dm.num_items) == (77, 91)
    assert len(np.unique(dm.data.users)) == 77


# ------------------------------------------------------------------ evaluation batches
@pytest.mark.parametrize("how", ["random", "loo"])
def test_eval_dataset_rows_match_brute_force_sets(how):
    dm = RecDataModule(dataset=synthetic(), split=how, seed=11, sampled_negatives=25)
    rng = np.random.default_rng(0)
    for stage in STAGES:
        seen, targets = expected_sets(dm, stage)
        ds = dm.eval_dataset(stage)
        if targets is None:
            want_users = list(range(dm.num_users))
        else:
            want_users = [u for u in range(dm.num_users) if targets[u]]
        assert sorted(ds.users.tolist()) == want_users
        # every row, shuffled, with padding rows mixed in
        rows = np.concatenate([rng.permutation(len(ds)), np.full(7, -1)])
        rows = rows[rng.permutation(len(rows))]
        users = [None if r < 0 else int(ds.users[r]) for r in rows]
        batch = ds[rows]
        check_eval_batch(batch, users, seen, targets, None if stage == "predict" else ds.sampled)
        assert (batch.sampled is None) == (stage == "predict")


@pytest.mark.parametrize("stage", STAGES)
def test_eval_loaders_serve_every_user_once_with_right_sets(stage):
    dm = RecDataModule(dataset=synthetic(), eval_batch_size=16, sampled_negatives=10)
    seen, targets = expected_sets(dm, stage)
    loader = getattr(dm, f"{stage}_dataloader")()
    served = []
    for batch in loader:
        assert len(batch) <= 16
        users = batch.users.tolist()
        check_eval_batch(batch, users, seen, targets)
        served += users
    want = list(range(dm.num_users)) if targets is None else [u for u in range(dm.num_users)
                                                               if targets[u]]
    assert sorted(served) == want  # each evaluation user exactly once


def test_loo_evaluation_users_are_those_with_a_target():
    dm = RecDataModule(dataset=synthetic(per_user=3.0, num_users=200), split="loo")
    counts = Counter(dm.data.users.tolist())
    assert {1, 2} <= set(counts.values())  # the data does have users too short to evaluate
    assert sorted(dm.eval_dataset("val").users.tolist()) == sorted(u for u, c in counts.items()
                                                                    if c >= 3)
    assert sorted(dm.eval_dataset("test").users.tolist()) == sorted(u for u, c in counts.items()
                                                                     if c >= 2)
    assert sorted(dm.eval_dataset("predict").users.tolist()) == list(range(dm.num_users))


def test_sampled_negatives_are_fixed_distinct_and_never_interacted():
    n = 30
    dm = RecDataModule(dataset=synthetic(), seed=5, sampled_negatives=n)
    every = expected_sets(dm, "predict")[0]  # train + val + test per user
    val, test = dm.eval_dataset("val"), dm.eval_dataset("test")
    assert val.sampled.shape == (dm.num_users, n)
    for u in range(dm.num_users):
        row = val.sampled[u].tolist()
        assert len(set(row)) == n
        assert not set(row) & every[u], u
        assert all(0 <= i < dm.num_items for i in row)
    # the batches carry the user's own fixed row, in validation and in test alike
    for ds in (val, test):
        batch = ds[np.arange(len(ds))]
        np.testing.assert_array_equal(batch.sampled.numpy(), val.sampled[ds.users])
    same = RecDataModule(dataset=synthetic(), seed=5, sampled_negatives=n)
    other = RecDataModule(dataset=synthetic(), seed=6, sampled_negatives=n)
    np.testing.assert_array_equal(same.eval_dataset("test").sampled, val.sampled)
    assert (other.eval_dataset("val").sampled != val.sampled).mean() > 0.5


def test_sampled_negatives_zero_turns_the_protocol_off():
    dm = RecDataModule(dataset=synthetic(), sampled_negatives=0, eval_batch_size=50)
    for stage in STAGES:
        for batch in getattr(dm, f"{stage}_dataloader")():
            assert batch.sampled is None


# ------------------------------------------------------------------ training batches
def epoch(loader) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [(b.users.numpy().copy(), b.pos_items.numpy().copy(), b.neg_items.numpy().copy())
            for b in loader]


def pair_counter(batches) -> Counter:
    return Counter(p for users, pos, _ in batches for p in zip(users.tolist(), pos.tolist()))


def training_dm(seed: int = 4, **kwargs) -> NegativeSamplingDataModule:
    return NegativeSamplingDataModule(dataset=synthetic(), seed=seed, batch_size=64, **kwargs)


def test_one_epoch_visits_every_training_interaction_once():
    dm = training_dm(num_negatives=3)
    train = dm.train
    batches = epoch(dm.train_dataloader())
    assert pair_counter(batches) == Counter(zip(train.users.tolist(), train.items.tolist()))
    assert [len(u) for u, _, _ in batches[:-1]] == [64] * (len(batches) - 1)
    positives = user_sets(train, dm.num_users)
    for users, _, neg in batches:
        assert neg.shape == (len(users), 3) and neg.dtype == np.int64
        for u, row in zip(users.tolist(), neg.tolist()):
            assert not set(row) & positives[u]
            assert all(0 <= i < dm.num_items for i in row)


def test_training_epochs_are_seeded_and_set_epoch_reshuffles():
    loader = training_dm(num_negatives=2).train_dataloader()
    first = epoch(loader)
    again = epoch(training_dm(num_negatives=2).train_dataloader())
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    loader.sampler.set_epoch(1)
    second = epoch(loader)
    assert pair_counter(second) == pair_counter(first)  # the same interactions...
    assert not np.array_equal(np.concatenate([b[0] for b in first]),
                              np.concatenate([b[0] for b in second]))  # ...in another order
    other_seed = epoch(training_dm(seed=5, num_negatives=2).train_dataloader())
    assert not np.array_equal(first[0][1], other_seed[0][1])


def loader_on_rank(monkeypatch: pytest.MonkeyPatch, dm: RecDataModule, rank: int, what: str):
    with monkeypatch.context() as m:
        m.setattr(dm, "_world", lambda: (2, rank))
        return getattr(dm, f"{what}_dataloader")()


@pytest.mark.parametrize("stage", STAGES)
def test_two_ranks_split_evaluation_users(monkeypatch, stage):
    dm = RecDataModule(dataset=synthetic(), eval_batch_size=16, sampled_negatives=5)
    seen, targets = expected_sets(dm, stage)
    served, shapes = [], []
    for rank in (0, 1):
        loader = loader_on_rank(monkeypatch, dm, rank, stage)
        mine, sizes = [], []
        for batch in loader:
            real = batch.weights > 0
            rows = [u if r else None for u, r in zip(batch.users.tolist(), real.tolist())]
            check_eval_batch(batch, rows, seen, targets)
            mine += batch.users[real].tolist()
            sizes.append(len(batch))
        served.append(mine)
        shapes.append(sizes)
    assert shapes[0] == shapes[1]  # same number and sizes of batches on both ranks
    assert not set(served[0]) & set(served[1])
    want = list(range(dm.num_users)) if targets is None else [u for u in range(dm.num_users)
                                                               if targets[u]]
    assert sorted(served[0] + served[1]) == want


def test_two_ranks_split_training_rows(monkeypatch):
    dm = training_dm(num_negatives=1)
    per_rank = [epoch(loader_on_rank(monkeypatch, dm, rank, "train")) for rank in (0, 1)]
    assert len(per_rank[0]) == len(per_rank[1])
    a, b = pair_counter(per_rank[0]), pair_counter(per_rank[1])
    assert not set(a) & set(b)
    everything = Counter(zip(dm.train.users.tolist(), dm.train.items.tolist()))
    union = a + b
    assert not union - everything  # nothing invented, nothing twice
    assert sum(union.values()) == len(dm.train) - len(dm.train) % 2
    assert sum(a.values()) == sum(b.values())


def test_world_rejects_the_distributed_sampler():
    dm = RecDataModule(dataset=synthetic())
    assert dm._world() == (1, 0)  # no trainer
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1,
                                 _accelerator_connector=SimpleNamespace(use_distributed_sampler=True))
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        dm._world()
    with pytest.raises(ValueError, match="use_distributed_sampler=False"):
        dm.val_dataloader()
    dm.trainer._accelerator_connector.use_distributed_sampler = False
    assert dm._world() == (2, 1)


# ------------------------------------------------------------------ fingerprint
def test_fingerprint_is_stable_and_names_the_data():
    def fp(**kwargs) -> str:
        args = {"dataset": synthetic(), "split": "random", "seed": 1, **kwargs}
        return RecDataModule(**args).fingerprint

    base = fp()
    assert base == fp()
    assert isinstance(base, str) and len(base) >= 8
    changed = {
        "split": fp(split="loo"),
        "seed": fp(seed=2),
        "rating_threshold": fp(rating_threshold=3.0),
        "data": fp(dataset=synthetic(seed=4)),
        "ratios": fp(split_ratios=(0.7, 0.15, 0.15)),
    }
    for what, value in changed.items():
        assert value != base, what
    assert len(set(changed.values())) == len(changed)


# ------------------------------------------------------------------ bad arguments
def test_unknown_dataset_name():
    with pytest.raises(ValueError, match=r"unknown dataset 'ml-200k'.*ml-100k"):
        RecDataModule(dataset="ml-200k")


def test_num_negatives_must_be_positive():
    with pytest.raises(ValueError, match="num_negatives must be >= 1, got 0"):
        NegativeSamplingDataModule(dataset=synthetic(), num_negatives=0)


def test_bad_split_name():
    with pytest.raises(ValueError, match=r"split must be one of .*loo.*got 'kfold'"):
        RecDataModule(dataset=synthetic(), split="kfold").splits  # noqa: B018


def test_base_datamodule_has_no_training_batches():
    with pytest.raises(NotImplementedError, match="NegativeSamplingDataModule"):
        RecDataModule(dataset=synthetic()).train_dataloader()


def test_training_randomness_follows_the_global_seed_on_a_fixed_split(monkeypatch) -> None:
    from lit_recs.data.datasets import Synthetic

    def epoch(global_seed: str) -> tuple[np.ndarray, np.ndarray]:
        monkeypatch.setenv("PL_GLOBAL_SEED", global_seed)
        dm = NegativeSamplingDataModule(dataset=Synthetic(num_users=50, num_items=80, seed=1),
                                        seed=5, batch_size=64)
        batch = next(iter(dm.train_dataloader()))
        return dm.splits.test.items, batch.neg_items.numpy()

    test_a, neg_a = epoch("1")
    test_b, neg_b = epoch("2")
    test_c, neg_c = epoch("1")
    np.testing.assert_array_equal(test_a, test_b)  # the protocol (split) is fixed by data.seed
    assert not np.array_equal(neg_a, neg_b)  # training batches follow seed_everything
    np.testing.assert_array_equal(neg_a, neg_c)
