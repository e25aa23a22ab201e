"""Transformer encoder blocks for sequence recommenders (BERT4Rec, SASRec), and `TiedSequenceNet`,
their common net: an encoder whose outputs score items against the items' input embeddings.

A block is BERT's post-LN layer (Vaswani et al. 2017; Devlin et al. 2019; Sun et al. 2019):

    h = LayerNorm(x + Dropout(MultiHeadAttention(x)))
    y = LayerNorm(h + Dropout(W_2 GELU(W_1 h + b_1) + b_2))

Attention is torch's scaled_dot_product_attention with a key-padding mask (padded positions are
never attended to); `causal=True` adds the left-to-right mask of unidirectional models. Training on
the CPU with dropout, the same maths is written out so that the attention weights take
`lit_recs.nn.dropout`'s cheaper mask (torch's CPU attention dropout doubled its cost).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs.nn.dropout import Dropout, dropout


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, keep: Tensor, causal: bool = False) -> Tensor:
        """x [B, L, D], keep [B, L] bool (False = padding) -> [B, L, D]."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mask = keep[:, None, None, :]  # [B, 1, 1, L]: which keys each query may attend to
        if causal:
            mask = mask & torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
            # a padded query may have no key left: let it see itself (its output is unused, but a
            # NaN row would reach the valid positions through the next layer's values)
            mask = mask | torch.eye(n, dtype=torch.bool, device=x.device)
        attended = attention(q, k, v, mask, self.dropout if self.training else 0.0)  # [B, H, L, D/H]
        return self.out(attended.transpose(1, 2).reshape(b, n, d))


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, p: float) -> Tensor:
    """softmax(q k^T / sqrt(d) where mask, else -inf) v with dropout p on the weights.
    q, k, v [B, H, L, d], mask broadcastable to [B, H, L, L] (True = may attend) -> [B, H, L, d]."""
    if p == 0.0 or q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, H, L, L]
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return dropout(weights, p) @ v


class TransformerBlock(nn.Module):
    """Post-LN transformer layer: self-attention and a GELU feed-forward, residuals, LayerNorm."""

    def __init__(self, dim: int, heads: int, ff_dim: int | None = None, dropout: float = 0.1
                 ) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(dim, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim or 4 * dim), nn.GELU(),
                                nn.Linear(ff_dim or 4 * dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor, causal: bool = False) -> Tensor:
        """x [B, L, D], keep [B, L] bool -> [B, L, D]."""
        h = self.norm1(x + self.drop(self.attention(x, keep, causal)))
        return self.norm2(h + self.drop(self.ff(h)))


def sinusoidal_positions(max_len: int, dim: int) -> Tensor:
    """Fixed positional encodings [L, D] (Vaswani et al. 2017)."""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]  # [L, 1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return table


class SequenceEncoder(nn.Module):
    """Token + position embeddings, LayerNorm and dropout, then `layers` transformer blocks.

    Token 0 is padding (its embedding stays zero and it is never attended to). Positions count from
    the left of the [B, L] window (`learned` or `sinusoidal`).
    """

    def __init__(self, num_tokens: int, max_len: int, dim: int = 64, layers: int = 2,
                 heads: int = 2, dropout: float = 0.1, positions: str = "learned",
                 ff_dim: int | None = None) -> None:
        super().__init__()
        if positions not in ("learned", "sinusoidal"):
            raise ValueError(f"positions must be 'learned' or 'sinusoidal', got {positions!r}")
        self.tokens = nn.Embedding(num_tokens, dim, padding_idx=0)
        if positions == "learned":
            self.positions = nn.Parameter(torch.zeros(max_len, dim))
            nn.init.trunc_normal_(self.positions, std=0.02)
        else:
            self.register_buffer("positions", sinusoidal_positions(max_len, dim))
        nn.init.trunc_normal_(self.tokens.weight, std=0.02)
        with torch.no_grad():
            self.tokens.weight[0].zero_()
        self.norm = nn.LayerNorm(dim)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, ff_dim, dropout)
                                    for _ in range(layers))

    def forward(self, tokens: Tensor, causal: bool = False) -> Tensor:
        """tokens [B, L] long -> hidden states [B, L, D]."""
        keep = tokens > 0  # [B, L]
        x = self.drop(self.norm(self.tokens(tokens) + self.positions[None, : tokens.shape[1]]))
        for block in self.blocks:
            x = block(x, keep, causal)
        return x


class TiedSequenceNet(nn.Module):
    """A sequence encoder and an output layer tied to the items' input embeddings: the part of
    BERT4Rec's and SASRec's nets that is the same.

    Tokens [B, L] (`lit_recs.data.tokens`) -> `encode` -> hidden [B, L, D]; a position's logits
    over the I items are `head_input(h) @ item_table().T + item_bias()` (`logits`). Subclasses
    choose the head's query (`head_input`, default h itself) and bias (`item_bias`, default none).

    Args:
        num_tokens: embedding rows: padding, the I items and any special tokens after them.
        causal: attend only to earlier positions (left-to-right models).
    """

    def __init__(self, num_items: int, num_tokens: int, max_len: int = 50, dim: int = 64,
                 layers: int = 2, heads: int = 2, dropout: float = 0.1,
                 positions: str = "learned", ff_dim: int | None = None, causal: bool = False
                 ) -> None:
        super().__init__()
        self.num_items, self.max_len, self.causal = num_items, max_len, causal
        self.encoder = SequenceEncoder(num_tokens, max_len, dim, layers, heads, dropout,
                                       positions, ff_dim)
        self.register_buffer("no_bias", torch.zeros(num_items), persistent=False)

    def encode(self, tokens: Tensor) -> Tensor:
        """tokens [B, L <= max_len] -> hidden states [B, L, D]."""
        return self.encoder(tokens, self.causal)

    def head_input(self, hidden: Tensor) -> Tensor:
        """hidden [..., D] -> the query of the item softmax [..., D] (here h itself)."""
        return hidden

    def item_table(self) -> Tensor:
        """The items' input token embeddings [I, D] (tokens 1 .. I: item + 1, tied)."""
        return self.encoder.tokens.weight[1 : self.num_items + 1]

    def item_bias(self) -> Tensor:
        """The output bias [I] (here zeros: no bias)."""
        return self.no_bias

    def logits(self, hidden: Tensor, items: slice = slice(None)) -> Tensor:
        """hidden [M, D] -> logits over every item [M, I] (or the slice `items`, [M, n])."""
        return self.head_input(hidden) @ self.item_table()[items].T + self.item_bias()[items]
