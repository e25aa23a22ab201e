"""Masked-item (Cloze) batches for bidirectional sequence models such as BERT4Rec.

Protocol `seq-loo`: the temporal leave-one-out split; a model reads each user's time-ordered
history and predicts the held-out item at an appended [mask] position. Training sequences are built
from the training split only, so they never contain a validation or test item.

Tokens follow `lit_recs.data.tokens` (0 = padding, item index + 1 = an item, num_items + 1 =
[mask]). Sequences are right-aligned in [B, L] (padding on the left) and keep the most recent items
(truncated from the left).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_recs.data.batches import ClozeBatch, EvalBatch
from lit_recs.data.datamodules import EvalDataset, RecDataModule, Stage
from lit_recs.data.interactions import Interactions
from lit_recs.data.sampling import EpochBatchSampler
from lit_recs.data.tokens import PAD, item_tokens, mask_token, token_items


def windows(indptr: np.ndarray, max_len: int, stride: int | None) -> tuple[np.ndarray, np.ndarray,
                                                                           np.ndarray]:
    """Training windows over per-user sequences (indptr [U + 1] into a flat item array).

    stride None: one window per user with items, its last `max_len` items. stride s: also the
    windows ending s, 2s, ... items earlier, down to the first item (the oldest may be shorter).
    Returns (user [W], start [W], length [W]) with start an offset into the flat array.
    """
    counts = np.diff(indptr)  # [U]
    users = np.flatnonzero(counts > 0)
    if stride is None:
        per_user = np.ones(len(users), dtype=np.int64)
    else:  # ends at n, n - s, n - 2s, ... > 0
        per_user = (counts[users] - 1) // stride + 1
    user = np.repeat(users, per_user)  # [W]
    k = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)  # [W]
    end = counts[user] - k * (stride or 0)  # [W] exclusive end within the user's sequence
    start_in_user = np.maximum(end - max_len, 0)
    return user, indptr[user] + start_in_user, end - start_in_user


def right_aligned(flat: np.ndarray, start: np.ndarray, length: np.ndarray, max_len: int
                  ) -> np.ndarray:
    """Tokens [B, L]: the tokens of flat[start:start+length] placed at the right end, padding
    before."""
    pos = np.arange(max_len)[None, :]  # [1, L]
    offset = pos - (max_len - length[:, None])  # [B, L], < 0 on the padding
    valid = offset >= 0
    idx = np.where(valid, start[:, None] + offset, 0)
    return np.where(valid, item_tokens(flat[idx]), PAD)


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


class SequenceEvalDataset(EvalDataset):
    """EvalDataset whose batches also carry each user's history tokens [B, L] ([mask] last)."""

    def __init__(self, base: EvalDataset, tokens: np.ndarray) -> None:
        super().__init__(base.users, base.seen, base.targets, base.sampled, base.sampled_key)
        self.tokens = tokens  # [U, L]

    def __getitem__(self, rows: np.ndarray) -> EvalBatch:
        batch = super().__getitem__(rows)
        batch.sequences = torch.from_numpy(self.tokens[batch.users.numpy()])
        return batch


def history_tokens(known: Interactions, max_len: int) -> np.ndarray:
    """Each user's known items (in time order) as tokens [U, L]: the last L - 1 items,
    right-aligned, then the [mask] token the model fills in."""
    indptr, flat = known.sequences()
    length = np.minimum(np.diff(indptr), max_len - 1)
    tokens = right_aligned(flat, indptr[1:] - length, length, max_len - 1)  # [U, L - 1]
    mask = np.full((len(tokens), 1), mask_token(known.num_items))
    return np.concatenate([tokens, mask], axis=1).astype(np.int64)  # [U, L]


class ClozeDataModule(RecDataModule):
    """Masked-item (Cloze) training sequences over the `seq-loo` protocol (split is `loo`).

    Args (besides RecDataModule's):
        max_len: L, the sequence length the model reads (the most recent items are kept).
        mask_prob: rho, the probability of masking each training item (>= 1 mask per sequence).
        mask_replace: BERT's 80/10/10 rule ([mask] / random item / unchanged) on masked positions.
        last_only_prob: share of training sequences that mask only their last item (like the test).
        window_stride: None trains on each user's last L items only (truncated from the left);
            an int s also trains on the windows ending s, 2s, ... items earlier (sliding windows,
            so long histories are used whole).
    """

    def __init__(self, *args, max_len: int = 50, mask_prob: float = 0.2, mask_replace: bool = False,
                 last_only_prob: float = 0.0, window_stride: int | None = None, **kwargs) -> None:
        kwargs.setdefault("split", "loo")
        super().__init__(*args, **kwargs)
        if self.split_how != "loo":
            raise ValueError(f"ClozeDataModule evaluates the seq-loo protocol: split must be 'loo', "
                             f"got {self.split_how!r}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (history + [mask]), got {max_len}")
        if not 0.0 < mask_prob <= 1.0:
            raise ValueError(f"mask_prob must be in (0, 1], got {mask_prob}")
        if not 0.0 <= last_only_prob <= 1.0:
            raise ValueError(f"last_only_prob must be in [0, 1], got {last_only_prob}")
        if window_stride is not None and window_stride < 1:
            raise ValueError(f"window_stride must be >= 1 or None, got {window_stride}")
        self.max_len, self.mask_prob, self.mask_replace = max_len, mask_prob, mask_replace
        self.last_only_prob, self.window_stride = last_only_prob, window_stride

    @property
    def mask_token(self) -> int:
        return mask_token(self.num_items)

    def _build_eval(self, stage: Stage) -> EvalDataset:
        base = super()._build_eval(stage)
        return SequenceEvalDataset(base, history_tokens(self.known(stage), self.max_len))

    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        indptr, flat = self.train.sequences()
        user, start, length = windows(indptr, self.max_len, self.window_stride)
        seed = self.train_seed()
        dataset = ClozeDataset(flat, user, start, length, self.num_items, self.max_len,
                               self.mask_prob, self.mask_replace, self.last_only_prob, seed, rank)
        batches = EpochBatchSampler(len(user), self.batch_size, seed, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=self.num_workers)

