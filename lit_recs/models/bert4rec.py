"""BERT4Rec: Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019.

    h = Transformer(E[tokens] + P)                              [B, L, D], bidirectional
    P(v | h_t) = softmax(GELU(h_t W_P + b_P) E^T + b_O)          over the I items, E tied to the input

Trained on Cloze batches (`lit_recs.data.cloze.ClozeDataModule`): cross-entropy at the masked
positions, over the full catalogue (`loss: full`), or over the target and `num_sampled` items
drawn uniformly and shared by the batch (`loss: sampled`, for catalogues too large for a full
softmax; accidental hits are masked and the logits corrected by log Q). At evaluation the model
reads the user's history followed by [mask] and scores every item at that position.

Deviations from the paper: none in the architecture; the paper's training data duplication (dupe
factor) is replaced by fresh masks every epoch, and long histories are used whole through sliding
windows when the DataModule's `window_stride` is set.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs.data.batches import ClozeBatch, EvalBatch
from lit_recs.models.base import RecModule
from lit_recs.nn.transformer import SequenceEncoder


class BERT4Rec(RecModule):
    """Args:
        max_len: the longest sequence the position table covers (>= the DataModule's max_len).
        dim / layers / heads / dropout / ff_dim: the encoder (ff_dim default 4 * dim).
        positions: `learned` or `sinusoidal` position embeddings.
        loss: `full` softmax over the catalogue, or `sampled` softmax with `num_sampled` negatives.
    """

    def __init__(self, num_users: int, num_items: int, max_len: int = 50, dim: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.1, ff_dim: int | None = None,
                 positions: str = "learned", loss: str = "full", num_sampled: int = 1000,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if loss not in ("full", "sampled"):
            raise ValueError(f"loss must be 'full' or 'sampled', got {loss!r}")
        if loss == "sampled" and num_sampled < 1:
            raise ValueError(f"num_sampled must be >= 1, got {num_sampled}")
        self.max_len, self.loss, self.num_sampled = max_len, loss, num_sampled
        # tokens: 0 padding, 1..I items, I + 1 [mask]
        self.encoder = SequenceEncoder(num_items + 2, max_len, dim, layers, heads, dropout,
                                       positions, ff_dim)
        self.transform = nn.Linear(dim, dim)  # W_P, b_P
        self.out_bias = nn.Parameter(torch.zeros(num_items))  # b_O

    def head_input(self, hidden: Tensor) -> Tensor:
        return F.gelu(self.transform(hidden))  # [..., D]

    def item_table(self) -> Tensor:
        return self.encoder.tokens.weight[1 : self.num_items + 1]  # [I, D], tied to the input

    def logits(self, hidden: Tensor) -> Tensor:
        """hidden [M, D] -> logits over every item [M, I]."""
        return self.head_input(hidden) @ self.item_table().T + self.out_bias

    def encode(self, tokens: Tensor) -> Tensor:
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequences of length {tokens.shape[1]} exceed BERT4Rec's max_len "
                             f"{self.max_len}: set model max_len >= the DataModule's max_len")
        return self.encoder(tokens)  # [B, L, D]

    def compute_loss(self, batch: ClozeBatch) -> Tensor:
        hidden = self.encode(batch.tokens)  # [B, L, D]
        at = batch.labels >= 0  # [B, L] masked positions
        h, labels = hidden[at], batch.labels[at]  # [M, D], [M]
        if self.loss == "full":
            return F.cross_entropy(self.logits(h), labels)
        return self.sampled_softmax(h, labels)

    def sampled_softmax(self, hidden: Tensor, labels: Tensor) -> Tensor:
        """Softmax over [target, K uniform negatives shared by the batch], log Q corrected (uniform
        Q: the same constant for every negative), negatives equal to the target masked out."""
        negatives = torch.randint(0, self.num_items, (self.num_sampled,), device=hidden.device)
        q = self.head_input(hidden)  # [M, D]
        table = self.item_table()
        pos = (q * table[labels]).sum(-1, keepdim=True) + self.out_bias[labels, None]  # [M, 1]
        neg = q @ table[negatives].T + self.out_bias[negatives]  # [M, K]
        neg = neg - math.log(self.num_sampled / self.num_items)  # log Q correction
        neg = neg.masked_fill(negatives[None, :] == labels[:, None], float("-inf"))
        logits = torch.cat([pos, neg], dim=1)  # [M, 1 + K]
        return F.cross_entropy(logits, torch.zeros_like(labels))

    def score(self, batch: EvalBatch) -> Tensor:
        if batch.sequences is None:
            raise ValueError("BERT4Rec needs sequences in its evaluation batches: train and "
                             "evaluate it with lit_recs.data.cloze.ClozeDataModule")
        hidden = self.encode(batch.sequences)[:, -1]  # [B, D] at the trailing [mask]
        return self.logits(hidden)  # [B, I]
