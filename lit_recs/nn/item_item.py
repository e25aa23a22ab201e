"""Item-item models' maths shared by EASE, SLIM and ItemKNN: scores from the sparse history, and
the memory a dense [I, I] model would need.

    s(u, .) = x_u W        x_u: the user's known items (0/1 [I]), W [I, I]

Scoring a batch through dense rows costs B x I x I; through the history as a sparse [B, I] matrix
it costs nnz(history) x I for a dense W, and nnz(history) x (non-zeros per row of W) for a sparse
one: a user with 9 known items reads 9 rows of W, not I.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor


def history_csr(seen: Tensor, batch_size: int, num_items: int) -> Tensor:
    """(row, item) pairs [2, S] sorted by row then item -> the 0/1 history, sparse CSR [B, I]."""
    counts = torch.bincount(seen[0], minlength=batch_size)  # [B]
    crow = torch.cat([counts.new_zeros(1), counts.cumsum(0)])  # [B + 1]
    values = torch.ones(seen.shape[1], device=seen.device)  # [S]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, seen[1], values, (batch_size, num_items),
                                       check_invariants=False)


def history_scores(seen: Tensor, batch_size: int, weights: Tensor) -> Tensor:
    """x_u W for every user of the batch: seen pairs [2, S], W [I, I] dense or sparse CSR ->
    dense scores [B, I] (float32)."""
    return history_scorer(seen, batch_size, weights)(slice(None))


def history_scorer(seen: Tensor, batch_size: int, weights: Tensor
                   ) -> Callable[[slice], Tensor]:
    """x_u W by slices of the catalogue: items -> dense scores [B, n]. A dense W is multiplied
    slice by slice; with a sparse W the sparse product (B x history x neighbours non-zeros) is
    formed once and each slice filled from it."""
    x = history_csr(seen, batch_size, weights.shape[0])  # [B, I] sparse
    if weights.layout == torch.strided:
        return lambda items: _sparse_mm(x, weights[:, items].contiguous())  # [B, n]
    product = _sparse_mm(x, weights)  # [B, I] sparse CSR
    by_column: list[Tensor] = []  # (rows, cols, values) sorted by column, on the first slice

    def scores(items: slice) -> Tensor:
        first, last, _ = items.indices(weights.shape[1])
        if (first, last) == (0, weights.shape[1]):
            return product.to_dense()  # [B, I]
        if not by_column:
            coo = product.to_sparse_coo().coalesce()
            order = coo.indices()[1].argsort(stable=True)
            by_column.extend([coo.indices()[0][order], coo.indices()[1][order],
                              coo.values()[order]])
        rows, cols, values = by_column  # [P] each
        lo, hi = torch.searchsorted(cols, cols.new_tensor([first, last])).tolist()
        out = values.new_zeros(batch_size, max(last - first, 0))  # [B, n]
        out[rows[lo:hi], cols[lo:hi] - first] = values[lo:hi]
        return out
    return scores


def _sparse_mm(x: Tensor, weights: Tensor) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(x, weights)


def to_csr(weights: Tensor) -> Tensor:
    """A sparse COO W [I, I] as CSR on its device (rows of W: what an item adds to every item)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return weights.coalesce().to_sparse_csr()
