"""Field-aware Factorization Machines.

Juan, Zhuang, Chin, Lin, "Field-aware Factorization Machines for CTR Prediction", RecSys 2016.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_{i, f_j}, v_{j, f_i}> x_i x_j

each feature has one factor vector per field it meets; the pairwise term through per-field sums,
O(S F k + F^2 k) per row (`lit_recs.nn.fm.FFMNet`). Losses as for FM (`FeatureModule`); ranking:
the user's and the item's per-field sums meet in one dot product over (user field, item field)
pairs (`FFMNet.side_vector`).

Deviations from the paper: Adam on mini-batches instead of AdaGrad on single examples; the linear
term is kept (libffm drops it); no instance-wise normalisation of x (multi-hot fields can be
weighted 1/n by the DataModule instead).
"""

from __future__ import annotations

from typing import Any

from lit_recs.models.features import FeatureModule
from lit_recs.nn.fm import FFMNet


class FFM(FeatureModule):
    """Field-aware factorization machine over FeatureBatch rows.

    Args:
        dim: k, the size of each (feature, field) factor vector.
        init_std: standard deviation of the normal initialisation of the factors.
        sparse: sparse gradients for the feature table (large feature spaces): pair with an
            optimizer that takes them (torch.optim.Adagrad, as libffm uses, or SparseAdam).
        **kwargs: FeatureModule's (l2) and RecModule's (optimizer, top_k, ...).
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 dim: int = 8, init_std: float = 0.01, sparse: bool = False, **kwargs: Any
                 ) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.net = FFMNet(num_features, num_fields, dim, init_std, sparse)
