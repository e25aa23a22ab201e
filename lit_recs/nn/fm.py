"""Factorization Machines (Rendle 2010) and Field-aware FMs (Juan et al. 2016): the maths.

Rows are sparse feature vectors given as padded slots: `index [B, S]` (global feature ids),
`value [B, S]` (x_i; 0 on padding slots) and, for FFM, `field [B, S]` (the field of each slot).

    FM:   y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
          with the pairwise term in O(S k):  1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]
    FFM:  y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j
          through per-field sums T[f, g] = sum_{i in field f} v_{i, g} x_i ([B, F, F, k]):
          pairwise = 1/2 (sum_{f, g} <T[f, g], T[g, f]> - sum_i |v_{i, f_i}|^2 x_i^2),
          O(S F k + F^2 k) per row, vectorised over all field pairs (no loop over pairs).

Both pairwise terms split over two disjoint sets of slots (a user's and an item's): the total is
the two within-set terms plus a dot product of one vector per side (`sums` / `field_sums`), which
is how a model scores a whole catalogue with one matmul.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def lookup(table: nn.Embedding, index: Tensor) -> Tensor:
    """table(index) through index_select: index [B, S] -> [B, S, D]. On the CPU its backward (an
    index_add) is 2-3x faster than nn.Embedding's for the many repeated ids of feature rows."""
    return table.weight.index_select(0, index.reshape(-1)).view(*index.shape, -1)


class LinearTerm(nn.Module):
    """w0 + sum_i w_i x_i over the slots of each row."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.weight = nn.Embedding(num_features, 1)
        nn.init.zeros_(self.weight.weight)

    def terms(self, index: Tensor, value: Tensor) -> Tensor:
        """sum_i w_i x_i without w0: index, value [B, S] -> [B]."""
        return (lookup(self.weight, index).squeeze(-1) * value).sum(1)

    def forward(self, index: Tensor, value: Tensor) -> Tensor:
        """index, value [B, S] -> [B]."""
        return self.bias + self.terms(index, value)


class FMInteraction(nn.Module):
    """sum_{i<j} <v_i, v_j> x_i x_j in O(S k) per row."""

    def __init__(self, num_features: int, dim: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_features, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def sums(self, index: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
        """index, value [B, S] -> (pairwise term [B], sum_i v_i x_i [B, k]).

        Two disjoint slot sets a, b of one row: pairwise(a + b) = pairwise(a) + pairwise(b)
        + <sum_a, sum_b>.
        """
        vx = lookup(self.embedding, index) * value.unsqueeze(-1)  # [B, S, k]: v_i x_i
        total = vx.sum(1)  # [B, k]
        pairwise = 0.5 * (total.square() - vx.square().sum(1)).sum(1)  # [B]
        return pairwise, total

    def forward(self, index: Tensor, value: Tensor) -> Tensor:
        """index, value [B, S] -> [B]."""
        return self.sums(index, value)[0]


class FFMInteraction(nn.Module):
    """sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j, one embedding per (feature, field)."""

    def __init__(self, num_features: int, num_fields: int, dim: int, init_std: float = 0.01
                 ) -> None:
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.embedding = nn.Embedding(num_features, num_fields * dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def field_sums(self, index: Tensor, value: Tensor, field: Tensor) -> tuple[Tensor, Tensor]:
        """index, value, field [B, S] -> (pairwise term [B], T [B, F, F, k]).

        T[b, f, g] = sum over slots i of field f of v_{i, g} x_i. Two disjoint slot sets a, b of
        one row: pairwise(a + b) = pairwise(a) + pairwise(b) + sum_{f, g} <T_a[f, g], T_b[g, f]>.
        """
        b, s = index.shape
        f, k = self.num_fields, self.dim
        vx = lookup(self.embedding, index) * value.unsqueeze(-1)  # [B, S, F k]: v_{i,g} x_i, all g
        t = vx.new_zeros(b, f, f * k).scatter_add_(1, field.unsqueeze(-1).expand(b, s, f * k), vx)
        t = t.view(b, f, f, k)  # [B, F(own), F(other), k]
        own = vx.view(b, s, f, k).gather(2, field.view(b, s, 1, 1).expand(b, s, 1, k))  # [B,S,1,k]
        diagonal = own.square().sum((1, 2, 3))  # [B]: sum_i |v_{i, f_i} x_i|^2
        pairwise = 0.5 * ((t * t.transpose(1, 2)).sum((1, 2, 3)) - diagonal)  # [B]
        return pairwise, t

    def forward(self, index: Tensor, value: Tensor, field: Tensor) -> Tensor:
        """index, value, field [B, S] -> [B]."""
        return self.field_sums(index, value, field)[0]
