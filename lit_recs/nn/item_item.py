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

import numpy as np
import scipy.sparse as sp
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
    W^T (row j: the weights into item j), so a slice of items is a slice of its rows, multiplied
    by the history x^T [I, B]: only one slice is ever held. Never the whole [B, I] product at
    once: with a long tail, popular items are neighbours of most of the catalogue, so x W is half
    full (a 512-user batch over 1M items: 233M non-zeros, 5.8 GB as a sparse matrix). On the CPU
    the slice product is scipy's (10.6 s for that batch on one thread); elsewhere it is torch
    index arithmetic (`index_scorer`). torch's own sparse x sparse product is not used: on the
    CPU (torch 2.13) each call leaked its result's memory (1.7 GB per 512-user batch)."""
    if weights.layout == torch.strided:
        x = history_csr(seen, batch_size, weights.shape[0])  # [B, I] sparse
        return lambda items: _sparse_mm(x, weights[:, items].contiguous())  # [B, n]
    if weights.device.type == "cpu":
        return scipy_scorer(seen, batch_size, weights)
    return index_scorer(seen, batch_size, weights)


def scipy_scorer(seen: Tensor, batch_size: int, weights: Tensor) -> Callable[[slice], Tensor]:
    """`history_scorer` for a sparse W on the CPU: W^T[slice] x^T as scipy CSR products."""
    num_items = weights.shape[0]
    wt = sp.csr_matrix((weights.values().numpy(), weights.col_indices().numpy(),
                        weights.crow_indices().numpy()), shape=weights.shape)  # views, [I, I]
    pairs = seen.numpy()
    xt = sp.csr_matrix((np.ones(pairs.shape[1], np.float32), (pairs[1], pairs[0])),
                       shape=(num_items, batch_size))  # x^T [I, B]

    def scores(items: slice) -> Tensor:
        product = (wt[items] @ xt).toarray()  # [n, B]
        return torch.from_numpy(np.ascontiguousarray(product.T))  # [B, n]
    return scores


def index_scorer(seen: Tensor, batch_size: int, weights: Tensor) -> Callable[[slice], Tensor]:
    """`history_scorer` for a sparse W on any device: each entry W[i, j] of the slice whose item i
    some row of the batch knows is added to those rows' score of j (one index_add; the work is
    the (entry, row) pairs)."""
    num_items = weights.shape[0]
    order = (seen[1] * batch_size + seen[0]).argsort()  # the pairs by item, then row
    knowers = seen[0][order]  # [S]: for each item in turn, the rows that know it
    known = torch.bincount(seen[1], minlength=num_items)  # [I] rows knowing each item
    start = known.cumsum(0) - known  # [I] where each item's rows begin in `knowers`
    crow, sources, values = weights.crow_indices(), weights.col_indices(), weights.values()

    def scores(items: slice) -> Tensor:
        first, last, _ = items.indices(num_items)
        n = max(last - first, 0)
        lo, hi = crow[first], crow[first + n]
        target = torch.repeat_interleave(torch.arange(n, device=crow.device),
                                         crow[first:first + n + 1].diff())  # [E] j - first
        source, weight = sources[lo:hi], values[lo:hi]  # [E] i, W[i, j]
        readers = known[source]  # [E] rows of the batch that read each entry
        keep = readers > 0
        target, source, weight, readers = target[keep], source[keep], weight[keep], readers[keep]
        entry = torch.repeat_interleave(readers)  # [P] the entry of each (entry, row) pair
        within = torch.arange(len(entry), device=crow.device) - \
            (readers.cumsum(0) - readers)[entry]  # [P] 0, 1, .. per entry
        rows = knowers[start[source[entry]] + within]  # [P]
        out = values.new_zeros(batch_size * n)  # [B * n]
        out.index_add_(0, rows * n + target[entry], weight[entry])
        return out.view(batch_size, n)
    return scores


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
