"""Factorization Machines.

Rendle, "Factorization Machines", ICDM 2010.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j,   v_i in R^k

over the slots of a field-encoded row, the pairwise term in O(S k) (`lit_recs.nn.fm`). Losses:
logistic (ctr, top-N with sampled negatives) or squared error (rating), see `FeatureModule`.

Deviations from the paper: trained with Adam on mini-batches instead of SGD / ALS / MCMC; L2 comes
from the optimizer's weight decay (or `l2` on the batch's embeddings), not per-group priors.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_recs.data.batches import FeatureBatch
from lit_recs.models.features import FeatureModule, Side
from lit_recs.nn.fm import FMInteraction, LinearTerm


class FM(FeatureModule):
    """Factorization machine over FeatureBatch rows.

    Args:
        dim: k, the size of each feature's factor vector.
        init_std: standard deviation of the normal initialisation of the factors.
        **kwargs: FeatureModule's (l2) and RecModule's (optimizer, top_k, ...).
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 dim: int = 10, init_std: float = 0.01, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.linear = LinearTerm(num_features)
        self.pairwise = FMInteraction(num_features, dim, init_std)

    def score_rows(self, batch: FeatureBatch) -> Tensor:
        return self.linear(batch.index, batch.value) + self.pairwise(batch.index, batch.value)

    def penalised(self) -> list[nn.Embedding]:
        return [self.linear.weight, self.pairwise.embedding]

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        pairwise, total = self.pairwise.sums(index, value)  # [R], [R, k]
        bias = self.linear.terms(index, value) + pairwise  # [R]
        return (bias + self.linear.bias if side == "user" else bias), total

    def set_global_bias(self, value: float) -> None:
        self.linear.bias.fill_(value)
