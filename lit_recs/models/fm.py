"""Factorization Machines.

Rendle, "Factorization Machines", ICDM 2010.

    y(x) = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j,   v_i in R^k

over the slots of a field-encoded row, the pairwise term in O(S k) (`lit_recs.nn.fm.FMNet`).
Losses: logistic (ctr, top-N with sampled negatives) or squared error (rating), see
`FeatureModule`; ranking: bias_u + bias_i + <sum_u v x, sum_i v x> (`FMNet.encode_side`).

Deviations from the paper: trained with Adam on mini-batches instead of SGD / ALS / MCMC; one L2
weight (`l2`, on the rows of the batch's features) instead of per-group priors.
"""

from __future__ import annotations

from typing import Any

from lit_recs.models.features import FeatureModule
from lit_recs.nn.fm import FMNet


class FM(FeatureModule):
    """Factorization machine over FeatureBatch rows.

    Args:
        dim: k, the size of each feature's factor vector.
        init_std: standard deviation of the normal initialisation of the factors.
        sparse: sparse gradients for the feature table (large feature spaces): pair with an
            optimizer that takes them (torch.optim.Adagrad, as libFM / libffm use, or SparseAdam).
        **kwargs: FeatureModule's (l2) and RecModule's (optimizer, top_k, ...).
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 dim: int = 10, init_std: float = 0.01, sparse: bool = False, **kwargs: Any
                 ) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.net = FMNet(num_features, dim, init_std, sparse)
