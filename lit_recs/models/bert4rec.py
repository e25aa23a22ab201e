"""BERT4Rec: Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019.

    h = Transformer(E[tokens] + P)                              [B, L, D], bidirectional
    P(v | h_t) = softmax(GELU(h_t W_P + b_P) E^T + b_O)          over the I items, E tied to the input

The maths is `BERT4RecNet`, a plain torch module (`model.net`); tokens follow
`lit_recs.data.tokens` (0 padding, item + 1, num_items + 1 [mask]). Trained on Cloze batches
(`lit_recs.data.cloze.ClozeDataModule`) with a `lit_recs.losses.CatalogueLoss` at the masked
positions: `full_ce`, cross-entropy over the full catalogue (the default), or `SampledCE`, over the
target and `num_sampled` items drawn uniformly and shared by the batch (for catalogues too large for
a full softmax; accidental hits are masked and the logits corrected by log Q). At evaluation the
model reads the user's history followed by [mask] and scores every item at that position. What it
shares with SASRec (the loss at labelled positions, evaluation, the tied head) is
`lit_recs.models.sequential.SequenceModule` and `lit_recs.nn.transformer.TiedSequenceNet`.

Deviations from the paper: none in the architecture; the paper's training data duplication (dupe
factor) is replaced by fresh masks every epoch, and long histories are used whole through sliding
windows when the DataModule's `window_stride` is set.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs import losses
from lit_recs.data.batches import ClozeBatch
from lit_recs.data.tokens import vocabulary_size
from lit_recs.models.sequential import SequenceModule
from lit_recs.nn.transformer import TiedSequenceNet


class BERT4RecNet(TiedSequenceNet):
    """The bidirectional encoder and the output head tied to the items' input embeddings.

    Tokens [B, L] (`lit_recs.data.tokens`) -> `encode` -> hidden [B, L, D]; a position's logits over
    the I items are `head_input(h) @ item_table().T + out_bias` (`logits`).
    """

    def __init__(self, num_items: int, max_len: int = 50, dim: int = 64, layers: int = 2,
                 heads: int = 2, dropout: float = 0.1, positions: str = "learned",
                 ff_dim: int | None = None) -> None:
        super().__init__(num_items, vocabulary_size(num_items), max_len, dim, layers, heads,
                         dropout, positions, ff_dim, causal=False)
        self.transform = nn.Linear(dim, dim)  # W_P, b_P
        self.out_bias = nn.Parameter(torch.zeros(num_items))  # b_O

    def head_input(self, hidden: Tensor) -> Tensor:
        """hidden [..., D] -> GELU(h W_P + b_P) [..., D], the query of the item softmax."""
        return F.gelu(self.transform(hidden))

    def item_bias(self) -> Tensor:
        return self.out_bias  # [I]


class BERT4Rec(SequenceModule):
    """Args:
        max_len: the longest sequence the position table covers (the CLI links it from the
            DataModule's max_len; in Python it must be >= the DataModule's).
        dim / layers / heads / dropout / ff_dim: the encoder (ff_dim default 4 * dim).
        positions: `learned` or `sinusoidal` position embeddings.
        loss: a `lit_recs.losses.CatalogueLoss`, (query [M, D], table [I, D], bias [I], labels [M])
            -> scalar: `lit_recs.losses.full_ce` (softmax over the catalogue) or
            `lit_recs.losses.SampledCE(num_sampled)` (sampled softmax).
    """

    batch_type = ClozeBatch
    data_hint = "lit_recs.data.cloze.ClozeDataModule"

    def __init__(self, num_users: int, num_items: int, max_len: int = 50, dim: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.1, ff_dim: int | None = None,
                 positions: str = "learned", loss: losses.CatalogueLoss = losses.full_ce,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, max_len, loss, **kwargs)
        self.net = BERT4RecNet(num_items, max_len, dim, layers, heads, dropout, positions, ff_dim)
