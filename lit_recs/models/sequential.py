"""`SequenceModule`: the training system of transformer sequence models (BERT4Rec, SASRec).

A model's net is a `lit_recs.nn.transformer.TiedSequenceNet` (tokens -> hidden states, logits
against the items' tied input embeddings). Training batches are `SequenceBatch` rows (`tokens`
[B, L], `labels` [B, L]: the item to predict at each position, -1 where there is none); the loss
is a `lit_recs.losses.CatalogueLoss` of the query at every labelled position:

    loss(head_input(h[labels >= 0]), item_table, item_bias, labels[labels >= 0])

Evaluation reads `EvalBatch.sequences` (the last L - 1 known items, then [mask]); each model says
which tokens it reads (`eval_tokens`) and scores the catalogue from the last position's hidden
state, in chunks when the catalogue is large (`item_scorer`). A subclass builds its net and says
which training batches it takes (`batch_type`, `data_hint`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lit_recs import losses
from lit_recs.data.batches import EvalBatch, SequenceBatch
from lit_recs.models.base import ItemScorer, RecModule
from lit_recs.nn.transformer import TiedSequenceNet


class SequenceModule(RecModule):
    """Base of transformer sequence models.

    Args:
        max_len: the longest sequence the position table covers (the CLI links it from the
            DataModule's max_len; in Python it must be >= the DataModule's).
        loss: a `lit_recs.losses.CatalogueLoss`, (query [M, D], table [I, D], bias [I],
            labels [M]) -> scalar: `full_ce` (softmax over the catalogue), `SampledCE(num_sampled)`
            (sampled softmax), `SampledBCE(num_negatives)`, `GBCE(num_negatives, t)`.
        **kwargs: RecModule's (optimizer, top_k, mask_seen, ...).
    """

    net: TiedSequenceNet
    batch_type: type[SequenceBatch] = SequenceBatch  # the training batches this model takes
    data_hint = "a lit_recs.data.sequential.SequenceDataModule"  # what serves them

    def __init__(self, num_users: int, num_items: int, max_len: int = 50,
                 loss: losses.CatalogueLoss = losses.full_ce, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if not callable(loss):
            raise ValueError(f"loss must be a callable (query, table, bias, labels) -> scalar, "
                             f"e.g. lit_recs.losses.full_ce or lit_recs.losses.SampledCE, got "
                             f"{loss!r}")
        self.max_len, self.loss = max_len, loss

    def encode(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] -> hidden [B, L, D], refusing sequences longer than the position table."""
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"sequences of length {tokens.shape[1]} exceed {type(self).__name__}'s "
                             f"max_len {self.max_len}: set model max_len >= the DataModule's "
                             "max_len")
        return self.net.encode(tokens)  # [B, L, D]

    def compute_loss(self, batch: SequenceBatch) -> Tensor:
        if not isinstance(batch, self.batch_type):
            raise ValueError(f"{type(self).__name__} trains on {self.batch_type.__name__} batches "
                             f"({self.data_hint}), got {type(batch).__name__}")
        hidden = self.encode(batch.tokens)  # [B, L, D]
        at = batch.labels >= 0  # [B, L] positions with a target
        net = self.net
        return self.loss(net.head_input(hidden[at]), net.item_table(), net.item_bias(),
                         batch.labels[at])  # [M, D], [I, D], [I], [M]

    def eval_tokens(self, sequences: Tensor) -> Tensor:
        """The evaluation history the model reads, from `EvalBatch.sequences` [B, L] (known items,
        then [mask]); its last position's output scores the catalogue. Default: all of it."""
        return sequences

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        if batch.sequences is None:
            raise ValueError(f"{type(self).__name__} needs sequences in its evaluation batches: "
                             f"train and evaluate it with {self.data_hint}")
        hidden = self.encode(self.eval_tokens(batch.sequences))[:, -1]  # [B, D]
        return lambda items: self.net.logits(hidden, items)  # [B, n]
