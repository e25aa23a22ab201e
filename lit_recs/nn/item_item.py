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
    """x_u W for every user of the batch: seen pairs [2, S], W [I, I] dense or `by_column(W)` ->
    dense scores [B, I] (float32)."""
    return history_scorer(seen, batch_size, weights)(slice(None))


def history_scorer(seen: Tensor, batch_size: int, weights: Tensor
                   ) -> Callable[[slice], Tensor]:
    """x_u W by slices of the catalogue: items -> dense scores [B, n].

    A dense W [I, I] is multiplied slice by slice. A sparse W comes as `by_column(W)`, the CSR of
    W^T (row j: the weights into item j): a slice of items is a slice of its rows, and each slice
    is the sparse product W^T[slice] x^T [n, B], whose work is the batch's history x the rows'
    non-zeros. Never the whole [B, I] product at once: with a long tail, popular items are
    neighbours of most of the catalogue, so x W is half full (a 512-user batch over 1M items:
    233M non-zeros, 5.8 GB as a sparse matrix)."""
    num_items = weights.shape[0]
    if weights.layout == torch.strided:
        x = history_csr(seen, batch_size, num_items)  # [B, I] sparse
        return lambda items: _sparse_mm(x, weights[:, items].contiguous())  # [B, n]
    order = (seen[1] * batch_size + seen[0]).argsort()  # the pairs by item, then row
    xt = history_csr(seen[[1, 0]][:, order], num_items, batch_size)  # x^T [I, B] sparse

    def scores(items: slice) -> Tensor:
        first, last, _ = items.indices(num_items)
        rows = _row_slice(weights, first, max(first, last))  # W^T[first:last] [n, I]
        return _dense_transpose(_sparse_mm(rows, xt))  # [B, n]
    return scores


def _dense_transpose(product: Tensor) -> Tensor:
    """A sparse CSR [n, B] as the dense [B, n] (its non-zeros written in place: 2-3x faster than
    `to_dense()` and a transposed copy when the product is half full)."""
    n, batch_size = product.shape
    rows = torch.repeat_interleave(torch.arange(n, device=product.device),
                                   product.crow_indices().diff())  # [P]
    out = product.values().new_zeros(batch_size, n)  # [B, n]
    out[product.col_indices(), rows] = product.values()
    return out


def _row_slice(csr: Tensor, first: int, last: int) -> Tensor:
    """Rows first .. last - 1 of a sparse CSR matrix, as a CSR matrix over views of its arrays."""
    crow = csr.crow_indices()
    lo, hi = crow[first], crow[last]
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow[first:last + 1] - lo, csr.col_indices()[lo:hi],
                                       csr.values()[lo:hi], (last - first, csr.shape[1]),
                                       check_invariants=False)


def _sparse_mm(x: Tensor, weights: Tensor) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse.mm(x, weights)


def by_column(weights: Tensor) -> Tensor:
    """A sparse COO W [I, I] as the CSR of W^T on its device: row j lists the items whose history
    adds to item j's score (for ItemKNN, j's k neighbours), the operand `history_scorer` takes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        weights = weights.coalesce()
        transposed = torch.sparse_coo_tensor(weights.indices()[[1, 0]], weights.values(),
                                             weights.shape, check_invariants=False)
        return transposed.coalesce().to_sparse_csr()
