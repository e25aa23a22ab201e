"""What every sequence DataModule shares (lit_recs.data.sequential): windows, right alignment,
evaluation histories and no leak of held-out items, for Cloze and next-item batches alike; and the
next-item batches themselves."""

from __future__ import annotations

import numpy as np
import pytest

from lit_recs.data.batches import ClozeBatch, SequenceBatch
from lit_recs.data.cloze import ClozeDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.data.interactions import Interactions
from lit_recs.data.sequential import (
    NextItemDataModule,
    SequenceDataModule,
    history_tokens,
    next_item_rows,
    right_aligned,
    windows,
)

FAMILY = [ClozeDataModule, NextItemDataModule]


def small_dm(cls: type[SequenceDataModule], **kw) -> SequenceDataModule:
    data = Synthetic(num_users=150, num_items=80, interactions_per_user=25, seed=3)
    return cls(dataset=data, sampled_negatives=20, **{"max_len": 10, **kw})


def batch_items(batch: SequenceBatch) -> np.ndarray:
    """Every item token a training batch holds, inputs and targets: [B, n] (0 = none)."""
    labels = batch.labels.numpy()
    if isinstance(batch, ClozeBatch):
        return np.where(labels >= 0, labels + 1, batch.tokens.numpy())  # unmasked [B, L]
    return np.concatenate([batch.tokens.numpy(), np.where(labels >= 0, labels + 1, 0)], axis=1)


def test_windows_keep_the_last_items_or_slide_over_the_whole_history() -> None:
    indptr = np.array([0, 3, 3, 15])  # users of 3, 0 and 12 items
    user, start, length = windows(indptr, max_len=5, stride=None)
    assert user.tolist() == [0, 2] and start.tolist() == [0, 10] and length.tolist() == [3, 5]
    user, start, length = windows(indptr, max_len=5, stride=4)
    assert user.tolist() == [0, 2, 2, 2]
    ends = (start + length).tolist()
    assert ends == [3, 15, 11, 7] and length.tolist() == [3, 5, 5, 4]  # the oldest is shorter
    covered = set()
    for s, n in zip(start[1:], length[1:]):
        covered |= set(range(s, s + n))
    assert covered == set(range(3, 15))  # every item of user 2 is in some window
    user, start, length = windows(np.array([0, 1, 7]), max_len=3, stride=3, min_length=2)
    assert user.tolist() == [1, 1] and length.tolist() == [3, 3]  # single-item windows left out


def test_right_aligned_places_items_at_the_end() -> None:
    flat = np.array([7, 8, 9, 4])
    tokens = right_aligned(flat, np.array([0, 3]), np.array([3, 1]), 4)
    assert tokens.tolist() == [[0, 8, 9, 10], [0, 0, 0, 5]]  # item + 1, 0 = padding


def test_next_item_rows_shift_the_window_and_ignore_padding() -> None:
    tokens = np.array([[0, 0, 8, 9, 10], [3, 4, 5, 6, 7]])  # items 7, 8, 9 / 2 .. 6
    inputs, labels = next_item_rows(tokens)
    assert inputs.tolist() == [[0, 0, 8, 9], [3, 4, 5, 6]]
    assert labels.tolist() == [[-1, -1, 8, 9], [3, 4, 5, 6]]  # the item after each read one


@pytest.mark.parametrize("cls", FAMILY)
def test_training_sequences_never_contain_validation_or_test_items(cls) -> None:
    dm = small_dm(cls, window_stride=3)
    train_pairs = set(zip(dm.splits.train.users.tolist(), dm.splits.train.items.tolist()))
    held_out = set(zip(dm.splits.val.users.tolist(), dm.splits.val.items.tolist()))
    held_out |= set(zip(dm.splits.test.users.tolist(), dm.splits.test.items.tolist()))
    seen = set()
    for batch in dm.train_dataloader():
        items = batch_items(batch)  # [B, n]
        users = np.repeat(batch.users.numpy(), items.shape[1])
        for u, t in zip(users, items.reshape(-1)):
            if 0 < t <= dm.num_items:
                seen.add((int(u), int(t) - 1))
    assert seen == train_pairs  # windows with stride < L cover the whole training log
    assert not seen & held_out


@pytest.mark.parametrize("cls", FAMILY)
def test_evaluation_histories_end_with_mask_and_include_validation_at_test_time(cls) -> None:
    dm = small_dm(cls)
    s = dm.splits
    for stage, parts in (("val", [s.train]), ("test", [s.train, s.val])):
        batch = next(iter(dm.val_dataloader() if stage == "val" else dm.test_dataloader()))
        assert (batch.sequences[:, -1] == dm.mask_token).all()
        expected = history_tokens(Interactions.concat(parts), dm.max_len)[batch.users.numpy()]
        np.testing.assert_array_equal(batch.sequences.numpy(), expected)
    u = int(s.val.users[0])
    val_item = int(s.val.items[s.val.users == u][0])
    test_tokens = history_tokens(Interactions.concat([s.train, s.val]), dm.max_len)[u]
    assert test_tokens[-2] == val_item + 1  # the most recent known item, just before [mask]
    order = s.train.time_order()
    train_items = s.train.items[order][s.train.users[order] == u]
    assert history_tokens(s.train, dm.max_len)[u][-2] == train_items[-1] + 1


def test_next_item_batches_target_every_training_transition_once() -> None:
    dm = small_dm(NextItemDataModule, window_stride=9)  # L - 1
    order = dm.train.time_order()
    users, items = dm.train.users[order], dm.train.items[order]
    transitions: dict[tuple[int, int, int], int] = {}
    for u in np.unique(users):
        seq = items[users == u]
        for a, b in zip(seq[:-1], seq[1:]):
            transitions[(int(u), int(a), int(b))] = 0
    for batch in dm.train_dataloader():
        tokens, labels = batch.tokens.numpy(), batch.labels.numpy()  # [B, L - 1]
        assert tokens.shape[1] == dm.max_len - 1
        assert ((labels >= 0) == (tokens > 0)).all()  # a target at every real input
        for r, t in zip(*np.nonzero(labels >= 0)):
            key = (int(batch.users[r]), int(tokens[r, t]) - 1, int(labels[r, t]))
            transitions[key] += 1  # a KeyError would be a pair that is not a transition
    assert set(transitions.values()) == {1}


@pytest.mark.parametrize("cls", FAMILY)
def test_bad_arguments_are_refused(cls) -> None:
    data = Synthetic(num_users=20, num_items=10, seed=0)
    with pytest.raises(ValueError, match=f"{cls.__name__} evaluates the seq-loo protocol: split "
                                         "must be 'loo'"):
        cls(dataset=data, split="random")
    with pytest.raises(ValueError, match="max_len"):
        cls(dataset=data, max_len=1)
    with pytest.raises(ValueError, match="window_stride"):
        cls(dataset=data, window_stride=0)
