"""Two-tower (DSSM) maths: field embeddings, MLP towers, history encoders, similarity.

A tower turns padded feature slots (see `lit_recs.data.fields`) into one vector: each slot's
embedding times its value, summed per field, the fields concatenated, then an MLP to D. The user
tower also reads the user's history: the item-tower vectors of the last L items, pooled by their
mean, a GRU or a transformer encoder. Plain torch: usable from a notebook.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs.nn.dropout import Dropout
from lit_recs.nn.transformer import TransformerBlock

HistoryKind = Literal["none", "mean", "gru", "transformer"]
Similarity = Literal["cosine", "dot"]


class MLP(nn.Module):
    """Linear layers to `out_dim`: ReLU and dropout after every hidden layer, none after the last.
    With no hidden layers it is one linear map."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU(), Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)  # [R, in] -> [R, out]


def embed(table: Tensor, index: Tensor, sparse: bool = False) -> Tensor:
    """Rows of the embedding table [V, E] for index [...] -> [..., E]; `sparse`: the table's
    gradient holds only these rows (a sparse tensor: pair with `lit_recs.optim.LazyAdam`)."""
    if sparse:
        return F.embedding(index, table, sparse=True)
    return table.index_select(0, index.reshape(-1)).view(*index.shape, -1)


def pool_fields(table: Tensor, index: Tensor, value: Tensor, slot_field: Tensor, num_fields: int,
                sparse: bool = False) -> Tensor:
    """Slots [R, S] -> per-field sums of value x embedding [R, F, E].

    slot_field [S]: the (side-local) field of each slot column; every row has the same layout.
    """
    emb = embed(table, index, sparse)  # [R, S, E]
    emb = emb * value[..., None]
    pooled = emb.new_zeros(len(index), num_fields, emb.shape[-1])  # [R, F, E]
    return pooled.index_add_(1, slot_field, emb)


class Tower(nn.Module):
    """Pooled fields [R, F_side, E] (+ extra inputs [R, X]) -> MLP -> [R, D].

    The first layer is the linear map of the concatenated fields, stored per field
    ([num_fields, E, H]) so that a tower is built knowing only the total number of fields: a
    tower reads the rows of its own side's fields (the other rows get no gradient).
    """

    def __init__(self, num_fields: int, embedding_dim: int, extra_dim: int, hidden: list[int],
                 out_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        width = hidden[0] if hidden else out_dim
        bound = 1.0 / max(1, embedding_dim + extra_dim) ** 0.5
        self.field_weight = nn.Parameter(torch.empty(num_fields, embedding_dim, width)
                                         .uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(width))
        self.extra = nn.Linear(extra_dim, width, bias=False) if extra_dim else None
        self.rest = nn.Sequential(nn.ReLU(), Dropout(dropout),
                                  MLP(width, hidden[1:], out_dim, dropout)) if hidden else None

    def forward(self, pooled: Tensor, fields: Tensor, extra: Tensor | None = None) -> Tensor:
        """pooled [R, F_side, E], fields [F_side] (field numbers), extra [R, X] -> [R, D]."""
        h = torch.einsum("rfe,feh->rh", pooled, self.field_weight[fields]) + self.bias  # [R, H]
        if self.extra is not None:
            if extra is None:
                raise ValueError("this tower was built with extra inputs: pass them")
            h = h + self.extra(extra)
        return h if self.rest is None else self.rest(h)


class HistoryEncoder(nn.Module):
    """Right-aligned history vectors [B, L, D] (padding on the left, `keep` False there) -> [B, D].

    `mean`: the mean of the real vectors; `gru`: the GRU state after the most recent item;
    `transformer`: transformer blocks (learned positions counted from the most recent item), the
    output at the most recent position. A user with no history gets the zero vector.
    """

    def __init__(self, kind: HistoryKind, dim: int, max_len: int, layers: int = 1, heads: int = 2,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        if kind == "gru":
            self.gru = nn.GRU(dim, dim, batch_first=True)
        elif kind == "transformer":
            self.positions = nn.Parameter(torch.zeros(max_len, dim))
            nn.init.trunc_normal_(self.positions, std=0.02)
            self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout=dropout)
                                        for _ in range(layers))
        elif kind != "mean":
            raise ValueError(f"history must be 'none', 'mean', 'gru' or 'transformer', got {kind!r}")

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        has = keep.any(1, keepdim=True)  # [B, 1]
        if self.kind == "mean":
            total = (x * keep[..., None]).sum(1)  # [B, D]
            return total / keep.sum(1, keepdim=True).clamp(min=1)
        if self.kind == "gru":
            lengths = keep.sum(1)  # [B]
            shift = (torch.arange(x.shape[1], device=x.device) + (x.shape[1] - lengths)[:, None])
            left = x.gather(1, (shift % x.shape[1])[..., None].expand_as(x))  # [B, L, D] padding last
            out, _ = self.gru(left)  # [B, L, D]
            last = out[torch.arange(len(x), device=x.device), (lengths - 1).clamp(min=0)]  # [B, D]
            return last * has
        h = x + self.positions[-x.shape[1]:][None]  # [B, L, D]; the last row = most recent
        safe = keep | ~has  # a row with no history attends to its padding (output zeroed)
        for block in self.blocks:
            h = block(h, safe)
        return h[:, -1] * has  # [B, D]


def ranking_vectors(x: Tensor, kind: Similarity) -> Tensor:
    """[..., D] -> the vectors a similarity of `kind` takes dot products of (unit length: cosine)."""
    return F.normalize(x, dim=-1) if kind == "cosine" else x


def similarity(user: Tensor, item: Tensor, kind: Similarity, temperature: float) -> Tensor:
    """user [B, D] x item [C, D] -> [B, C]: cosine or dot product, divided by the temperature."""
    return ranking_vectors(user, kind) @ ranking_vectors(item, kind).T / temperature
