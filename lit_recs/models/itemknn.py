"""ItemKNN: item-based collaborative filtering (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS
2004).

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)      (cosine of the items' user columns)
    s(u, j)   = sum over i in N_k(j) of x_ui sim(i, j)     N_k(j): the k items most similar to j

Deviations: none. The neighbourhoods are stored sparse (k non-zeros per column, the shape SLIM's
weights have) and computed a block of columns at a time from the sparse Gram matrix, never as a
dense [I, I] (from each column's own non-zeros when the Gram matrix is sparse, as for a long
tail); scoring multiplies the sparse history by them (`lit_recs.nn.item_item`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule, ItemScorer
from lit_recs.nn.item_item import by_column, history_scorer
from lit_recs.nn.slim_screened import check_gram_memory, sparse_gram

BLOCK_CELLS = 1 << 25  # the dense [I, columns] block of one step: 128 MiB of float32
BLOCK_NONZEROS = 1 << 24  # the Gram non-zeros of one step of the sparse path
SPARSE_BELOW = 0.125  # Gram density under which the sparse path is used (long-tail catalogues)


def knn_similarity(g: sp.spmatrix, k: int, shrink: float = 0.0) -> Tensor:
    """Gram matrix [I, I] (symmetric, scipy sparse) -> cosine similarities with the top-k of each
    column kept (positive ones), zero diagonal, as a coalesced sparse COO tensor [I, I] float32.

    Dense blocks of columns when the Gram matrix is dense (work I^2, fast topk); the column's own
    non-zeros only when it is sparse (a 1M-item long tail: work nnz log nnz instead of 10^12)."""
    g = sp.csr_matrix(g, dtype=np.float32)
    g.sort_indices()
    g = sp.csc_matrix((g.data, g.indices, g.indptr), shape=g.shape)  # G symmetric: no copy
    num_items = g.shape[0]
    norms = np.sqrt(g.diagonal()).astype(np.float32)  # [I]
    k = min(k, num_items - 1)
    sparse = g.nnz < SPARSE_BELOW * float(num_items) ** 2
    rows, cols, vals = (sparse_topk if sparse else dense_topk)(g, norms, k, np.float32(shrink))
    del g
    order = np.argsort(rows, kind="stable")  # the entries come by column: now by row, then column
    indices = torch.empty(2, len(order), dtype=torch.long)  # [2, nnz]
    indices[0], indices[1] = torch.from_numpy(rows[order]), torch.from_numpy(cols[order])
    return torch.sparse_coo_tensor(indices, torch.from_numpy(vals[order]),
                                   (num_items, num_items), is_coalesced=True,
                                   check_invariants=False)


# rows, columns (int32), values of the kept entries, in column order
Triplets = tuple[np.ndarray, np.ndarray, np.ndarray]


def dense_topk(g: sp.csc_matrix, norms: np.ndarray, k: int, shrink: np.float32) -> Triplets:
    """Each column's k largest positive cosines, a dense [I, c] block of columns at a time."""
    num_items = g.shape[0]
    norm = torch.from_numpy(norms)
    step = max(1, BLOCK_CELLS // max(num_items, 1))
    rows, cols, vals = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
    for start in range(0, num_items, step):
        stop = min(start + step, num_items)
        block = torch.from_numpy(g[:, start:stop].toarray())  # [I, c]
        scale = norm[:, None] * norm[None, start:stop] + float(shrink)  # [I, c]
        sim = block / scale.clamp(min=1e-12)  # [I, c]
        local = torch.arange(stop - start)
        sim[start + local, local] = 0.0  # the diagonal
        top = sim.topk(k, dim=0)  # values, indices [k, c]: the neighbours of each column j
        values, neighbours = top.values.T, top.indices.T  # [c, k]: column by column
        keep = values > 0  # [c, k]
        rows.append(neighbours[keep].int().numpy())
        cols.append((local[:, None].expand(-1, k) + start)[keep].int().numpy())
        vals.append(values[keep].numpy())
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def sparse_topk(g: sp.csc_matrix, norms: np.ndarray, k: int, shrink: np.float32) -> Triplets:
    """Each column's k largest positive cosines among its own non-zeros: a block of columns (about
    BLOCK_NONZEROS entries) sorted by (column, -cosine), the first k of each column kept."""
    rows, cols, vals = [np.zeros(0, np.int32)], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
    start, num_items = 0, g.shape[0]
    while start < num_items:
        stop = int(np.searchsorted(g.indptr, g.indptr[start] + BLOCK_NONZEROS, "right")) - 1
        stop = min(max(stop, start + 1), num_items)
        lo, hi = g.indptr[start], g.indptr[stop]
        row = g.indices[lo:hi].astype(np.int64)  # [n]
        col = np.repeat(np.arange(start, stop), np.diff(g.indptr[start:stop + 1]))  # [n]
        sim = g.data[lo:hi] / np.maximum(norms[row] * norms[col] + shrink, np.float32(1e-12))
        keep = (row != col) & (sim > 0)
        row, col, sim = row[keep], col[keep], sim[keep]
        order = np.lexsort((-sim, col))  # by column, then by cosine, largest first
        col_sorted = col[order]
        rank = np.arange(len(order)) - np.searchsorted(col_sorted, col_sorted)  # within column
        take = order[rank < k]
        rows.append(row[take].astype(np.int32)), cols.append(col[take].astype(np.int32))
        vals.append(sim[take])
        start = stop
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


class ItemKNN(ClosedFormModule):
    """Args: k: neighbours kept per item; shrink: added to the cosine's denominator."""

    def __init__(self, num_users: int, num_items: int, k: int = 100, shrink: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.shrink = k, shrink
        empty = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                                        (num_items, num_items), check_invariants=False)
        self.register_buffer("similarity", empty.coalesce())  # [I, I] sparse, k per column

    def fit_interactions(self, train: Interactions) -> None:
        x = train.binary_csr()
        check_gram_memory("ItemKNN", x, 24, "Use EASE (dense, 3 x I^2 x 4 bytes) when the "
                          "catalogue is small, or drop rare items (data min_item_interactions).")
        sim = knn_similarity(sparse_gram(x), self.k, self.shrink)
        self.similarity = sim.to(self.device)

    def item_weights(self) -> Tensor:
        return self.similarity  # sparse [I, I]

    def precompute(self) -> Tensor:
        return by_column(self.similarity)  # once per evaluation pass

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return history_scorer(batch.seen, len(batch), self.precomputed())  # items -> [B, n]
