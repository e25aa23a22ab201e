"""SLIM: Ning & Karypis, "SLIM: Sparse Linear Methods for Top-N Recommender Systems", ICDM 2011.

    min_W 1/2 ||A - A W||_F^2 + l2/2 ||W||_F^2 + l1 ||W||_1   s.t.  W >= 0, diag(W) = 0
    s(u, .) = a_u W

A is the 0/1 training matrix [U, I]. Two ways to train it, chosen by class_path in the config:

- `SLIM`: FISTA in closed form, W stored sparse. Two solvers of the same objective: monotone FISTA
  on the dense Gram matrix A^T A (one [I, I] @ [I, C] product per step, tens of steps, optionally
  `block_size` columns at a time: the columns are independent problems), or, for large sparse
  catalogues, one small problem per column restricted to the items that can be non-zero
  (safe screening: w_kj > 0 only if G_kj > l1), batched (`lit_recs.nn.slim_screened`);
- `SLIMGradient`: mini-batches of user rows of A (`UserRowsDataModule`) with any optimizer, and the
  proximal step (soft-threshold by lr * l1 / U, clamp at 0, zero diagonal) after every optimizer
  step, so W is exactly sparse during training. It minimises the same objective divided by U.

Regularisation mapping to scikit-learn's ElasticNet(alpha, l1_ratio, positive=True,
fit_intercept=False) used per column by other frameworks (n = number of users):
    l1 = n * alpha * l1_ratio,   l2 = n * alpha * (1 - l1_ratio)
(RecBole's defaults alpha 0.2, l1_ratio 0.02 on ML-100K: l1 = 3.77, l2 = 184.8).

Deviations from the paper: the paper solves each column by coordinate descent; FISTA solves the same
objective. At evaluation the user's row a_u holds every known interaction (training, plus validation
at test time).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch, RowBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule, ItemScorer, RecModule
from lit_recs.nn.item_item import by_column, history_scorer
from lit_recs.nn.slim import SLIMLayer, fista_slim, lipschitz
from lit_recs.nn.slim_screened import (
    candidates,
    check_gram_memory,
    slim_screened,
    sparse_gram,
)
from lit_recs.runtime import check_memory

log = logging.getLogger(__name__)


def check_penalties(l1: float, l2: float) -> None:
    """Both SLIM trainers: the penalties of the objective must be >= 0."""
    if l1 < 0 or l2 < 0:
        raise ValueError(f"l1 and l2 must be >= 0, got l1={l1}, l2={l2}")


def log_sparsity(model: RecModule, stats: dict[str, float]) -> None:
    """Both SLIM trainers log their weights' sparsity after each validation (`slim/nnz`, ...)."""
    model.log_dict({f"slim/{k}": v for k, v in stats.items()})


SOLVERS = ("auto", "gram", "screened")


class SLIM(ClosedFormModule):
    """SLIM solved in closed form by FISTA; W is stored sparse (a COO buffer `weight` [I, I]).

    Args:
        l1: weight of ||W||_1 (sparsity); l2: weight of ||W||^2 / 2.
        max_iter / tol: FISTA's step budget; stop when a step moves no weight by more than tol x max|W|.
        solver: "gram": FISTA on the dense Gram matrix (I^2 floats), `block_size` columns at a time;
            "screened": one small problem per column on its candidate set {k : G_kj > l1} (exact,
            see `lit_recs.nn.slim_screened`), never dense, for large sparse catalogues; "auto":
            screened when its work per step (sum of squared candidate-set sizes) is below 4 I^2.
        block_size: the gram solver's columns per block (None: all at once).
    """

    def __init__(self, num_users: int, num_items: int, l1: float = 4.0, l2: float = 200.0,
                 max_iter: int = 200, tol: float = 3e-3, solver: str = "auto",
                 block_size: int | None = None, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        check_penalties(l1, l2)
        self.l1, self.l2 = l1, l2
        if solver not in SOLVERS:
            raise ValueError(f"SLIM solver must be one of {SOLVERS}, got {solver!r}")
        self.max_iter, self.tol, self.solver = max_iter, tol, solver
        self.block_size = block_size or num_items
        empty = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                                        (num_items, num_items), check_invariants=False)
        self.register_buffer("weight", empty.coalesce())  # [I, I] sparse, W[i, j] >= 0
        self.fit_steps: list[int] = []
        self.fitted_solver = ""

    def fit_interactions(self, train: Interactions) -> None:
        x = train.binary_csr()
        # the Gram's CSR (24 bytes per entry while built) plus the candidate sets (17 more)
        check_gram_memory("SLIM", x, 41, "Use ItemKNN (top-k neighbours) or EASE (dense, 3 x I^2 "
                          "x 4 bytes), raise l1, or drop rare items (data min_item_interactions).")
        g = sparse_gram(x)  # [I, I] float32 CSR
        solver, cand = self.solver, None
        if solver == "auto":
            cand = candidates(g, self.l1)
            solver = "screened" if cand.work() < 4 * self.num_items**2 else "gram"
        if solver == "screened":
            w, self.fit_steps = slim_screened(g, self.l2, self.l1, self.max_iter, self.tol,
                                              cand=cand)
            w = w.tocoo()
            rows, cols, vals = w.row, w.col, w.data
        else:
            rows, cols, vals = self._fit_gram(torch.as_tensor(g.toarray()))
        device = self.weight.device
        indices = torch.as_tensor(np.stack([rows, cols]).astype(np.int64), device=device)
        self.weight = torch.sparse_coo_tensor(indices, torch.as_tensor(vals, device=device),
                                              (self.num_items, self.num_items),
                                              check_invariants=False).coalesce()
        self.fitted_solver = solver
        stats = self.sparsity()
        log.info("SLIM (%s solver): at most %d FISTA steps, %.0f non-zeros (%.1f per item, "
                 "density %.4f)", solver, max(self.fit_steps, default=0), stats["nnz"],
                 stats["nnz_per_item"], stats["density"])

    def _fit_gram(self, g: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FISTA on the dense Gram matrix, block by block; only each block's non-zeros are kept."""
        g = g.to(self.weight.device)
        bound = lipschitz(g, self.l2)  # shared by every block of columns
        parts, self.fit_steps = [], []
        for start in range(0, self.num_items, self.block_size):
            cols = torch.arange(start, min(start + self.block_size, self.num_items),
                                device=g.device)
            w, history = fista_slim(g, self.l2, self.l1, self.max_iter, self.tol, columns=cols,
                                    lipschitz_bound=bound)  # [I, C]
            r, c = torch.nonzero(w > 0, as_tuple=True)
            parts.append((r.cpu().numpy(), (c + start).cpu().numpy(), w[r, c].cpu().numpy()))
            self.fit_steps.append(len(history))
        return tuple(np.concatenate(p) for p in zip(*parts))  # type: ignore[return-value]

    def precompute(self) -> Tensor:
        """W^T as sparse CSR on W's device, once per evaluation pass (`by_column`: row j lists
        what each known item adds to item j's score)."""
        return by_column(self.weight)

    def dense_weight(self) -> Tensor:
        return self.weight.to_dense()  # [I, I]

    def item_weights(self) -> Tensor:
        return self.weight  # sparse [I, I]

    def sparsity(self) -> dict[str, float]:
        nnz = float((self.weight.values() > 0).sum())
        return {"nnz": nnz, "nnz_per_item": nnz / self.num_items,
                "density": nnz / self.num_items**2}

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        log_sparsity(self, self.sparsity())

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return history_scorer(batch.seen, len(batch), self.precomputed())  # a_u W, [B, n]


class SLIMGradient(RecModule):
    """SLIM trained by gradient steps on user rows (use with `UserRowsDataModule`).

    loss(batch) = 1/(2B) sum_u ||a_u - a_u W||^2 + l2/(2U) ||W||^2; after each optimizer step
    W <- max(W - lr * l1 / U, 0), diag(W) = 0. Sparsity (nnz, per item, density) is logged.
    """

    def __init__(self, num_users: int, num_items: int, l1: float = 4.0, l2: float = 200.0,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        check_penalties(l1, l2)
        self.l1, self.l2 = l1, l2
        check_memory("SLIMGradient", 4 * num_items**2 * 4,
                     f"W [I, I] dense with its gradient and two optimizer moments at I = "
                     f"{num_items:,}", "Use SLIM (closed form, sparse W: class_path "
                     "lit_recs.models.SLIM) or ItemKNN.")
        self.net = SLIMLayer(num_items)

    def sparsity(self) -> dict[str, float]:
        return self.net.sparsity()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        log_sparsity(self, self.sparsity())

    def item_weights(self) -> Tensor:
        return self.net.weight.detach().clone().fill_diagonal_(0.0)  # [I, I]

    def score(self, batch: EvalBatch) -> Tensor:
        return self.net(batch.seen_rows(self.num_items))  # [B, I] @ [I, I] -> [B, I]

    def compute_loss(self, batch: RowBatch) -> Tensor:
        residual = batch.rows - self.net(batch.rows)  # [B, I]
        ridge = 0.5 * self.l2 / self.num_users * self.net.weight.square().sum()
        return 0.5 * residual.square().sum() / len(batch) + ridge

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.net.proximal_step(lr * self.l1 / self.num_users)

