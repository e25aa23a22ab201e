"""Factorization Machines (Rendle 2010) and Field-aware FMs (Juan et al. 2016): the maths.

Rows are sparse feature vectors given as padded slots: `index [B, S]` (global feature ids),
`value [B, S]` (x_i; 0 on padding slots) and, for FFM, `field [B, S]` (the field of each slot).

    FM:   y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
          with the pairwise term in O(S k):  1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]
    FFM:  y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j
          through per-field sums T[f, g] = sum_{i in field f} v_{i, g} x_i ([B, F, F, k]):
          pairwise = 1/2 (sum_{f, g} <T[f, g], T[g, f]> - sum_i |v_{i, f_i}|^2 x_i^2),
          O(S F k + F^2 k) per row, vectorised over all field pairs (no loop over pairs).

Each model keeps one table row per feature, [w_i, v_i], so that a batch is a single lookup (and
its L2 penalty reuses it). Both pairwise terms split over two disjoint sets of slots (a user's and
an item's): the total is the two within-set terms plus a dot product of one vector per side
(`Parts.vector`), which is how a model scores a whole catalogue with one matmul.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lit_recs.nn.embedding import lookup


class Parts(NamedTuple):
    """A model's terms over a set of slots: `terms` [B] (linear + pairwise, without w0),
    `vector` (FM: sum_i v_i x_i [B, k]; FFM: T [B, F, F, k]) and `norms` [B] (sum of the squared
    table rows of the real slots, for an L2 penalty; None unless asked for)."""

    terms: Tensor
    vector: Tensor
    norms: Tensor | None


def _table(num_features: int, width: int, init_std: float, sparse: bool) -> nn.Embedding:
    """Rows [w_i, factors of feature i]: w starts at 0, the factors ~ N(0, init_std^2)."""
    table = nn.Embedding(num_features, 1 + width, sparse=sparse)
    nn.init.normal_(table.weight, std=init_std)
    with torch.no_grad():
        table.weight[:, 0] = 0.0
    return table


class FactorizationNet(nn.Module):
    """What FMNet and FFMNet share on top of their `parts`: scored rows with the L2 penalty from
    the same lookup, and one side's (bias, vector) for ranking a catalogue with one matmul."""

    bias: nn.Parameter  # w0

    def parts(self, index: Tensor, value: Tensor, field: Tensor, norms: bool = False) -> Parts:
        raise NotImplementedError

    def side_vector(self, vector: Tensor, side: str, user_fields: Tensor, item_fields: Tensor
                    ) -> Tensor:
        """Parts.vector of one side [R, ...] -> [R, D], dotted with the other side's."""
        return vector

    def rows(self, index: Tensor, value: Tensor, field: Tensor, l2: float = 0.0
             ) -> tuple[Tensor, Tensor | None]:
        """Rows [R, S] -> (y(x) [R], l2 * sum of the squared table rows of the real slots / R,
        or None when l2 = 0)."""
        parts = self.parts(index, value, field, norms=l2 > 0)
        penalty = None if parts.norms is None else l2 * parts.norms.sum() / len(index)
        return self.bias + parts.terms, penalty

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: str,
                    user_fields: Tensor, item_fields: Tensor) -> tuple[Tensor, Tensor]:
        """One side's slots [R, S] -> (bias [R], vec [R, D]): the row joining user u and item i
        scores bias_u + bias_i + <vec_u, vec_i> (w0 goes with the user). user_fields /
        item_fields [F_side]: the field numbers of each side (FFM pairs them)."""
        parts = self.parts(index, value, field)
        bias = parts.terms + self.bias if side == "user" else parts.terms  # [R]
        return bias, self.side_vector(parts.vector, side, user_fields, item_fields)


class FMNet(FactorizationNet):
    """w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j, the pairwise term in O(S k) per row."""

    def __init__(self, num_features: int, dim: int, init_std: float = 0.01, sparse: bool = False
                 ) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.table = _table(num_features, dim, init_std, sparse)  # [N, 1 + k]

    def parts(self, index: Tensor, value: Tensor, field: Tensor | None = None,
              norms: bool = False) -> Parts:
        """index, value [B, S] -> Parts (`field` is not used: FM has no fields). Two disjoint slot
        sets a, b of one row: pairwise(a + b) = pairwise(a) + pairwise(b) + <vector_a, vector_b>.
        """
        rows = lookup(self.table, index)  # [B, S, 1 + k]
        scaled = rows * value.unsqueeze(-1)  # [B, S, 1 + k]: w_i x_i, v_i x_i
        vx = scaled[..., 1:]  # [B, S, k]
        total = vx.sum(1)  # [B, k]
        pairwise = 0.5 * (total.square() - vx.square().sum(1)).sum(1)  # [B]
        squares = (rows.square().sum(-1) * (value != 0)).sum(1) if norms else None  # [B]
        return Parts(scaled[..., 0].sum(1) + pairwise, total, squares)

    def forward(self, index: Tensor, value: Tensor) -> Tensor:
        """index, value [B, S] -> [B]."""
        return self.bias + self.parts(index, value).terms


def real_slots(value: Tensor) -> tuple[Tensor, Tensor]:
    """(row [N], slot [N]) of the slots with x != 0. FFM's per-slot work is F times FM's: it skips
    padding (a third of ML-100K's slots) instead of multiplying it by zero; FM is faster on the
    padded slots."""
    return value.nonzero(as_tuple=True)


class FFMNet(FactorizationNet):
    """w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j: one factor vector per
    (feature, field), the pairwise term through per-field sums."""

    def __init__(self, num_features: int, num_fields: int, dim: int, init_std: float = 0.01,
                 sparse: bool = False) -> None:
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.bias = nn.Parameter(torch.zeros(()))
        self.table = _table(num_features, num_fields * dim, init_std, sparse)  # [N, 1 + F k]

    def parts(self, index: Tensor, value: Tensor, field: Tensor, norms: bool = False) -> Parts:
        """index, value, field [B, S] -> Parts with vector T [B, F, F, k],
        T[b, f, g] = sum over slots i of field f of v_{i, g} x_i. Two disjoint slot sets a, b of
        one row: pairwise(a + b) = pairwise(a) + pairwise(b) + sum_{f, g} <T_a[f, g], T_b[g, f]>.
        """
        b, f, k = len(index), self.num_fields, self.dim
        rows, slot = real_slots(value)  # [N], [N]
        fields = field[rows, slot]  # [N]
        entries = lookup(self.table, index[rows, slot])  # [N, 1 + F k]
        scaled = entries * value[rows, slot, None]  # [N, 1 + F k]
        linear = scaled.new_zeros(b).index_add_(0, rows, scaled[:, 0])  # [B]
        vx = scaled[:, 1:]  # [N, F k]: v_{i, g} x_i for every g
        t = vx.new_zeros(b * f, f * k).index_add_(0, rows * f + fields, vx).view(b, f, f, k)
        own = vx.reshape(-1, k).index_select(0, torch.arange(len(rows), device=vx.device) * f
                                             + fields)  # [N, k]: v_{i, f_i} x_i
        diagonal = vx.new_zeros(b).index_add_(0, rows, own.square().sum(1))  # [B]
        pairwise = 0.5 * ((t * t.transpose(1, 2)).sum((1, 2, 3)) - diagonal)  # [B]
        squares = (vx.new_zeros(b).index_add_(0, rows, entries.square().sum(1))
                   if norms else None)  # [B]
        return Parts(linear + pairwise, t, squares)

    def side_vector(self, vector: Tensor, side: str, user_fields: Tensor, item_fields: Tensor
                    ) -> Tensor:
        """T [R, F, F, k] -> the blocks that meet the other side, laid out (user field, item
        field): T_u[f, g] for the user, T_i[g, f] for the item: [R, Fu Fi k]."""
        if side == "user":
            return vector[:, user_fields][:, :, item_fields].flatten(1)  # [R, Fu Fi k]
        return vector[:, item_fields][:, :, user_fields].transpose(1, 2).flatten(1)

    def forward(self, index: Tensor, value: Tensor, field: Tensor) -> Tensor:
        """index, value, field [B, S] -> [B]."""
        return self.bias + self.parts(index, value, field).terms
