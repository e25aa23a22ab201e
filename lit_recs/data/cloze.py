"""Masked-item (Cloze) batches for bidirectional sequence models such as BERT4Rec.

Protocol `seq-loo` (`lit_recs.data.sequential`: the windows, padding and evaluation histories
every sequence DataModule shares): a model reads each user's time-ordered history and predicts the
held-out item at an appended [mask] position. Training windows are built from the training split
only, so they never contain a validation or test item; here some of their items are masked and
predicted.

Tokens follow `lit_recs.data.tokens` (0 = padding, item index + 1 = an item, num_items + 1 =
[mask]). Sequences are right-aligned in [B, L] (padding on the left) and keep the most recent items
(truncated from the left).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_recs.data.batches import ClozeBatch
from lit_recs.data.sequential import (  # noqa: F401  (re-exported: where they used to live)
    SequenceDataModule,
    SequenceEvalDataset,
    history_tokens,
    right_aligned,
    windows,
)
from lit_recs.data.tokens import PAD, item_tokens, mask_token, token_items


def cloze_mask(tokens: np.ndarray, num_items: int, rng: np.random.Generator, mask_prob: float,
               replace: bool, last_only_prob: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks items of right-aligned token rows [B, L]: each with probability mask_prob, at least one
    per row; a share last_only_prob of rows masks only its last item. With `replace`, BERT's rule:
    of the masked positions 80% become [mask], 10% a random item, 10% stay. Returns (masked tokens,
    labels = item index at masked positions, -1 elsewhere)."""
    valid = tokens != PAD  # [B, L]
    picked = valid & (rng.random(tokens.shape) < mask_prob)
    keys = np.where(valid, rng.random(tokens.shape), -1.0)  # a random valid position per row
    one = np.zeros_like(picked)
    one[np.arange(len(tokens)), keys.argmax(1)] = True
    picked |= one & ~picked.any(1, keepdims=True) & valid
    last_only = rng.random(len(tokens)) < last_only_prob  # [B]
    picked[last_only] = False
    picked[last_only, -1] = valid[last_only, -1]
    labels = np.where(picked, token_items(tokens), -1)
    out = tokens.copy()
    mask = mask_token(num_items)
    if replace:
        u = rng.random(tokens.shape)
        random_items = item_tokens(rng.integers(0, num_items, size=tokens.shape))
        out = np.where(picked & (u < 0.8), mask, out)
        out = np.where(picked & (u >= 0.8) & (u < 0.9), random_items, out)
    else:
        out = np.where(picked, mask, out)
    return out, labels


class ClozeDataset(Dataset):
    """(epoch, batch, window indices) -> ClozeBatch with fresh masks, seeded per epoch/rank/batch."""

    def __init__(self, flat: np.ndarray, user: np.ndarray, start: np.ndarray, length: np.ndarray,
                 num_items: int, max_len: int, mask_prob: float, replace: bool,
                 last_only_prob: float, seed: int, rank: int) -> None:
        self.flat, self.user, self.start, self.length = flat, user, start, length
        self.num_items, self.max_len = num_items, max_len
        self.mask_prob, self.replace, self.last_only_prob = mask_prob, replace, last_only_prob
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> ClozeBatch:
        epoch, batch, rows = key
        rng = np.random.default_rng([self.seed, epoch, self.rank, batch])
        tokens = right_aligned(self.flat, self.start[rows], self.length[rows], self.max_len)
        masked, labels = cloze_mask(tokens, self.num_items, rng, self.mask_prob, self.replace,
                                    self.last_only_prob)
        return ClozeBatch(users=torch.from_numpy(self.user[rows]),
                             tokens=torch.from_numpy(masked), labels=torch.from_numpy(labels))


class ClozeDataModule(SequenceDataModule):
    """Masked-item (Cloze) training sequences over the `seq-loo` protocol (split is `loo`).

    Args (besides SequenceDataModule's `max_len` and `window_stride`, and RecDataModule's):
        mask_prob: rho, the probability of masking each training item (>= 1 mask per sequence).
        mask_replace: BERT's 80/10/10 rule ([mask] / random item / unchanged) on masked positions.
        last_only_prob: share of training sequences that mask only their last item (like the test).
    """

    def __init__(self, *args, max_len: int = 50, mask_prob: float = 0.2, mask_replace: bool = False,
                 last_only_prob: float = 0.0, window_stride: int | None = None, **kwargs) -> None:
        super().__init__(*args, max_len=max_len, window_stride=window_stride, **kwargs)
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if not 0.0 <= last_only_prob <= 1.0:
            raise ValueError(f"last_only_prob must be in [0, 1], got {last_only_prob}")
        self.mask_prob, self.mask_replace = mask_prob, mask_replace
        self.last_only_prob = last_only_prob

    def train_dataset(self, flat: np.ndarray, user: np.ndarray, start: np.ndarray,
                      length: np.ndarray, seed: int, rank: int) -> Dataset:
        return ClozeDataset(flat, user, start, length, self.num_items, self.max_len,
                            self.mask_prob, self.mask_replace, self.last_only_prob, seed, rank)
