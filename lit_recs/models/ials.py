"""iALS: implicit alternating least squares.

Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008;
Rendle, Krichene, Zhang, Koren, "Revisiting the Performance of iALS on Item Recommendation
Benchmarks", RecSys 2022 (the objective and regularisation below).

    L(W, H) = sum_{(u,i) observed} (<w_u, h_i> - 1)^2 + alpha0 sum_{u, i} <w_u, h_i>^2
              + reg (sum_u (|I_u| + alpha0 |I|)^nu |w_u|^2 + sum_i (|U_i| + alpha0 |U|)^nu |h_i|^2)

A half-step fixes H and solves every user's normal equations A_u w_u = b_u,

    A_u = sum_{i in I_u} h_i h_i^T + alpha0 H^T H + reg_u Id,   b_u = sum_{i in I_u} h_i,

for all users at once (items alike with X^T). `s(u, i) = <w_u, h_i>`. Two solvers:
- "cg" (the default; Takacs, Pilaszy, Tikk, RecSys 2011; implicit's `use_cg`): `cg_steps`
  conjugate-gradient steps per row, started from the current factors. A_u is never formed:
  A_u p = sum_{i in I_u} h_i <h_i, p> + alpha0 H^T H p + reg_u p, the sum being one sampled
  dense-dense product (the scores <p_u, h_i> at X's non-zeros) and one sparse product (those scores
  times H), vectorised over all rows: O(nnz D + (U + I) D^2) per step, memory O(nnz + (U + I) D).
  The last step needs only <p, A p> (the sum of the squared scores, no sparse product), and the
  item half-step starts from the scores the user half-step tracked: per sweep, 2 `cg_steps` + 1
  sampled and 2 `cg_steps` sparse products. X is kept with its items in descending order of
  popularity, so that the factors these products gather most sit together in the cache.
- "cholesky": the exact solve. The per-user Gram matrices are one sparse matmul X [U, I] @
  (h_i h_i^T) [I, D^2], then a batched Cholesky solve, in chunks of `solve_chunk` users (memory ~
  chunk D^2): O(nnz D^2 + (U + I) D^3) per half-step.
With the same start both reach the same objective (tests/test_ials.py); CG with D steps is exact.

Deviations: none in the objective. Hu et al.'s and implicit's form, weight c on an observed pair
(c = 1 + alpha in the paper, c = alpha in implicit 0.7) and 1 on the others with plain L2 reg, is
the same family after rescaling the scores: alpha0 = 1 / (c - 1), reg / c in place of reg, nu = 0
(derivation and a numerical check: experiments/benchmarks/ials.py). Training is manual: one
epoch = one sweep (users, then items) on the whole training matrix, which the DataModule hands over
(`ModelInputs.train`).
The DataModule's training batches are not used: the model sets the Trainer's (public)
`limit_train_batches` to 1 so that each epoch draws a single batch, sweeps once and validates
(returning -1 from `on_train_batch_start` would end the epoch without validating). With several
processes every process runs the same deterministic sweep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from lit_recs.data.batches import EvalBatch
from lit_recs.data.inputs import ModelInputs
from lit_recs.models.base import ItemScorer, RecModule


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
    Returns [R, D]; memory ~ chunk D^2 (plus the [C, D^2] outer products)."""
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


def nnz_blocks(x: Tensor, max_nnz: int) -> list[tuple[int, int]]:
    """Consecutive row ranges [start, stop) of the CSR x holding at most max_nnz non-zeros each
    (a single row with more forms a block of its own); at least one row per block."""
    crow = x.crow_indices().cpu().numpy()
    bounds, start = [], 0
    while start < x.shape[0]:
        stop = int(np.searchsorted(crow, crow[start] + max_nnz, side="right")) - 1  # last fit
        stop = min(max(stop, start + 1), x.shape[0])
        bounds.append((start, stop))
        start = stop
    return bounds


def solve_side_cg(x: Tensor, other: Tensor, current: Tensor, alpha0: float, reg: Tensor,
                  steps: int, max_nnz: int, scores: Tensor | None = None,
                  track_scores: bool = False) -> tuple[Tensor, Tensor | None]:
    """`steps` conjugate-gradient iterations on every row's normal equations of the half-step
    solved exactly by `solve_side`, A_r w = b_r with A_r = sum_{c in x_r} o_c o_c^T + alpha0 O^T O
    + reg_r Id and b_r = sum_{c in x_r} o_c, started from the current factors (current [R, D]).
    A_r is never formed: A_r p = sum_{c in x_r} o_c <o_c, p> + alpha0 O^T O p + reg_r p, the sum
    over the row's items being one sampled dense-dense product (the scores <p_r, o_c> at x's
    non-zeros: `torch.sparse.sampled_addmm`) and one sparse x dense product (those scores @ O),
    for all rows at once: O(nnz D + R D^2) per step, no [nnz, D] or [R, D, D] intermediates.
    The last step needs only <p, A p> = sum_{c in x_r} <p_r, o_c>^2 + ..., so it skips the sparse
    product. scores [nnz] (optional): <current_r, o_c> at x's non-zeros in x's order, which saves
    the sampled product of the first residual; track_scores: return them for the solution (each
    step adds a_r <p_r, o_c>, already computed). Per half-step: `steps` sparse products and
    `steps` + 1 sampled ones (`steps` when scores are given).
    Rows go in blocks of at most max_nnz non-zeros (memory ~ 4 max_nnz + 6 block rows x D).
    Returns the solution [R, D] and, if tracked, its scores [nnz]."""
    gram = alpha0 * (other.T @ other)  # [D, D]
    other_t = other.T  # [D, C]
    out = torch.empty_like(current)
    crow_all = x.crow_indices()
    new_scores = torch.empty(x.values().shape, dtype=other.dtype, device=other.device) \
        if track_scores else None  # [nnz]
    for start, stop in nnz_blocks(x, max_nnz):
        rows = row_block(x, start, stop)  # [c, C], values 1
        reg_c = reg[start:stop, None]  # [c, 1]
        crow = rows.crow_indices()
        counts = crow[1:] - crow[:-1]  # [c]
        lo, hi = int(crow_all[start]), int(crow_all[stop])
        w = current[start:stop].clone()  # [c, D]
        # residual b - A w = sum_c o_c (1 - <w, o_c>) - alpha0 G w - reg w
        if scores is None:
            misses = torch.sparse.sampled_addmm(rows, w, other_t, beta=1.0, alpha=-1.0)  # 1 - s
        else:
            misses = torch.sparse_csr_tensor(crow, rows.col_indices(), 1.0 - scores[lo:hi],
                                             rows.shape, check_invariants=False)
        s = 1.0 - misses.values() if track_scores else None  # [nnz_c] <w_r, o_c>
        r = misses @ other  # [c, D]
        r.addmm_(w, gram, alpha=-1.0).addcmul_(reg_c, w, value=-1.0)
        p = r.clone()
        rs = torch.linalg.vecdot(r, r)[:, None]  # [c, 1]
        # pap = 0 only when p = 0 (A_r is positive definite), and then rs = <p, r> = 0: the
        # clamps keep a row that has converged exactly at 0 / tiny = 0 instead of NaN.
        tiny = torch.finfo(r.dtype).tiny
        for step in range(steps):
            at_p = torch.sparse.sampled_addmm(rows, p, other_t, beta=0.0)  # <p_r, o_c>, [c, C]
            pg = p @ gram  # [c, D]
            if step == steps - 1:  # only <p, A p> is needed, and the scores give it without the
                # sparse product: sum_{c in x_r} <p_r, o_c>^2 + <p, alpha0 G p> + reg |p|^2
                pap = (torch.segment_reduce(at_p.values().square(), "sum", offsets=crow)
                       + torch.linalg.vecdot(p, pg) + reg_c[:, 0] * torch.linalg.vecdot(p, p))
                a = rs / pap[:, None].clamp_min(tiny)  # [c, 1]
            else:
                ap = (at_p @ other).add_(pg).addcmul_(reg_c, p)  # A_r p_r, [c, D]
                a = rs / torch.linalg.vecdot(p, ap)[:, None].clamp_min(tiny)  # [c, 1]
            w.addcmul_(a, p)
            if s is not None:
                s.addcmul_(torch.repeat_interleave(a[:, 0], counts), at_p.values())
            if step == steps - 1:
                break
            r.addcmul_(a, ap, value=-1.0)
            rs_new = torch.linalg.vecdot(r, r)[:, None]
            p = torch.addcmul(r, rs_new / rs.clamp_min(tiny), p)
            rs = rs_new
        out[start:stop] = w
        if new_scores is not None:
            new_scores[lo:hi] = s
    return out, new_scores


SOLVERS = ("cg", "cholesky")


class IALSNet(nn.Module):
    """User and item factors (buffers: they are solved for, not trained by gradients) and the
    alternating solves of the objective in the module docstring: `cg_steps` conjugate-gradient
    steps per row from the current factors (solver "cg") or the exact solve ("cholesky"); "cg"
    works on row blocks of at most `cg_block_nnz` non-zeros."""

    def __init__(self, num_users: int, num_items: int, dim: int = 64, alpha0: float = 1.0,
                 reg: float = 0.001, nu: float = 1.0, init_std: float = 0.1,
                 solve_chunk: int = 4096, solver: str = "cg", cg_steps: int = 3,
                 cg_block_nnz: int = 1 << 22) -> None:
        super().__init__()
        self.alpha0, self.reg, self.nu, self.solve_chunk = alpha0, reg, nu, solve_chunk
        self.solver, self.cg_steps, self.cg_block_nnz = solver, cg_steps, cg_block_nnz
        scale = init_std / dim**0.5  # the global seed (seed_everything) draws the start
        self.register_buffer("users", torch.randn(num_users, dim) * scale)  # [U, D]
        self.register_buffer("items", torch.randn(num_items, dim) * scale)  # [I, D]

    def row_reg(self, x: Tensor, other_count: int) -> Tensor:
        """reg (count_r + alpha0 * other_count)^nu of every row of x (CSR [R, C]) [R]."""
        counts = (x.crow_indices()[1:] - x.crow_indices()[:-1]).to(self.users.dtype)  # [R]
        return self.reg * (counts + self.alpha0 * other_count) ** self.nu  # [R]

    def sweep(self, x: Tensor, xt: Tensor, item_order: Tensor | None = None,
              to_xt: Tensor | None = None) -> None:
        """One alternation on the 0/1 matrix x (CSR [U, I]) and its transpose xt: all users
        given the items, then all items given the users. item_order [I] (optional): x's column j
        (xt's row j) is item item_order[j] (`IALS` orders the items by popularity: the sparse
        products then gather the popular items' factors from one contiguous, cached block).
        to_xt [nnz] (optional, "cg"): xt's k-th non-zero is x's to_xt[k]-th; the item half-step
        then reads the scores the user half-step tracked instead of computing them again."""
        num_users, num_items = len(self.users), len(self.items)
        items = self.items if item_order is None else self.items[item_order]  # [I, D], x's order
        reg_u, reg_i = self.row_reg(x, num_items), self.row_reg(xt, num_users)
        if self.solver == "cholesky":
            self.users.copy_(solve_side(x, items, self.alpha0, reg_u, self.solve_chunk))
            items = solve_side(xt, self.users, self.alpha0, reg_i, self.solve_chunk)  # [I, D]
        else:
            users, scores = solve_side_cg(x, items, self.users, self.alpha0, reg_u, self.cg_steps,
                                          self.cg_block_nnz, track_scores=to_xt is not None)
            self.users.copy_(users)
            items, _ = solve_side_cg(xt, self.users, items, self.alpha0, reg_i, self.cg_steps,
                                     self.cg_block_nnz,
                                     scores=None if to_xt is None else scores[to_xt])
        if item_order is None:
            self.items.copy_(items)
        else:
            self.items[item_order] = items

    def objective(self, x: Tensor, xt: Tensor, item_order: Tensor | None = None) -> Tensor:
        """L(W, H) of the current factors (for monitoring; O(nnz D + (U + I) D^2)); x, xt and
        item_order as in `sweep`."""
        items = self.items if item_order is None else self.items[item_order]  # [I, D], x's order
        # <w_u, h_i> at x's non-zeros, no [nnz, D] intermediates (20M x 64 floats = 5 GB each)
        observed = torch.sparse.sampled_addmm(x, self.users, items.T, beta=0.0).values()  # [nnz]
        everything = ((self.users.T @ self.users) * (items.T @ items)).sum()
        reg_u = self.row_reg(x, len(items)) @ self.users.square().sum(1)
        reg_i = self.row_reg(xt, len(self.users)) @ items.square().sum(1)
        return (observed - 1).square().sum() + self.alpha0 * everything + reg_u + reg_i

    def forward(self, users: Tensor, items: slice = slice(None)) -> Tensor:
        """users [B] -> scores of every item [B, I] (or of the slice `items`, [B, n])."""
        return self.users[users] @ self.items[items].T


class IALS(RecModule):
    """iALS by alternating solves (see the module docstring).

    Args:
        dim: D, the size of the user and item factors.
        alpha0: weight of the unobserved pairs (all pairs' squared scores).
        reg: lambda, the L2 weight; scaled per row by (count + alpha0 * catalogue)^nu.
            alpha0 1.0 and reg 0.001 (with nu 1) were the validation picks on ML-100K `loo` and on
            a 26,744-item synthetic catalogue (experiments/ials_scale); the earlier defaults
            (0.1, 0.01) validated lower on both.
        nu: the frequency exponent of the regularisation (0: plain L2, 1: Rendle et al.'s choice).
        init_std: factors start ~ N(0, (init_std / sqrt(D))^2).
        solve_chunk: rows solved together by "cholesky" (memory of the batched Gram matrices:
            chunk D^2 floats).
        solver: "cg" (conjugate gradient from the current factors, O(nnz D + (U + I) D^2) per
            step) or "cholesky" (exact half-steps, O(nnz D^2 + (U + I) D^3)).
        cg_steps: conjugate-gradient steps per row and half-step (implicit's default: 3).
        cg_block_nnz: "cg" solves rows in blocks of at most this many training interactions.
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 64, alpha0: float = 1.0,
                 reg: float = 0.001, nu: float = 1.0, init_std: float = 0.1,
                 solve_chunk: int = 4096, solver: str = "cg", cg_steps: int = 3,
                 cg_block_nnz: int = 1 << 22, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if (dim < 1 or alpha0 < 0 or reg <= 0 or solve_chunk < 1 or solver not in SOLVERS
                or cg_steps < 1 or cg_block_nnz < 1):
            raise ValueError(f"iALS needs dim >= 1, alpha0 >= 0, reg > 0, solve_chunk >= 1, solver "
                             f"in {SOLVERS}, cg_steps >= 1 and cg_block_nnz >= 1; got dim={dim}, "
                             f"alpha0={alpha0}, reg={reg}, solve_chunk={solve_chunk}, "
                             f"solver={solver!r}, cg_steps={cg_steps}, cg_block_nnz={cg_block_nnz}")
        self.automatic_optimization = False
        self.net = IALSNet(num_users, num_items, dim, alpha0, reg, nu, init_std, solve_chunk,
                           solver, cg_steps, cg_block_nnz)
        # the training matrix (CSR [U, I], items by popularity), its transpose, item_order, to_xt
        self._x: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def attach_data(self, inputs: ModelInputs) -> None:
        super().attach_data(inputs)
        if inputs.train is not None:
            self.set_train_matrix(inputs.train.binary_csr())

    def set_train_matrix(self, csr: Any) -> None:
        """The 0/1 training matrix (scipy CSR [U, I]; duplicates count once) the sweeps fit.
        Kept with its items in descending order of popularity (see `IALSNet.sweep`)."""
        csr = csr.astype(np.float32)
        csr.sum_duplicates()
        csr.data[:] = 1.0
        popularity = np.bincount(csr.indices, minlength=csr.shape[1])  # [I]
        order = np.argsort(-popularity, kind="stable")  # [I] most popular first
        csr = csr[:, order].tocsr()
        csr.sort_indices()
        positions = sp.csr_matrix((np.arange(csr.nnz), csr.indices, csr.indptr), csr.shape)
        to_xt = positions.T.tocsr().data  # [nnz] x's position of each of x^T's non-zeros
        device = self.net.users.device
        self._x = (*(_to_torch(m, device) for m in (csr, csr.T.tocsr())),
                   torch.from_numpy(order).to(device), torch.from_numpy(to_xt).long().to(device))

    def on_fit_start(self) -> None:
        if self._x is None:
            raise ValueError("IALS is fitted from a lit_recs DataModule's training split")
        self._x = tuple(m.to(self.device) for m in self._x)

    def sweep(self) -> None:
        self.net.sweep(*self._x)

    def loss(self) -> Tensor:
        return self.net.objective(*self._x[:3])

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

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return lambda items: self.net(batch.users, items)  # [B, n]


def _to_torch(m: Any, device: torch.device) -> Tensor:
    return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).long(),
                                   torch.from_numpy(m.indices).long(),
                                   torch.from_numpy(m.data), m.shape, check_invariants=False
                                   ).to(device)
