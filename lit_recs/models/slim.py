"""SLIM: Ning & Karypis, "SLIM: Sparse Linear Methods for Top-N Recommender Systems", ICDM 2011.

    min_W 1/2 ||A - A W||_F^2 + l2/2 ||W||_F^2 + l1 ||W||_1   s.t.  W >= 0, diag(W) = 0
    s(u, .) = a_u W

A is the 0/1 training matrix [U, I]. Two ways to train it, chosen by class_path in the config:

- `SLIM`: monotone FISTA on the Gram matrix A^T A (one [I, I] @ [I, C] product per step, tens of
  steps), optionally `block_size` columns at a time: the columns are independent problems;
- `SLIMGradient`: mini-batches of user rows of A (`UserRowsDataModule`) with any optimizer, and the
  proximal step (soft-threshold by lr * l1 / U, clamp at 0, zero diagonal) after every optimizer
  step, so W is exactly sparse during training. It minimises the same objective divided by U.

Regularisation mapping to scikit-learn's ElasticNet(alpha, l1_ratio, positive=True,
fit_intercept=False) used per column by other frameworks (n = number of users):
    l1 = n * alpha * l1_ratio,   l2 = n * alpha * (1 - l1_ratio)
(RecBole's defaults alpha 0.2, l1_ratio 0.02 on ML-100K: l1 = 3.77, l2 = 184.8).

Deviations from the paper: the paper solves each column by coordinate descent; FISTA solves the same
objective. At evaluation the user's row a_u holds every known interaction (training, plus validation
at test time). W is kept dense [I, I] in this version.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch, RowBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule, RecModule
from lit_recs.models.ease import gram
from lit_recs.nn.slim import SLIMLayer, fista_slim, lipschitz

log = logging.getLogger(__name__)


class _SLIMWeights:
    """What both SLIM trainers share: the layer, its regularisation, scoring, sparsity logging."""

    def _init_slim(self, num_items: int, l1: float, l2: float) -> None:
        if l1 < 0 or l2 < 0:
            raise ValueError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}")
        self.l1, self.l2 = l1, l2
        self.layer = SLIMLayer(num_items)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.log_dict({f"slim/{k}": v for k, v in self.layer.sparsity().items()})

    def item_weights(self) -> Tensor:
        return self.layer.weight.detach().clone().fill_diagonal_(0.0)  # [I, I]

    def score(self, batch: EvalBatch) -> Tensor:
        return self.layer(self.history(batch))  # [B, I] @ [I, I] -> [B, I]


class SLIM(_SLIMWeights, ClosedFormModule):
    """Args:
        l1: weight of ||W||_1 (sparsity); l2: weight of ||W||^2 / 2.
        max_iter / tol: FISTA's step budget; stop when a step moves no weight by more than tol x max|W|.
        block_size: solve this many columns at a time (None: all at once).
    """

    def __init__(self, num_users: int, num_items: int, l1: float = 4.0, l2: float = 200.0,
                 max_iter: int = 200, tol: float = 3e-3, block_size: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        self._init_slim(num_items, l1, l2)
        self.max_iter, self.tol = max_iter, tol
        self.block_size = block_size or num_items
        self.layer.weight.requires_grad_(False)  # fitted in closed form, not by the optimizer
        self.fit_steps: list[int] = []

    def fit_interactions(self, train: Interactions) -> None:
        g = torch.as_tensor(gram(train).astype(np.float32), device=self.layer.weight.device)
        self.fit_steps = []
        bound = lipschitz(g, self.l2)  # shared by every block of columns
        for start in range(0, self.num_items, self.block_size):
            cols = torch.arange(start, min(start + self.block_size, self.num_items),
                                device=g.device)
            w, history = fista_slim(g, self.l2, self.l1, self.max_iter, self.tol, columns=cols,
                                    lipschitz_bound=bound)
            self.layer.weight[:, cols] = w
            self.fit_steps.append(len(history))
        stats = self.layer.sparsity()
        log.info("SLIM: %d FISTA steps per block, %.0f non-zeros (%.1f per item, density %.4f)",
                 max(self.fit_steps), stats["nnz"], stats["nnz_per_item"], stats["density"])



class SLIMGradient(_SLIMWeights, RecModule):
    """SLIM trained by gradient steps on user rows (use with `UserRowsDataModule`).

    loss(batch) = 1/(2B) sum_u ||a_u - a_u W||^2 + l2/(2U) ||W||^2; after each optimizer step
    W <- max(W - lr * l1 / U, 0), diag(W) = 0. Sparsity (nnz, per item, density) is logged.
    """

    def __init__(self, num_users: int, num_items: int, l1: float = 4.0, l2: float = 200.0,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        self._init_slim(num_items, l1, l2)

    def compute_loss(self, batch: RowBatch) -> Tensor:
        residual = batch.rows - self.layer(batch.rows)  # [B, I]
        ridge = 0.5 * self.l2 / self.num_users * self.layer.weight.square().sum()
        return 0.5 * residual.square().sum() / len(batch) + ridge

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.layer.proximal_step(lr * self.l1 / self.num_users)

