"""Field-aware Factorization Machines.

Juan, Zhuang, Chin, Lin, "Field-aware Factorization Machines for CTR Prediction", RecSys 2016.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j

each feature has one factor vector per field it meets; the pairwise term through per-field sums,
O(S F k + F^2 k) per row (`lit_recs.nn.fm`). Losses as for FM (`FeatureModule`).

Deviations from the paper: Adam on mini-batches instead of AdaGrad on single examples; the linear
term is kept (libffm drops it); no instance-wise normalisation of x (multi-hot fields can be
weighted 1/n by the DataModule instead).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lit_recs.data.batches import FeatureBatch
from lit_recs.models.features import FeatureModule, Side
from lit_recs.nn.fm import FFMInteraction, LinearTerm


class FFM(FeatureModule):
    """Field-aware factorization machine over FeatureBatch rows.

    Args:
        dim: k, the size of each (feature, field) factor vector.
        init_std: standard deviation of the normal initialisation of the factors.
        **kwargs: FeatureModule's (l2) and RecModule's (optimizer, top_k, ...).
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 dim: int = 8, init_std: float = 0.01, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.linear = LinearTerm(num_features)
        self.pairwise = FFMInteraction(num_features, num_fields, dim, init_std)

    def score_rows(self, batch: FeatureBatch) -> Tensor:
        return (self.linear(batch.index, batch.value)
                + self.pairwise(batch.index, batch.value, batch.field))

    def penalised(self) -> list[nn.Embedding]:
        return [self.linear.weight, self.pairwise.embedding]

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        pairwise, t = self.pairwise.field_sums(index, value, field)  # [R], [R, F, F, k]
        users, items = self.side_fields("user"), self.side_fields("item")
        if side == "user":
            block = t[:, users][:, :, items]  # [R, Fu, Fi, k]: T_u[f, g]
        else:
            block = t[:, items][:, :, users].transpose(1, 2)  # [R, Fu, Fi, k]: T_i[g, f]
        bias = self.linear.terms(index, value) + pairwise  # [R]
        return (bias + self.linear.bias if side == "user" else bias), block.flatten(1)

    def set_global_bias(self, value: float) -> None:
        self.linear.bias.fill_(value)
