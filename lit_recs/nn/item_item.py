"""Item-item models' maths shared by EASE, SLIM and ItemKNN: scores from the sparse history, and
the memory a dense [I, I] model would need.

    s(u, .) = x_u W        x_u: the user's known items (0/1 [I]), W [I, I]

Scoring a batch through dense rows costs B x I x I; through the history as a sparse [B, I] matrix
it costs nnz(history) x I for a dense W, and nnz(history) x (non-zeros per row of W) for a sparse
one: a user with 9 known items reads 9 rows of W, not I.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lit_recs.runtime import available_memory


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
    x = history_csr(seen, batch_size, weights.shape[0])  # [B, I] sparse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        scores = torch.sparse.mm(x, weights)  # [B, I]: dense, or sparse CSR when W is
    return scores.to_dense() if scores.layout != torch.strided else scores


def to_csr(weights: Tensor) -> Tensor:
    """A sparse COO W [I, I] as CSR on its device (rows of W: what an item adds to every item)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return weights.coalesce().to_sparse_csr()


def check_memory(model: str, needed: int, what: str, instead: str) -> None:
    """Refuse before allocating: a ValueError when `needed` bytes exceed the memory available
    now (Linux' MemAvailable; no check where it cannot be read)."""
    free = available_memory()
    if free is not None and needed > free:
        raise ValueError(f"{model} needs about {needed / 2**30:.1f} GiB ({what}); this machine "
                         f"has {free / 2**30:.1f} GiB available. {instead}")
