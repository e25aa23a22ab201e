"""SASRec: Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018.

    h = Transformer_causal(E[tokens] + P)          [B, L, D], position t attends to 1 .. t only
    r(t, i) = h_t . E_i                             the next item's score, E tied to the input

trained on the next item at every position of a window, with one of four losses (the `loss`
argument, a `lit_recs.losses.CatalogueLoss`):

- `lit_recs.losses.SampledBCE(num_negatives=1)`: the paper's binary cross-entropy,
  -log sigma(r(t, o_t)) - log(1 - sigma(r(t, j))), one negative j per position;
- `lit_recs.losses.full_ce` (the default): softmax over the whole catalogue,
  -log softmax_i(r(t, i))[o_t] (Klenitskiy & Vasilev, RecSys 2023: SASRec with it beats BERT4Rec);
- `lit_recs.losses.SampledCE(num_sampled)`: the softmax over the target and K items shared by the
  batch, log Q corrected, accidental hits masked (catalogues too large for the full softmax);
- `lit_recs.losses.GBCE(num_negatives, t)`: gSASRec's generalised BCE (Petrov & Macdonald, RecSys
  2023), sigma(r(t, o_t)) raised to beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = K / (I - 1).

The maths is `SASRecNet`, a plain torch module (`model.net`); tokens follow
`lit_recs.data.tokens` (0 padding, item + 1; SASRec has no [mask]). Training batches come from
`lit_recs.data.sequential.NextItemDataModule` (a window's first L - 1 items as input, items
1 .. L - 1 as targets). At evaluation the model reads the user's last L - 1 known items (the
evaluation history without its trailing [mask]) and scores every item from the last position.
What it shares with BERT4Rec is `lit_recs.models.sequential.SequenceModule` and
`lit_recs.nn.transformer.TiedSequenceNet`.

Deviations from the paper: the transformer block is the post-LN one with a GELU feed-forward
(`lit_recs.nn.transformer`, as in RecBole's SASRec and BERT4Rec) rather than the paper's
layer-normalised query and ReLU feed-forward; negatives are drawn from the items other than the
position's target (the paper leaves out the user's whole history); item embeddings are not
scaled by sqrt(D) (the authors' code does that).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lit_recs import losses
from lit_recs.data.batches import NextItemBatch
from lit_recs.data.tokens import item_tokens
from lit_recs.models.sequential import SequenceModule
from lit_recs.nn.transformer import TiedSequenceNet


class SASRecNet(TiedSequenceNet):
    """The causal encoder over item tokens (padding + I items, no [mask]) and the head tied to the
    items' input embeddings, without bias: logits = h @ E.T (`logits`)."""

    def __init__(self, num_items: int, max_len: int = 50, dim: int = 64, layers: int = 2,
                 heads: int = 2, dropout: float = 0.2, positions: str = "learned",
                 ff_dim: int | None = None) -> None:
        super().__init__(num_items, item_tokens(num_items), max_len, dim, layers, heads, dropout,
                         positions, ff_dim, causal=True)


class SASRec(SequenceModule):
    """Args:
        max_len: the longest sequence the position table covers (the CLI links it from the
            DataModule's max_len, L; SASRec reads L - 1 items).
        dim / layers / heads / dropout / ff_dim: the encoder (ff_dim default 4 * dim).
        positions: `learned` (the paper's) or `sinusoidal` position embeddings.
        loss: a `lit_recs.losses.CatalogueLoss`: `full_ce`, `SampledCE(num_sampled)`,
            `SampledBCE(num_negatives)` or `GBCE(num_negatives, t)` (module docstring).
        **kwargs: RecModule's (optimizer, top_k, mask_seen, score_cells, ...).
    """

    batch_type = NextItemBatch
    data_hint = "lit_recs.data.sequential.NextItemDataModule"

    def __init__(self, num_users: int, num_items: int, max_len: int = 50, dim: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.2, ff_dim: int | None = None,
                 positions: str = "learned", loss: losses.CatalogueLoss = losses.full_ce,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, max_len, loss, **kwargs)
        self.net = SASRecNet(num_items, max_len, dim, layers, heads, dropout, positions, ff_dim)

    def eval_tokens(self, sequences: Tensor) -> Tensor:
        """The known items without the trailing [mask]: sequences [B, L] -> [B, L - 1]."""
        return sequences[:, :-1]
