"""SLIM's maths (Ning & Karypis, ICDM 2011), in plain torch.

    min_W  f(W) = 1/2 ||A - A W||_F^2 + l2/2 ||W||_F^2 + l1 ||W||_1    s.t.  W >= 0, diag(W) = 0

With G = A^T A [I, I] the smooth part and its gradient need only G:
    1/2 ||A - A W||^2 = 1/2 tr(W^T G W) - tr(G W) + 1/2 tr(G),      grad = G W - G + l2 W
and the proximal operator of l1 ||.||_1 + [W >= 0] + [diag(W) = 0] with step s is
    prox(V) = max(V - s l1, 0) with the diagonal set to 0.
Columns of W are independent problems, so any block of columns can be solved alone.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


def times_gram(wt: Tensor, gram: Tensor, sparse_below: float = 0.1) -> Tensor:
    """W^T G [C, I] for W^T [C, I] and a symmetric G [I, I] (so W^T G = (G W)^T); a sparse product
    (nnz(W) * I work) when W is mostly zeros on the CPU."""
    if wt.device.type != "cpu" or torch.count_nonzero(wt) >= sparse_below * wt.numel():
        return wt @ gram  # [C, I]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(wt.to_sparse_csr(), gram)  # [C, I]


def slim_objective(gram: Tensor, w: Tensor, l2: float, l1: float,
                   columns: Tensor | None = None) -> float:
    """f(W) for W = the block of columns `columns` (all by default), from the Gram matrix."""
    cols = torch.arange(len(gram), device=gram.device) if columns is None else columns
    g_cols = gram[:, cols]  # [I, C]
    gw = gram @ w  # [I, C]
    smooth = 0.5 * (w * gw).sum() - (g_cols * w).sum() + 0.5 * torch.diagonal(gram)[cols].sum()
    return float(smooth + 0.5 * l2 * w.square().sum() + l1 * w.abs().sum())


def lipschitz(gram: Tensor, l2: float, iters: int = 20) -> float:
    """Upper bound of the largest eigenvalue of G + l2 I for G >= 0 (a Gram matrix of 0/1 rows):
    power iterations, then the Collatz-Wielandt bound max_i (G v)_i / v_i >= lambda_max."""
    v = torch.ones(len(gram), 1, dtype=gram.dtype, device=gram.device)
    for _ in range(iters):
        v = gram @ v + 1e-12  # [I, 1], > 0
        v = v / v.max()
    return float(((gram @ v) / v).max()) + l2


def fista_slim(
    gram: Tensor,
    l2: float,
    l1: float,
    max_iter: int = 200,
    tol: float = 1e-7,
    columns: Tensor | None = None,
    lipschitz_bound: float | None = None,
) -> tuple[Tensor, list[float]]:
    """Monotone FISTA (Beck & Teboulle 2009) for SLIM, with gradient-based adaptive restart
    (O'Donoghue & Candes 2015). Returns W [I, C] and f after each step.

    One product with G per iteration: G @ z of the new proximal point; the products of the
    momentum points are linear combinations of stored ones. Stops when the proximal step moves
    no entry by more than `tol` times the largest entry of W (the gradient mapping, which vanishes
    exactly at the optimum), or after `max_iter` steps. The history never increases.
    `lipschitz_bound` (of G + l2 I) is estimated when not given; pass it when solving many blocks.
    Works on W^T [C, I] (rows are columns of W: contiguous for the sparse product).
    """
    n = len(gram)
    cols = torch.arange(n, device=gram.device) if columns is None else columns.to(gram.device)
    diag = (torch.arange(len(cols), device=gram.device), cols)  # W[cols[c], c] = 0
    g_t = gram[cols]  # [C, I] = G[:, cols]^T (G symmetric)
    const = 0.5 * float(torch.diagonal(gram)[cols].sum())
    step = 1.0 / (lipschitz_bound or lipschitz(gram, l2))
    target = (g_t - l1) * step  # [C, I]: the constant part of the proximal-gradient step

    def f(w: Tensor, gw: Tensor) -> float:  # sum w * (1/2 G w - g + l2/2 w + l1) + const
        nz = w.nonzero(as_tuple=True)  # w >= 0 and mostly zeros: only its support counts
        v = w[nz]
        return float((v * (0.5 * gw[nz] - g_t[nz] + 0.5 * l2 * v + l1)).sum()) + const

    x = torch.zeros_like(g_t)  # [C, I] current iterate (W^T)
    gx = torch.zeros_like(g_t)  # x @ G
    x_prev, gx_prev, y, gy = x, gx, x, gx
    t, fx = 1.0, const
    history: list[float] = []
    for _ in range(max_iter):
        z = torch.add(target, y, alpha=1.0 - step * l2).sub_(gy, alpha=step).clamp_(min=0.0)
        z[diag] = 0.0  # z = prox(y - step * grad(y))
        gz = times_gram(z, gram)  # [C, I]
        fz = f(z, gz)
        moved_by = torch.sub(z, y)  # [C, I] the gradient mapping times the step
        moved = float(moved_by.abs().max())
        uphill = float(torch.dot(moved_by.view(-1), torch.sub(z, x).view(-1))) < 0
        x_prev, gx_prev = x, gx
        if fz <= fx:
            x, gx, fx = z, gz, fz
        history.append(fx)
        if uphill:  # (y - z) . (z - x) > 0: the momentum points uphill, restart it
            t = 1.0
        t_next = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        a, b = t / t_next, (t - 1.0) / t_next
        # y = x + a (z - x) + b (x - x_prev), and G y from the stored products, without a product
        y = torch.mul(x, 1.0 - a + b).add_(z, alpha=a).sub_(x_prev, alpha=b)
        gy = torch.mul(gx, 1.0 - a + b).add_(gz, alpha=a).sub_(gx_prev, alpha=b)
        t = t_next
        if moved <= tol * max(float(x.max()), 1e-12):
            break
    return x.T, history


class SLIMLayer(nn.Module):
    """W [I, I] with a zero diagonal and non-negative entries; `forward(rows) = rows @ W`.

    Trained by gradient steps, call `proximal_step(lr * l1)` after each optimizer step: it
    soft-thresholds, clamps at 0 and zeroes the diagonal, so W is exactly sparse during training.
    The diagonal's gradient is zeroed as it is computed (optimizer moments never see it).
    """

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_items, num_items))  # [I, I]
        self.weight.register_hook(lambda g: g.clone().fill_diagonal_(0.0))

    def forward(self, rows: Tensor) -> Tensor:
        """rows [B, I] (a user's interactions) -> rows @ W with diag(W) read as 0, [B, I]."""
        return rows @ self.weight - rows * torch.diagonal(self.weight)[None, :]

    @torch.no_grad()
    def proximal_step(self, threshold: float) -> None:
        self.weight.sub_(threshold).clamp_(min=0.0).fill_diagonal_(0.0)

    @torch.no_grad()
    def sparsity(self) -> dict[str, float]:
        nnz_per_col = (self.weight > 0).sum(0).float()  # [I]
        return {"nnz": float(nnz_per_col.sum()), "nnz_per_item": float(nnz_per_col.mean()),
                "density": float(nnz_per_col.sum()) / self.weight.numel()}
