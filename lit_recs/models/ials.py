"""iALS: implicit alternating least squares.

Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008;
Rendle, Krichene, Zhang, Koren, "Revisiting the Performance of iALS on Item Recommendation
Benchmarks", RecSys 2022 (the objective and regularisation below).

    L(W, H) = sum_{(u,i) observed} (<w_u, h_i> - 1)^2 + alpha0 sum_{u, i} <w_u, h_i>^2
              + reg (sum_u (|I_u| + alpha0 |I|)^nu |w_u|^2 + sum_i (|U_i| + alpha0 |U|)^nu |h_i|^2)

Each half-step is exact, w_u = (sum_{i in I_u} h_i h_i^T + alpha0 H^T H + reg_u Id)^-1 sum_{i in I_u}
h_i, for all users at once: the per-user Gram matrices are one sparse matmul X [U, I] @ (h_i h_i^T)
[I, D^2], then a batched Cholesky solve, in chunks of `solve_chunk` users (memory ~ chunk D^2).
Items alike with X^T. `s(u, i) = <w_u, h_i>`.

Deviations: none in the objective (Hu et al.'s confidence form c = 1 + alpha on observed pairs is
the same family: alpha0 plays 1 / (1 + alpha)). Training is manual: one epoch = one sweep (users,
then items) on the whole training matrix, which the DataModule hands over (`ModelInputs.train`).
The DataModule's training batches are not used: the model sets the Trainer's (public)
`limit_train_batches` to 1 so that each epoch draws a single batch, sweeps once and validates
(returning -1 from `on_train_batch_start` would end the epoch without validating). With several
processes every process runs the same deterministic sweep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lit_recs.data.batches import EvalBatch
from lit_recs.data.inputs import ModelInputs
from lit_recs.models.base import RecModule


def row_block(x: Tensor, start: int, stop: int) -> Tensor:
    """Rows [start, stop) of a sparse CSR matrix, as a sparse CSR matrix."""
    crow = x.crow_indices()
    lo, hi = int(crow[start]), int(crow[stop])
    return torch.sparse_csr_tensor(crow[start:stop + 1] - lo, x.col_indices()[lo:hi],
                                   x.values()[lo:hi], (stop - start, x.shape[1]),
                                   check_invariants=False)


def solve_side(x: Tensor, other: Tensor, alpha0: float, reg: Tensor, chunk: int) -> Tensor:
    """One exact half-step for the rows of x (sparse CSR [R, C], 0/1) against fixed factors
    other [C, D]: row r gets (sum_{c in x_r} o_c o_c^T + alpha0 O^T O + reg_r Id)^-1 sum_{c in x_r} o_c.
    Returns [R, D]; memory ~ chunk D^2."""
    d = other.shape[1]
    gram = alpha0 * (other.T @ other)  # [D, D]
    outer = (other[:, :, None] * other[:, None, :]).reshape(len(other), d * d)  # [C, D^2]
    eye = torch.eye(d, dtype=other.dtype, device=other.device)
    out = torch.empty(x.shape[0], d, dtype=other.dtype, device=other.device)
    for start in range(0, x.shape[0], chunk):
        stop = min(start + chunk, x.shape[0])
        rows = row_block(x, start, stop)  # [c, C]
        a = (rows @ outer).view(-1, d, d) + gram + reg[start:stop, None, None] * eye  # [c, D, D]
        b = rows @ other  # [c, D]
        out[start:stop] = torch.cholesky_solve(b[:, :, None], torch.linalg.cholesky(a))[:, :, 0]
    return out


class IALSNet(nn.Module):
    """User and item factors (buffers: they are solved for, not trained by gradients) and the
    exact alternating solves of the objective in the module docstring."""

    def __init__(self, num_users: int, num_items: int, dim: int = 64, alpha0: float = 0.1,
                 reg: float = 0.01, nu: float = 1.0, init_std: float = 0.1,
                 solve_chunk: int = 4096) -> None:
        super().__init__()
        self.alpha0, self.reg, self.nu, self.solve_chunk = alpha0, reg, nu, solve_chunk
        scale = init_std / dim**0.5  # the global seed (seed_everything) draws the start
        self.register_buffer("users", torch.randn(num_users, dim) * scale)  # [U, D]
        self.register_buffer("items", torch.randn(num_items, dim) * scale)  # [I, D]

    def row_reg(self, x: Tensor, other_count: int) -> Tensor:
        """reg (count_r + alpha0 * other_count)^nu of every row of x (CSR [R, C]) [R]."""
        counts = (x.crow_indices()[1:] - x.crow_indices()[:-1]).to(self.users.dtype)  # [R]
        return self.reg * (counts + self.alpha0 * other_count) ** self.nu  # [R]

    def sweep(self, x: Tensor, xt: Tensor) -> None:
        """One alternation on the 0/1 matrix x (CSR [U, I]) and its transpose xt: all users
        given the items, then all items given the users."""
        num_users, num_items = len(self.users), len(self.items)
        self.users.copy_(solve_side(x, self.items, self.alpha0, self.row_reg(x, num_items),
                                    self.solve_chunk))
        self.items.copy_(solve_side(xt, self.users, self.alpha0, self.row_reg(xt, num_users),
                                    self.solve_chunk))

    def objective(self, x: Tensor, xt: Tensor) -> Tensor:
        """L(W, H) of the current factors (for monitoring; O(nnz D + (U + I) D^2))."""
        rows = torch.repeat_interleave(torch.arange(x.shape[0], device=x.device),
                                       x.crow_indices()[1:] - x.crow_indices()[:-1])  # [nnz]
        observed = (self.users[rows] * self.items[x.col_indices()]).sum(1)  # [nnz]
        everything = ((self.users.T @ self.users) * (self.items.T @ self.items)).sum()
        reg_u = self.row_reg(x, len(self.items)) @ self.users.square().sum(1)
        reg_i = self.row_reg(xt, len(self.users)) @ self.items.square().sum(1)
        return (observed - 1).square().sum() + self.alpha0 * everything + reg_u + reg_i

    def forward(self, users: Tensor) -> Tensor:
        """users [B] -> scores of every item [B, I]."""
        return self.users[users] @ self.items.T


class IALS(RecModule):
    """iALS with exact alternating solves (see the module docstring).

    Args:
        dim: D, the size of the user and item factors.
        alpha0: weight of the unobserved pairs (all pairs' squared scores).
        reg: lambda, the L2 weight; scaled per row by (count + alpha0 * catalogue)^nu.
        nu: the frequency exponent of the regularisation (0: plain L2, 1: Rendle et al.'s choice).
        init_std: factors start ~ N(0, (init_std / sqrt(D))^2).
        solve_chunk: rows solved together (memory of the batched Gram matrices: chunk D^2 floats).
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 64, alpha0: float = 0.1,
                 reg: float = 0.01, nu: float = 1.0, init_std: float = 0.1,
                 solve_chunk: int = 4096, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if dim < 1 or alpha0 < 0 or reg <= 0 or solve_chunk < 1:
            raise ValueError(f"iALS needs dim >= 1, alpha0 >= 0, reg > 0 and solve_chunk >= 1; got "
                             f"dim={dim}, alpha0={alpha0}, reg={reg}, solve_chunk={solve_chunk}")
        self.automatic_optimization = False
        self.net = IALSNet(num_users, num_items, dim, alpha0, reg, nu, init_std, solve_chunk)
        self._x: tuple[Tensor, Tensor] | None = None  # training matrix (CSR) and its transpose

    def attach_data(self, inputs: ModelInputs) -> None:
        super().attach_data(inputs)
        if inputs.train is not None:
            self.set_train_matrix(inputs.train.binary_csr())

    def set_train_matrix(self, csr: Any) -> None:
        """The 0/1 training matrix (scipy CSR [U, I]; duplicates count once) the sweeps fit."""
        csr = csr.astype(np.float32)
        csr.data[:] = 1.0
        self._x = tuple(_to_torch(m, self.net.users.device) for m in (csr, csr.T.tocsr()))

    def on_fit_start(self) -> None:
        if self._x is None:
            raise ValueError("IALS is fitted from a lit_recs DataModule's training split")
        self._x = tuple(m.to(self.device) for m in self._x)

    def sweep(self) -> None:
        self.net.sweep(*self._x)

    def loss(self) -> Tensor:
        return self.net.objective(*self._x)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":
            self.trainer.limit_train_batches = 1  # one sweep per epoch, then validation

    def training_step(self, batch: Any, batch_idx: int) -> None:  # type: ignore[override]
        with torch.no_grad():
            self.sweep()
            self.log("train/loss", self.loss(), prog_bar=True, batch_size=1)
        self.optimizers().step()  # no parameters: counts the sweep as a step (global_step), which
        # checkpointing needs to save a new best

    def score(self, batch: EvalBatch) -> Tensor:
        return self.net(batch.users)  # [B, I]


def _to_torch(m: Any, device: torch.device) -> Tensor:
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).long(),
                                   torch.from_numpy(m.indices).long(),
                                   torch.from_numpy(m.data), m.shape, check_invariants=False
                                   ).to(device)
