"""Batches: small dataclasses of tensors (Lightning moves dataclasses to the device as they are)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PairBatch:
    """Positive (user, item) pairs with sampled negatives."""

    users: Tensor  # [B] long
    pos_items: Tensor  # [B] long
    neg_items: Tensor  # [B, N] long

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class EvalBatch:
    """Evaluation users with what to exclude from their ranking and what to find in it.

    `seen` and `targets` are (row, item) index pairs into the [B, I] score matrix, sorted by row
    then item; rows of padding users (weight 0) have none. `sampled` holds the sampled
    protocol's fixed negatives and `sampled_key` names that protocol, the prefix of its metrics
    (`RecDataModule.sampled_protocol`: `sampled99` for 99 uniform negatives, `sampled100pop` for
    100 drawn by popularity). `sequences` (sequence DataModules only) holds each user's known
    items as tokens (`lit_recs.data.tokens`; the last position is the [mask] token to predict).
    """

    users: Tensor  # [B] long (padding rows: 0)
    weights: Tensor  # [B] float, 1 = real user, 0 = padding
    seen: Tensor  # [2, S] long: (row, item) pairs excluded from ranking
    targets: Tensor  # [2, T] long: (row, item) held-out pairs
    sampled: Tensor | None = None  # [B, N] long: fixed negatives of the sampled protocol
    sequences: Tensor | None = None  # [B, L] long: known items in time order (sequence models)
    sampled_key: str | None = None  # the sampled protocol's name (set with `sampled`)

    def __len__(self) -> int:
        return len(self.users)

    def seen_rows(self, num_items: int) -> Tensor:
        """The users' known items as dense 0/1 rows [B, I] (what item-item models multiply)."""
        rows = torch.zeros(len(self), num_items, device=self.users.device)  # [B, I]
        rows[self.seen[0], self.seen[1]] = 1.0
        return rows


@dataclass
class RowBatch:
    """Users' rows of the training interaction matrix, densified for the batch."""

    users: Tensor  # [B] long
    rows: Tensor  # [B, I] float 0/1

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class SequenceBatch:
    """Training sequences, right-aligned (padding on the left), with the item to predict at some
    positions: what a sequence model's loss reads (`lit_recs.models.sequential`).

    Tokens as `lit_recs.data.tokens` defines them (0 = padding, item + 1, [mask] last). `labels`
    holds the item index a model predicts at each position and -1 where there is no loss.
    """

    users: Tensor  # [B] long
    tokens: Tensor  # [B, L] long
    labels: Tensor  # [B, L] long, -1 = no loss here

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class ClozeBatch(SequenceBatch):
    """Masked-item (Cloze) training sequences (BERT4Rec): `labels` holds the original item index at
    every masked position ([mask], or under BERT's rule a random or unchanged item) and -1
    elsewhere."""


@dataclass
class NextItemBatch(SequenceBatch):
    """Next-item training sequences (SASRec): a window's items but its last as `tokens` [B, L - 1],
    and at each position the item that follows it as `labels` (-1 on padding)."""


@dataclass
class FeatureBatch:
    """Field-encoded rows (FM, FFM, two-tower): padded slots of (field, feature id, value).

    `task` says what the labels are: `ctr` (click / no click, 1 / 0), `rating` (the rating) or
    `topn` (1 = an observed interaction, 0 = a sampled negative; rows come in groups of
    `group` = 1 + N: the positive, then its N negatives).
    """

    users: Tensor  # [R] long
    items: Tensor  # [R] long
    index: Tensor  # [R, S] long: global feature ids
    value: Tensor  # [R, S] float: x (0 on padding slots)
    field: Tensor  # [R, S] long: field of each slot
    labels: Tensor  # [R] float
    task: str = "ctr"
    group: int = 1

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TowerBatch:
    """Two-tower rows: (user, item) pairs with what the user tower reads.

    task `topn`: every pair is a positive; `negatives` holds sampled items (per row for the
    sampled losses, shared by the whole batch for in-batch softmax). task `ctr`: `labels` says
    click (1) or not (0). `history` holds the user's items before the interaction (tokens:
    item + 1, 0 = padding, right-aligned, most recent last); `context` the context fields'
    feature ids (hour, weekday of the interaction).
    """

    users: Tensor  # [B] long
    items: Tensor  # [B] long
    history: Tensor | None = None  # [B, L] long
    negatives: Tensor | None = None  # [B, N] long
    labels: Tensor | None = None  # [B] float (ctr)
    context: Tensor | None = None  # [B, Sc] long global feature ids
    task: str = "topn"

    def __len__(self) -> int:
        return len(self.users)
