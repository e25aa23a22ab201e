"""Cloze (masked-item) batches: masks and their seeding. Windows, alignment, evaluation histories
and the no-leak test are the whole sequence family's: tests/test_sequence_data.py."""

from __future__ import annotations

import numpy as np
import pytest

from lit_recs.data.cloze import ClozeDataModule, cloze_mask
from lit_recs.data.datasets import Synthetic
from lit_recs.data.sequential import right_aligned


def small_dm(**kw) -> ClozeDataModule:
    data = Synthetic(num_users=150, num_items=80, interactions_per_user=25, seed=3)
    return ClozeDataModule(dataset=data, sampled_negatives=20, **{"max_len": 10, **kw})


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


def test_masks_are_fresh_each_epoch_and_reproducible() -> None:
    dm = small_dm()
    loader = dm.train_dataloader()

    def epoch(e: int) -> list[np.ndarray]:
        loader.sampler.set_epoch(e)
        return [b.labels.numpy() for b in loader]

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert all((a == b).all() for a, b in zip(first, again))
    assert any(a.shape != b.shape or (a != b).any() for a, b in zip(first, second))


def test_bad_mask_arguments_are_refused() -> None:
    """The family's own arguments (split, max_len, window_stride): tests/test_sequence_data.py."""
    data = Synthetic(num_users=20, num_items=10, seed=0)
    with pytest.raises(ValueError, match="mask_prob"):
        ClozeDataModule(dataset=data, mask_prob=0.0)
    with pytest.raises(ValueError, match="last_only_prob"):
        ClozeDataModule(dataset=data, last_only_prob=1.5)
