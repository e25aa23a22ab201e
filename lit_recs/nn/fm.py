"""Factorization Machines (Rendle 2010) and Field-aware FMs (Juan et al. 2016): the maths.

Rows are sparse feature vectors given as padded slots: `index [B, S]` (global feature ids),
`value [B, S]` (x_i; 0 on padding slots) and, for FFM, `field [B, S]` (the field of each slot).

    FM:   y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
          with the pairwise term in O(S k):  1/2 sum_f [(sum_i v_if x_i)^2 - sum_i v_if^2 x_i^2]
    FFM:  y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j
          vectorised over all slot pairs at once ([B, S, S, k]), no Python loop over pairs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearTerm(nn.Module):
    """w0 + sum_i w_i x_i over the slots of each row."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.weight = nn.Embedding(num_features, 1)
        nn.init.zeros_(self.weight.weight)

    def forward(self, index: Tensor, value: Tensor) -> Tensor:
        """index, value [B, S] -> [B]."""
        return self.bias + (self.weight(index).squeeze(-1) * value).sum(1)


class FMInteraction(nn.Module):
    """sum_{i<j} <v_i, v_j> x_i x_j in O(S k) per row."""

    def __init__(self, num_features: int, dim: int, init_std: float = 0.01) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_features, dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, index: Tensor, value: Tensor) -> Tensor:
        """index, value [B, S] -> [B]."""
        vx = self.embedding(index) * value.unsqueeze(-1)  # [B, S, k]: v_i x_i
        square_of_sum = vx.sum(1).square()  # [B, k]
        sum_of_squares = vx.square().sum(1)  # [B, k]
        return 0.5 * (square_of_sum - sum_of_squares).sum(1)


class FFMInteraction(nn.Module):
    """sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j, one embedding per (feature, field)."""

    def __init__(self, num_features: int, num_fields: int, dim: int, init_std: float = 0.01
                 ) -> None:
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.embedding = nn.Embedding(num_features, num_fields * dim)
        nn.init.normal_(self.embedding.weight, std=init_std)

    def forward(self, index: Tensor, value: Tensor, field: Tensor) -> Tensor:
        """index, value, field [B, S] -> [B]."""
        b, s = index.shape
        table = self.embedding(index).view(b, s, self.num_fields, self.dim)  # [B, S, F, k]
        # cross[b, i, j] = v_{slot i, field of slot j}
        towards = field.unsqueeze(1).expand(b, s, s)  # [B, S(i), S(j)]: f_j
        cross = table.gather(2, towards.unsqueeze(-1).expand(b, s, s, self.dim))  # [B, S, S, k]
        pair = (cross * cross.transpose(1, 2)).sum(-1)  # [B, S, S]: <v_{i,f_j}, v_{j,f_i}>
        xx = value.unsqueeze(2) * value.unsqueeze(1)  # [B, S, S]: x_i x_j (0 on padding)
        upper = torch.ones(s, s, dtype=torch.bool, device=index.device).triu(1)  # i < j
        return (pair * xx * upper).sum((1, 2))
