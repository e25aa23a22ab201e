"""FeatureDataModule: labelled rows for ctr / rating, sampled rows for top-N, on ML-100K."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lit_recs.data.batches import EvalBatch, FeatureBatch
from lit_recs.data.feature_rows import FeatureDataModule

FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age", "year"],
          "multi_hot": ["genres"]}


def ctr(**kwargs) -> FeatureDataModule:
    return FeatureDataModule(dataset="ml-100k", task="ctr", split="global_random", **FIELDS,
                             **kwargs)


def rows_of(batch: FeatureBatch) -> list[tuple[int, int]]:
    return list(zip(batch.users.tolist(), batch.items.tolist()))


def test_ctr_protocol_on_ml100k() -> None:
    dm = ctr(batch_size=4096)
    sizes = 943 + 1682 + 2 + 21 + 61 + 72 + 19  # users, items, genders, jobs, ages, years, genres
    assert (dm.num_features, dm.num_fields) == (sizes, 7)  # answered right after __init__
    assert (len(dm.train), len(dm.splits.val), len(dm.splits.test)) == (80_000, 10_000, 10_000)
    label = dm.labels(dm.train)
    assert np.array_equal(label, (dm.train.ratings >= 4).astype(np.float32))
    seen: Counter = Counter()
    for batch in dm.train_dataloader():
        assert batch.task == "ctr" and batch.index.shape[1] == 1 + 1 + 1 + 1 + 1 + 1 + 6
        want = dm.features.rows(batch.users.numpy(), batch.items.numpy())
        assert np.array_equal(batch.index.numpy(), want.index)
        assert np.array_equal(batch.value.numpy(), want.value)
        seen.update(rows_of(batch))
    assert seen == Counter(zip(dm.train.users.tolist(), dm.train.items.tolist()))


def test_labelled_evaluation_rows_are_served_once_across_two_ranks(monkeypatch) -> None:
    dm = ctr(eval_batch_size=3000)
    served = []
    for rank in (0, 1):
        monkeypatch.setattr(dm, "_world", lambda rank=rank: (2, rank))
        batches = list(dm.test_dataloader())
        assert all(isinstance(b, FeatureBatch) for b in batches)
        served.append(Counter(p for b in batches for p in rows_of(b)))
        labels = np.concatenate([b.labels.numpy() for b in batches])
        assert set(labels.tolist()) <= {0.0, 1.0}
    assert not set(served[0]) & set(served[1])
    test = dm.splits.test
    assert served[0] + served[1] == Counter(zip(test.users.tolist(), test.items.tolist()))


def test_rating_fold_1_is_the_first_20000_lines_of_u_data(ml100k_root) -> None:
    dm = FeatureDataModule(dataset="ml-100k", task="rating", split="fold", fold=1, **FIELDS)
    raw = np.loadtxt(ml100k_root / "ml-100k" / "u.data", dtype=np.int64)[:20_000]  # u1.test
    test = dm.splits.test
    got = np.stack([dm.data.user_ids[test.users], dm.data.item_ids[test.items], test.ratings], 1)
    assert np.array_equal(got, raw[:, :3])
    assert (len(dm.train), len(dm.splits.val)) == (70_000, 10_000)
    batch = next(iter(dm.val_dataloader()))
    assert batch.task == "rating" and set(batch.labels.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_topn_rows_are_a_positive_then_negatives_never_seen_in_training() -> None:
    dm = FeatureDataModule(dataset="ml-100k", task="topn", split="loo", num_negatives=3,
                           batch_size=700, **FIELDS)
    positives = set(zip(dm.train.users.tolist(), dm.train.items.tolist()))
    count = 0
    for batch in dm.train_dataloader():
        assert batch.group == 4 and len(batch) % 4 == 0
        labels = batch.labels.view(-1, 4)
        assert labels[:, 0].eq(1).all() and labels[:, 1:].eq(0).all()
        pairs = rows_of(batch)
        assert all(p in positives for p in pairs[::4])
        assert not any(p in positives for i, p in enumerate(pairs) if i % 4)
        assert (batch.users.view(-1, 4) == batch.users.view(-1, 4)[:, :1]).all()
        count += len(batch) // 4
    assert count == len(dm.train)
    assert isinstance(next(iter(dm.val_dataloader())), EvalBatch)  # ranked like every model


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"task": "ctr", "rating_threshold": 4}, "rating_threshold to null"),
    ({"task": "topn", "context": ["hour"]}, "drop the context fields"),
    ({"task": "click"}, "task must be"),
    ({"task": "topn", "num_negatives": 0}, "num_negatives"),
])
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureDataModule(dataset="ml-100k", **kwargs)


def test_fingerprint_names_the_fields() -> None:
    assert ctr().fingerprint == ctr().fingerprint
    other = FeatureDataModule(dataset="ml-100k", task="ctr", split="global_random",
                              categorical=["user_id", "item_id"])
    assert other.fingerprint != ctr().fingerprint
