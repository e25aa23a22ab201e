"""ItemKNN: item-based collaborative filtering (Sarwar et al., WWW 2001; Deshpande & Karypis, TOIS
2004).

    sim(i, j) = <x_i, x_j> / (|x_i| |x_j| + shrink)      (cosine of the items' user columns)
    s(u, j)   = sum over i in N_k(j) of x_ui sim(i, j)     N_k(j): the k items most similar to j

Deviations: none. The neighbourhoods are stored sparse (k non-zeros per column, the shape SLIM's
weights have) and computed a block of columns at a time from the sparse Gram matrix, never as a
dense [I, I]; scoring multiplies the sparse history by them (`lit_recs.nn.item_item`).
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
from lit_recs.nn.item_item import history_scorer, to_csr
from lit_recs.nn.slim_screened import check_gram_memory, sparse_gram

BLOCK_CELLS = 1 << 25  # the dense [I, columns] block of one step: 128 MiB of float32


def knn_similarity(g: sp.spmatrix, k: int, shrink: float = 0.0) -> Tensor:
    """Gram matrix [I, I] (scipy sparse) -> cosine similarities with the top-k of each column kept
    (positive ones), zero diagonal, as a coalesced sparse COO tensor [I, I] float32."""
    g = sp.csc_matrix(g, dtype=np.float32)
    num_items = g.shape[0]
    norms = torch.from_numpy(np.sqrt(g.diagonal()).astype(np.float32))  # [I]
    k = min(k, num_items - 1)
    step = max(1, BLOCK_CELLS // max(num_items, 1))
    rows, cols, vals = [], [], []
    for start in range(0, num_items, step):
        stop = min(start + step, num_items)
        block = torch.from_numpy(g[:, start:stop].toarray())  # [I, c]
        scale = norms[:, None] * norms[None, start:stop] + shrink  # [I, c]
        sim = block / scale.clamp(min=1e-12)  # [I, c]
        local = torch.arange(stop - start)
        sim[start + local, local] = 0.0  # the diagonal
        top = sim.topk(k, dim=0)  # values, indices [k, c]: the neighbours of each column j
        keep = top.values > 0  # [k, c]
        rows.append(top.indices[keep])
        cols.append((local[None, :].expand(k, -1) + start)[keep])
        vals.append(top.values[keep])
    indices = torch.stack([torch.cat(rows), torch.cat(cols)]) if rows else \
        torch.zeros(2, 0, dtype=torch.long)
    values = torch.cat(vals) if vals else torch.zeros(0)
    return torch.sparse_coo_tensor(indices, values, (num_items, num_items),
                                   check_invariants=False).coalesce()


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
        return to_csr(self.similarity)  # once per evaluation pass

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        return history_scorer(batch.seen, len(batch), self.precomputed())  # items -> [B, n]
