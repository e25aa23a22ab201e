"""SLIM solved column by column on screened candidate sets: exact, sparse, for large catalogues.

Safe screening. A and W are non-negative, so G = A^T A >= 0 and (G W)_kj >= 0. At the optimum an
entry w_kj > 0 satisfies G_kj = l1 + (G W)_kj + l2 w_kj > l1 (KKT), hence

    w_kj > 0  only if  G_kj > l1        (k != j),

and column j of W is the solution of SLIM's column problem restricted to its candidate set
S_j = {k != j : G_kj > l1}; every other entry is exactly 0. Each restricted problem is small:

    min_x 1/2 x^T (G_SS + l2 I) x - (G_Sj - l1)^T x,   x >= 0        (x = W[S_j, j])

and the columns are solved in chunks of similar |S_j| by one batched FISTA ([C, n, n] sub-Gram
matrices, zero-padded). The work per step is sum_j |S_j|^2, which for sparse logs (most co-counts
below l1) is far below the I^2 of the dense-Gram solver in `lit_recs.nn.slim`; W is never dense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from lit_recs.runtime import check_memory


@dataclass
class Candidates:
    """Candidate sets as a CSC pattern: column j's rows are rows[indptr[j]:indptr[j + 1]]."""

    indptr: np.ndarray  # [I + 1] int64
    rows: np.ndarray  # [nnz] int64
    targets: np.ndarray  # [nnz] float32: G_kj at each candidate

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.indptr)  # [I]

    def work(self) -> int:
        """sum_j |S_j|^2: multiply-adds of one batched FISTA step over all columns."""
        return int(np.square(self.sizes.astype(np.int64)).sum())


def gram_nnz_bound(a: sp.spmatrix) -> int:
    """An upper bound on the non-zeros of A^T A for the 0/1 matrix A [U, I]: min(I^2, the number
    of (item, item) pairs the users' rows produce, sum_u n_u^2)."""
    per_user = np.diff(sp.csr_matrix(a).indptr).astype(np.int64)  # [U]
    return int(min(a.shape[1] ** 2, int(np.square(per_user).sum())))


def check_gram_memory(model: str, a: sp.spmatrix, bytes_per_entry: int, instead: str) -> None:
    """Refuse before building the sparse Gram matrix when `bytes_per_entry` x its non-zero bound
    exceeds the memory available (scipy's product and its CSR copy take 24 bytes per entry)."""
    bound = gram_nnz_bound(a)
    check_memory(model, bound * bytes_per_entry, f"the sparse item-item Gram matrix, up to "
                 f"{bound:,} non-zeros at {bytes_per_entry} bytes each while it is built and used",
                 instead)


def sparse_gram(a: sp.spmatrix) -> sp.csr_matrix:
    """A^T A of the 0/1 matrix A [U, I] as float32 CSR with sorted indices."""
    a = sp.csr_matrix(a, dtype=np.float32)
    g = (a.T.tocsr() @ a).tocsr()  # CSR x CSR: the product is CSR, no converted copy of it
    g.sort_indices()
    return g


def candidates(g: sp.csr_matrix, l1: float) -> Candidates:
    """S_j = {k != j : G_kj > l1} for every column j (G symmetric, so rows of G serve as columns)."""
    g = g.tocsr()
    keep = g.data > l1
    rows = np.repeat(np.arange(g.shape[0]), np.diff(g.indptr))
    keep &= rows != g.indices  # no diagonal
    # G is symmetric: row k of G lists the columns j with G_kj > l1, i.e. the CSR of G^T = CSC of G
    counts = np.bincount(rows[keep], minlength=g.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return Candidates(indptr, g.indices[keep].astype(np.int64), g.data[keep].astype(np.float32))


def chunks(sizes: np.ndarray, max_entries: int, max_rows: int) -> list[np.ndarray]:
    """Columns with candidates, sorted by |S_j|, grouped so that C * n_max^2 <= max_entries and
    sum |S_j| <= max_rows (a column over either limit is a chunk of its own)."""
    order = np.argsort(sizes, kind="stable")
    order = order[sizes[order] > 0]
    out: list[np.ndarray] = []
    start, rows = 0, 0
    for pos, j in enumerate(order):  # sizes increase along `order`, so n_max is the newest size
        n = int(sizes[j])
        if pos > start and ((pos - start + 1) * n * n > max_entries or rows + n > max_rows):
            out.append(order[start:pos])
            start, rows = pos, 0
        rows += n
    if start < len(order):
        out.append(order[start:])
    return out


def batched_lipschitz(h: Tensor, l2: float, iters: int = 8) -> Tensor:
    """Upper bound of the largest eigenvalue of each H_c + l2 I, H [C, n, n] >= 0 -> [C, 1].

    A few power iterations from the ones vector, then the Collatz-Wielandt bound: for a
    non-negative matrix and any v > 0, lambda_max <= max_i (H v)_i / v_i (a guaranteed bound,
    tight once v is near the Perron vector). Zero rows (padding) are left out of the max."""
    v = torch.ones(h.shape[0], h.shape[1], 1, dtype=h.dtype, device=h.device)  # [C, n, 1]
    for _ in range(iters):
        v = torch.bmm(h, v) + 1e-12  # stays > 0 on the support of H
        v = v / v.amax(dim=1, keepdim=True)
    ratio = torch.bmm(h, v) / v  # [C, n, 1]
    return ratio.amax(dim=1) + l2  # [C, 1]


def fista_columns(h: Tensor, c: Tensor, l2: float, max_iter: int, tol: float
                  ) -> tuple[Tensor, int]:
    """argmin_x 1/2 x^T (H + l2 I) x - c^T x + [x >= 0] for each row of c, batched.

    h [C, n, n], c [C, n] (the l1 already subtracted: c = G_Sj - l1). FISTA with a step per
    column and gradient-based adaptive restart (O'Donoghue & Candes 2015); stops when no proximal
    step moves an entry by more than tol x max(x), or after max_iter steps. Returns x [C, n] and
    the number of steps.
    """
    step = 1.0 / batched_lipschitz(h, l2)  # [C, 1]
    x = torch.zeros_like(c)  # [C, n]
    y, t = x, torch.ones_like(step)  # t [C, 1]
    steps = 0
    while steps < max_iter:
        steps += 1
        grad = torch.bmm(h, y.unsqueeze(2)).squeeze(2) + l2 * y - c  # [C, n]
        z = (y - step * grad).clamp_(min=0.0)
        moved = float((z - y).abs().max())
        restart = ((y - z) * (z - x)).sum(dim=1, keepdim=True) > 0  # [C, 1]: momentum uphill
        t = torch.where(restart, torch.ones_like(t), t)
        t_next = (1.0 + torch.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = z + ((t - 1.0) / t_next) * (z - x)
        x, t = z, t_next
        if moved <= tol * max(float(x.max()), 1e-12):
            break
    return x, steps


def _sub_grams(g: sp.csr_matrix, rows: Tensor, valid: Tensor) -> Tensor:
    """H [C, n, n] with H[c, a, b] = G[rows[c, a], rows[c, b]], zero where either is padding."""
    union, local = np.unique(rows[valid].numpy(), return_inverse=True)
    block = torch.as_tensor(g[union][:, union].toarray())  # [R, R] the rows this chunk touches
    pos = torch.zeros_like(rows)
    pos[valid] = torch.as_tensor(local, dtype=torch.int64)
    h = block[pos.unsqueeze(2), pos.unsqueeze(1)]  # [C, n, n]
    return h * (valid.unsqueeze(2) & valid.unsqueeze(1))


def slim_screened(g: sp.csr_matrix, l2: float, l1: float, max_iter: int = 200, tol: float = 3e-3,
                  max_entries: int = 1 << 24, max_rows: int = 2048,
                  cand: Candidates | None = None) -> tuple[sp.csc_matrix, list[int]]:
    """SLIM's W [I, I] (sparse CSC) from the Gram matrix G (float32 CSR), one screened column
    problem per item, in chunks of at most `max_entries` sub-Gram entries. Returns W and the FISTA
    steps of each chunk. `cand`: the candidate sets of (g, l1), when already computed."""
    cand = candidates(g, l1) if cand is None else cand
    num_items = g.shape[0]
    values = np.zeros(len(cand.rows), dtype=np.float32)
    steps: list[int] = []
    for cols in chunks(cand.sizes, max_entries, max_rows):
        n = int(cand.sizes[cols].max())
        offsets = np.arange(n)[None, :]  # [1, n]
        starts = cand.indptr[cols][:, None]  # [C, 1]
        valid = offsets < cand.sizes[cols][:, None]  # [C, n]
        flat = np.where(valid, starts + offsets, 0)  # [C, n] positions in the candidate arrays
        rows = torch.as_tensor(np.where(valid, cand.rows[flat], 0))
        valid_t = torch.as_tensor(valid)
        c = torch.as_tensor(np.where(valid, cand.targets[flat] - l1, 0.0).astype(np.float32))
        x, k = fista_columns(_sub_grams(g, rows, valid_t), c, l2, max_iter, tol)
        values[flat[valid]] = x[valid_t].numpy()
        steps.append(k)
    w = sp.csc_matrix((values, cand.rows, cand.indptr), shape=(num_items, num_items))
    w.eliminate_zeros()
    return w, steps
