"""The sequence DataModule family: training windows over time-ordered histories, evaluation
histories, and next-item batches for causal models such as SASRec.

Protocol `seq-loo`: the temporal leave-one-out split; a model reads each user's time-ordered
history and predicts the held-out item. Training windows are cut from the training split only,
so they never contain a validation or test item.

Tokens follow `lit_recs.data.tokens` (0 = padding, item index + 1 = an item, num_items + 1 =
[mask]). Sequences are right-aligned in [B, L] (padding on the left) and keep the most recent items
(truncated from the left).

`SequenceDataModule` holds what every sequence model shares (windows, padding, the evaluation
histories: the last L - 1 known items, then [mask]); a subclass decides what a training batch
asks of a window:

- `lit_recs.data.cloze.ClozeDataModule`: masked items (BERT4Rec);
- `NextItemDataModule` (here): the next item at every position (SASRec): of a window of L items,
  positions 0 .. L - 2 are read and items 1 .. L - 1 are the targets. A causal model reads the
  same L - 1 items at evaluation: the evaluation history without its trailing [mask].
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_recs.data.batches import EvalBatch, NextItemBatch
from lit_recs.data.datamodules import EvalDataset, RecDataModule, Stage
from lit_recs.data.interactions import Interactions
from lit_recs.data.sampling import EpochBatchSampler
from lit_recs.data.tokens import PAD, item_tokens, mask_token, token_items


def windows(indptr: np.ndarray, max_len: int, stride: int | None, min_length: int = 1
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training windows over per-user sequences (indptr [U + 1] into a flat item array).

    stride None: one window per user with items, its last `max_len` items. stride s: also the
    windows ending s, 2s, ... items earlier, down to the first item (the oldest may be shorter).
    Windows shorter than `min_length` are left out. Returns (user [W], start [W], length [W]) with
    start an offset into the flat array.
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
    length = end - start_in_user
    keep = length >= min_length  # [W]
    return user[keep], (indptr[user] + start_in_user)[keep], length[keep]


def right_aligned(flat: np.ndarray, start: np.ndarray, length: np.ndarray, max_len: int
                  ) -> np.ndarray:
    """Tokens [B, L]: the tokens of flat[start:start+length] placed at the right end, padding
    before."""
    pos = np.arange(max_len)[None, :]  # [1, L]
    offset = pos - (max_len - length[:, None])  # [B, L], < 0 on the padding
    valid = offset >= 0
    idx = np.where(valid, start[:, None] + offset, 0)
    return np.where(valid, item_tokens(flat[idx]), PAD)


def history_tokens(known: Interactions, max_len: int) -> np.ndarray:
    """Each user's known items (in time order) as tokens [U, L]: the last L - 1 items,
    right-aligned, then the [mask] token the model fills in."""
    indptr, flat = known.sequences()
    length = np.minimum(np.diff(indptr), max_len - 1)
    tokens = right_aligned(flat, indptr[1:] - length, length, max_len - 1)  # [U, L - 1]
    mask = np.full((len(tokens), 1), mask_token(known.num_items))
    return np.concatenate([tokens, mask], axis=1).astype(np.int64)  # [U, L]


class SequenceEvalDataset(EvalDataset):
    """EvalDataset whose batches also carry each user's history tokens [B, L] ([mask] last)."""

    def __init__(self, base: EvalDataset, tokens: np.ndarray) -> None:
        super().__init__(base.users, base.seen, base.targets, base.sampled, base.sampled_key)
        self.tokens = tokens  # [U, L]

    def __getitem__(self, rows: np.ndarray) -> EvalBatch:
        batch = super().__getitem__(rows)
        batch.sequences = torch.from_numpy(self.tokens[batch.users.numpy()])
        return batch


class SequenceDataModule(RecDataModule):
    """Time-ordered training windows and evaluation histories over the `seq-loo` protocol (split
    is `loo`). Subclasses build the training batches from the windows (`train_dataset`).

    Args (besides RecDataModule's):
        max_len: L, the window length (the most recent items are kept). Evaluation batches carry
            the last L - 1 known items and [mask] (`EvalBatch.sequences`).
        window_stride: None trains on each user's last L items only (truncated from the left);
            an int s also trains on the windows ending s, 2s, ... items earlier (sliding windows,
            so long histories are used whole).
    """

    min_window = 1  # shorter windows carry nothing to learn from and are left out

    def __init__(self, *args, max_len: int = 50, window_stride: int | None = None,
                 **kwargs) -> None:
        kwargs.setdefault("split", "loo")
        super().__init__(*args, **kwargs)
        if self.split_how != "loo":
            raise ValueError(f"{type(self).__name__} evaluates the seq-loo protocol: split must be "
                             f"'loo', got {self.split_how!r}")
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 (a history item and the position to predict), "
                             f"got {max_len}")
        if window_stride is not None and window_stride < 1:
            raise ValueError(f"window_stride must be >= 1 or None, got {window_stride}")
        self.max_len, self.window_stride = max_len, window_stride

    @property
    def mask_token(self) -> int:
        return mask_token(self.num_items)

    def _build_eval(self, stage: Stage) -> EvalDataset:
        base = super()._build_eval(stage)
        return SequenceEvalDataset(base, history_tokens(self.known(stage), self.max_len))

    def train_dataset(self, flat: np.ndarray, user: np.ndarray, start: np.ndarray,
                      length: np.ndarray, seed: int, rank: int) -> Dataset:
        """The training batches' dataset over the windows flat[start:start+length] of `user`:
        (epoch, batch, window indices) -> a batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement train_dataset")

    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        indptr, flat = self.train.sequences()
        user, start, length = windows(indptr, self.max_len, self.window_stride, self.min_window)
        seed = self.train_seed()
        dataset = self.train_dataset(flat, user, start, length, seed, rank)
        batches = EpochBatchSampler(len(user), self.batch_size, seed, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=self.num_workers)


def next_item_rows(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-aligned windows [B, L] -> (inputs [B, L - 1]: positions 0 .. L - 2, labels
    [B, L - 1]: the item index at positions 1 .. L - 1, -1 where the input is padding)."""
    inputs = tokens[:, :-1]  # [B, L - 1]
    labels = np.where(inputs != PAD, token_items(tokens[:, 1:]), -1)  # [B, L - 1]
    return inputs, labels


class NextItemDataset(Dataset):
    """(epoch, batch, window indices) -> NextItemBatch (nothing random: the sampler shuffles)."""

    def __init__(self, flat: np.ndarray, user: np.ndarray, start: np.ndarray, length: np.ndarray,
                 max_len: int) -> None:
        self.flat, self.user, self.start, self.length = flat, user, start, length
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> NextItemBatch:
        _, _, rows = key
        tokens = right_aligned(self.flat, self.start[rows], self.length[rows], self.max_len)
        inputs, labels = next_item_rows(tokens)  # [B, L - 1] each
        return NextItemBatch(users=torch.from_numpy(self.user[rows]),
                             tokens=torch.from_numpy(inputs), labels=torch.from_numpy(labels))


class NextItemDataModule(SequenceDataModule):
    """Next-item training sequences over the `seq-loo` protocol (SASRec and other causal models).

    Each window of up to L items becomes one row: its first L - 1 items as input and, at every
    position, the item that follows as the target. Windows of a single item (nothing follows it)
    are left out. With sliding windows, `window_stride` <= L - 1 makes every transition of the
    training log a target (consecutive windows share one item); L leaves out one in L.
    """

    min_window = 2

    def train_dataset(self, flat: np.ndarray, user: np.ndarray, start: np.ndarray,
                      length: np.ndarray, seed: int, rank: int) -> Dataset:
        return NextItemDataset(flat, user, start, length, self.max_len)
