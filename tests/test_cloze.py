"""Cloze (masked-item) batches: windows, alignment, masks, seeding, and no leak of held-out items."""

from __future__ import annotations

import numpy as np
import pytest

from lit_recs.data.cloze import ClozeDataModule, cloze_mask, history_tokens, right_aligned, windows
from lit_recs.data.datasets import Synthetic
from lit_recs.data.interactions import Interactions


def small_dm(**kw) -> ClozeDataModule:
    data = Synthetic(num_users=150, num_items=80, interactions_per_user=25, seed=3)
    return ClozeDataModule(dataset=data, sampled_negatives=20, **{"max_len": 10, **kw})


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


def test_right_aligned_places_items_at_the_end() -> None:
    flat = np.array([7, 8, 9, 4])
    tokens = right_aligned(flat, np.array([0, 3]), np.array([3, 1]), 4)
    assert tokens.tolist() == [[0, 8, 9, 10], [0, 0, 0, 5]]  # item + 1, 0 = padding


def test_masks_respect_padding_rate_and_at_least_one_per_row() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 2000)
    tokens = right_aligned(rng.integers(0, 50, 60000), np.arange(2000) * 30, lengths, 30)
    masked, labels = cloze_mask(tokens, 50, rng, 0.2, replace=False, last_only_prob=0.0)
    picked = labels >= 0
    assert picked.any(1).all()
    assert not (picked & (tokens == 0)).any()
    np.testing.assert_array_equal(labels[picked], tokens[picked] - 1)
    assert (masked[picked] == 51).all() and (masked[~picked] == tokens[~picked]).all()
    rate = picked.sum() / (tokens > 0).sum()
    assert 0.2 <= rate < 0.215  # 0.2 plus the forced masks of short rows


def test_bert_replacement_rule_and_last_item_only_rows() -> None:
    rng = np.random.default_rng(1)
    tokens = right_aligned(rng.integers(0, 1000, 400000), np.arange(20000) * 20,
                           np.full(20000, 20), 20)
    masked, labels = cloze_mask(tokens, 1000, rng, 0.5, replace=True, last_only_prob=0.0)
    picked = labels >= 0
    as_mask = (masked == 1001)[picked].mean()
    unchanged = (masked == tokens)[picked].mean()
    assert abs(as_mask - 0.8) < 0.01 and abs(unchanged - 0.1) < 0.01  # + ~0.1 random items
    _, labels = cloze_mask(tokens, 1000, rng, 0.5, replace=False, last_only_prob=0.3)
    last_only = (labels[:, :-1] < 0).all(1) & (labels[:, -1] >= 0)
    assert abs(last_only.mean() - 0.3) < 0.02


def test_training_sequences_never_contain_validation_or_test_items() -> None:
    dm = small_dm(window_stride=3, mask_replace=False)
    train_pairs = set(zip(dm.splits.train.users.tolist(), dm.splits.train.items.tolist()))
    held_out = set(zip(dm.splits.val.users.tolist(), dm.splits.val.items.tolist()))
    held_out |= set(zip(dm.splits.test.users.tolist(), dm.splits.test.items.tolist()))
    seen = set()
    for batch in dm.train_dataloader():
        items = np.where(batch.labels >= 0, batch.labels + 1, batch.tokens)  # unmasked [B, L]
        users = np.repeat(batch.users.numpy(), items.shape[1])
        for u, t in zip(users, items.reshape(-1)):
            if 0 < t <= dm.num_items:
                seen.add((int(u), int(t) - 1))
    assert seen == train_pairs  # windows with stride < L cover the whole training log
    assert not seen & held_out


def test_masks_are_fresh_each_epoch_and_reproducible() -> None:
    dm = small_dm()
    loader = dm.train_dataloader()

    def epoch(e: int) -> list[np.ndarray]:
        loader.sampler.set_epoch(e)
        return [b.labels.numpy() for b in loader]

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert all((a == b).all() for a, b in zip(first, again))
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(first, second))


def test_evaluation_histories_end_with_mask_and_include_validation_at_test_time() -> None:
    dm = small_dm()
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


def test_bad_arguments_are_refused() -> None:
    data = Synthetic(num_users=20, num_items=10, seed=0)
    with pytest.raises(ValueError, match="split must be 'loo'"):
        ClozeDataModule(dataset=data, split="random")
    with pytest.raises(ValueError, match="mask_prob"):
        ClozeDataModule(dataset=data, mask_prob=0.0)
    with pytest.raises(ValueError, match="max_len"):
        ClozeDataModule(dataset=data, max_len=1)
    with pytest.raises(ValueError, match="window_stride"):
        ClozeDataModule(dataset=data, window_stride=0)
