"""Matrix factorisation with biases (Koren et al. 2009), trained on implicit feedback.

Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.

    s(u, i) = <p_u, q_i> + b_u + b_i
    BPR:  L = -mean log σ(s(u, i+) - s(u, i-)) + l2 * (|p_u|² + |q_i+|² + |q_i-|²) / B
    BCE:  L = mean_u [-log σ(s(u, i+)) - Σ_n log(1 - σ(s(u, i-_n)))] + the same l2 term

Deviations from the paper: Adam instead of SGD by default; the L2 term is applied to the embeddings
of the batch (as BPR's SGD update does), not to the whole tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lit_recs import losses
from lit_recs.data.batches import EvalBatch, PairBatch
from lit_recs.models.base import ItemScorer, RecModule


class MFNet(nn.Module):
    """Dot product of user and item embeddings plus biases."""

    def __init__(self, num_users: int, num_items: int, dim: int = 64, bias: bool = True,
                 init_std: float = 0.1, sparse: bool = False) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, dim, sparse=sparse)
        self.item = nn.Embedding(num_items, dim, sparse=sparse)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        self.user_bias = nn.Embedding(num_users, 1, sparse=sparse) if bias else None
        self.item_bias = nn.Embedding(num_items, 1, sparse=sparse) if bias else None
        if bias:
            nn.init.zeros_(self.user_bias.weight)
            nn.init.zeros_(self.item_bias.weight)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        """users [B], items [B, C] -> scores [B, C]."""
        scores = torch.einsum("bd,bcd->bc", self.user(users), self.item(items))  # [B, C]
        if self.user_bias is not None:
            scores = scores + self.user_bias(users) + self.item_bias(items).squeeze(-1)
        return scores

    def score_all(self, users: Tensor, items: slice = slice(None)) -> Tensor:
        """users [B] -> scores for every item [B, I] (or the slice `items` of them, [B, n])."""
        if self.user_bias is None:
            return self.user(users) @ self.item.weight[items].T  # [B, n]
        ones_u = torch.ones_like(self.user_bias(users))  # [B, 1]
        item, item_bias = self.item.weight[items], self.item_bias.weight[items]  # [n, D], [n, 1]
        left = torch.cat([self.user(users), self.user_bias(users), ones_u], 1)  # [B, D + 2]
        right = torch.cat([item, torch.ones_like(item_bias), item_bias], 1)  # [n, D + 2]
        return left @ right.T  # [B, n]: <p_u, q_i> + b_u + b_i in one matmul


class MF(RecModule):
    """MF trained on (user, positive, sampled negatives) batches with a pairwise/pointwise loss.

    Args:
        dim: embedding size D.
        bias: learn user and item biases.
        loss: `lit_recs.losses.bpr` (default), `lit_recs.losses.bce`, `lit_recs.losses.hinge` or any
            callable (pos [B, 1], neg [B, N]) -> scalar.
        l2: weight of the L2 penalty on the batch's embeddings.
        init_std: standard deviation of the normal initialisation of the embeddings.
        sparse: sparse gradients, so that a step touches only the batch's rows of the tables; pair
            with `torch.optim.SparseAdam` (`conf/model/mf_sparse.yaml`; it has no weight decay:
            use `l2`). With dense gradients Adam updates every row at every step: on ML-20M-sized
            tables (138k users, 27k items, D = 128) a step took 208 ms, against 14 ms sparse.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int = 64,
        bias: bool = True,
        loss: Callable[[Tensor, Tensor], Tensor] = losses.bpr,
        l2: float = 0.0,
        init_std: float = 0.1,
        sparse: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_users, num_items, **kwargs)
        self.net = MFNet(num_users, num_items, dim, bias, init_std, sparse)
        self.loss, self.l2 = loss, l2

    def compute_loss(self, batch: PairBatch) -> Tensor:
        pos = self.net(batch.users, batch.pos_items[:, None])  # [B, 1]
        neg = self.net(batch.users, batch.neg_items)  # [B, N]
        loss = self.loss(pos, neg)
        if self.l2 > 0:
            emb = (self.net.user(batch.users).square().sum()
                   + self.net.item(batch.pos_items).square().sum()
                   + self.net.item(batch.neg_items).square().sum())
            loss = loss + self.l2 * emb / len(batch)
        return loss

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return lambda items: self.net.score_all(batch.users, items)  # [B, n]
