"""TwoTowerDataModule on ML-100K: histories before each row, negatives, item vectors, title words."""

from __future__ import annotations

import zlib

import numpy as np
import polars as pl
import pytest

from lit_recs.data.batches import EvalBatch, TowerBatch
from lit_recs.data.tokens import PAD, item_tokens, token_items
from lit_recs.data.two_tower import TwoTowerDataModule, read_item_vectors

FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age", "year"],
          "multi_hot": ["genres"]}


def topn(**kwargs) -> TwoTowerDataModule:
    kwargs.setdefault("split", "random")
    return TwoTowerDataModule(dataset="ml-100k", **FIELDS, **kwargs)


def user_log(dm: TwoTowerDataModule, user: int) -> list[tuple[int, int]]:
    """(time, item) of the user's training interactions, in the stable time order."""
    rows = np.flatnonzero(dm.train.users == user)
    return sorted(zip(dm.train.timestamps[rows].tolist(), dm.train.items[rows].tolist(),
                      rows.tolist()), key=lambda t: (t[0], t[2]))


def test_training_histories_are_the_items_before_each_row() -> None:
    dm = topn(history_length=5, batch_size=512)
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, TowerBatch) and batch.history.shape == (512, 5)
    assert batch.negatives is None  # num_negatives 0: in-batch candidates only
    for b in range(0, 512, 37):
        user, item = int(batch.users[b]), int(batch.items[b])
        log = user_log(dm, user)
        place = next(i for i, (_, it, _) in enumerate(log) if it == item)
        want = [item_tokens(it) for _, it, _ in log[max(0, place - 5) : place]]
        got = [t for t in batch.history[b].tolist() if t != PAD]
        assert got == want  # right-aligned, most recent last, never the row's own item
        assert batch.history[b, : 5 - len(want)].eq(PAD).all()


def test_histories_never_hold_held_out_items() -> None:
    dm = topn(history_length=50, batch_size=4096)
    held_out = set(zip(dm.splits.val.users.tolist(), dm.splits.val.items.tolist())) | \
        set(zip(dm.splits.test.users.tolist(), dm.splits.test.items.tolist()))
    for batch in dm.train_dataloader():
        users = np.repeat(batch.users.numpy(), 50)
        tokens = batch.history.numpy().reshape(-1)
        items, real = token_items(tokens), tokens != PAD
        assert not set(zip(users[real].tolist(), items[real].tolist())) & held_out


def test_evaluation_reads_the_last_known_items() -> None:
    dm = topn(history_length=4, eval_batch_size=64, sampled_negatives=0)
    batch = next(iter(dm.test_dataloader()))
    assert isinstance(batch, EvalBatch) and batch.sequences.shape == (64, 4)
    known = dm.known("test")
    for b in (0, 17, 40):
        user = int(batch.users[b])
        rows = np.flatnonzero(known.users == user)
        order = sorted(rows.tolist(), key=lambda r: (known.timestamps[r], r))
        want = [item_tokens(int(known.items[r])) for r in order[-4:]]
        assert batch.sequences[b].tolist() == [PAD] * (4 - len(want)) + want


def test_ctr_rows_read_the_history_before_their_time() -> None:
    dm = TwoTowerDataModule(dataset="ml-100k", task="ctr", split="global_random", **FIELDS,
                            context=["hour"], history_length=3, eval_batch_size=100)
    batch = next(iter(dm.val_dataloader()))
    assert batch.task == "ctr" and batch.labels is not None and batch.context.shape == (100, 1)
    for b in (0, 50, 99):
        user = int(batch.users[b])
        row = np.flatnonzero((dm.splits.val.users == user) &
                             (dm.splits.val.items == int(batch.items[b])))[0]
        t = dm.splits.val.timestamps[row]
        before = [(ts, it) for ts, it, _ in user_log(dm, user) if ts < t]
        want = [item_tokens(it) for _, it in before[-3:]]
        assert [x for x in batch.history[b].tolist() if x != PAD] == want
        assert int(batch.context[b, 0]) == dm.features.fields[-1].offset + (t // 3600) % 24


def test_sampled_negatives_are_never_training_positives() -> None:
    dm = topn(num_negatives=3, negative_distribution="popularity", batch_size=2048)
    train = set(zip(dm.train.users.tolist(), dm.train.items.tolist()))
    batch = next(iter(dm.train_dataloader()))
    assert batch.negatives.shape == (2048, 3)
    users = np.repeat(batch.users.numpy(), 3)
    assert not set(zip(users.tolist(), batch.negatives.reshape(-1).tolist())) & train


def test_sampling_probabilities() -> None:
    dm = topn(num_negatives=1)
    probs = dm.sampling_probabilities()
    counts = np.bincount(dm.train.items, minlength=dm.num_items)
    assert np.allclose(probs["positives"], counts / counts.sum())
    assert np.allclose(probs["negatives"], 1.0 / dm.num_items)


def test_title_words_are_hashed_into_buckets() -> None:
    dm = topn(text=["title"], text_buckets=1000)
    field = next(f for f in dm.features.fields if f.name == "title")
    assert field.kind == "text" and field.size == 1000
    titles = dm.data.item_features["title"].to_list()
    columns = [i for i, f in enumerate(dm.features.item.field[0]) if f == field.number]
    for item in (0, 99, 1000):
        words = pl.Series([titles[item]]).str.to_lowercase().str.extract_all(r"[a-z0-9]+")[0]
        want = sorted(field.offset + zlib.crc32(w.encode()) % 1000 for w in words)
        index = dm.features.item.index[item, columns]
        value = dm.features.item.value[item, columns]
        assert sorted(index[value > 0].tolist()) == want
        assert np.allclose(value[value > 0], 1.0 / len(words))


def test_item_vectors_from_npz_and_parquet(tmp_path, caplog) -> None:
    dm = topn()
    raw = dm.data.item_ids
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(raw) - 2, 3)).astype(np.float32)  # the last two items missing
    ids = np.concatenate([raw[:-2], ["no-such-item"]]).astype(str)
    np.savez(tmp_path / "v.npz", item_id=ids, vectors=np.vstack([vectors, np.ones((1, 3))]))
    table = read_item_vectors(str(tmp_path / "v.npz"), dm.data)
    assert table.shape == (dm.num_items, 3)
    assert np.allclose(table[:-2], vectors) and not table[-2:].any()
    assert "1 vectors of unknown items ignored; 2 catalogue items" in caplog.text
    pl.DataFrame({"item_id": raw[:-2], "vector": vectors}).write_parquet(tmp_path / "v.parquet")
    dm2 = topn(item_vectors=str(tmp_path / "v.parquet"))
    assert dm2.item_vector_dim == 3 and np.allclose(dm2.item_vectors, table)
    # what the model receives: the vectors on every stage, the sampling probabilities when fitting
    fit, test = dm2.model_inputs("fit"), dm2.model_inputs("test")
    assert fit.item_vectors is dm2.item_vectors and test.item_vectors is dm2.item_vectors
    assert set(fit.sampling_probabilities) == {"positives", "negatives"}
    assert test.sampling_probabilities is None and test.features is dm2.features
    np.savez(tmp_path / "bad.npz", ids=ids)
    with pytest.raises(ValueError, match="bad.npz: needs arrays item_id and vectors"):
        read_item_vectors(str(tmp_path / "bad.npz"), dm.data)


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "rating"}, "task 'topn' or 'ctr'"),
    ({"history_length": -1}, "history_length must be >= 0"),
    ({"num_negatives": -1}, "num_negatives must be >= 0"),
    ({"negative_distribution": "zipf"}, "negative_distribution must be one of"),
])
def test_bad_arguments(kwargs, message) -> None:
    kwargs.setdefault("split", "random")
    if kwargs.get("task") == "rating":
        kwargs["split"] = "fold"
    with pytest.raises(ValueError, match=message):
        TwoTowerDataModule(dataset="ml-100k", **FIELDS, **kwargs)
