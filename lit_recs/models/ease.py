"""EASE: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019.

    min_B ||X - X B||_F^2 + lambda ||B||_F^2   s.t. diag(B) = 0
    closed form: P = (X^T X + lambda I)^-1,  B = I - P diag(1 / diag(P))  (so B_ij = -P_ij / P_jj)
    s(u, .) = x_u B

X is the 0/1 training matrix [U, I]. Deviations from the paper: none in the fit; at evaluation the
user's row x_u holds every known interaction (training items, plus validation items at test time),
as the paper's strong-generalisation setting does.

B is dense [I, I]: the fit works in float32, in place, through a Cholesky factorisation of
X^T X + lambda I (never a general inverse): about 3 I^2 floats at its peak (the Gram matrix, its
inverse and the solver's workspace), refused before allocating when that exceeds the memory
available (use SLIM's sparse weights or ItemKNN instead). Scoring multiplies the sparse history by
B: a user's known items select rows of B (`lit_recs.nn.item_item`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_recs.data.batches import EvalBatch
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import ClosedFormModule, ItemScorer
from lit_recs.nn.item_item import history_scorer
from lit_recs.nn.slim_screened import sparse_gram
from lit_recs.runtime import check_memory

PEAK_COPIES = 3  # [I, I] float32 matrices alive at once during the fit


def gram(train: Interactions, dtype: np.dtype = np.float32) -> np.ndarray:
    """X^T X of the 0/1 training matrix as a dense array [I, I] (counts: exact in float32 up to
    2^24 users)."""
    return sparse_gram(train.binary_csr()).toarray().astype(dtype, copy=False)  # [I, I]


def ease_weights(g: Tensor, l2: float) -> Tensor:
    """Gram matrix [I, I] -> EASE's B [I, I] with zero diagonal, in g's dtype. Overwrites g (its
    diagonal gets lambda, then the Cholesky factor)."""
    g.diagonal().add_(l2)
    torch.linalg.cholesky(g, out=g)  # [I, I]: L in the lower triangle
    p = torch.cholesky_inverse(g)  # [I, I]: (X^T X + lambda I)^-1
    p.div_(-p.diagonal().clone()[None, :])  # B_ij = -P_ij / P_jj
    return p.fill_diagonal_(0.0)


class EASE(ClosedFormModule):
    """Args: l2: the ridge penalty lambda (Steck uses a few hundred on MovieLens)."""

    def __init__(self, num_users: int, num_items: int, l2: float = 500.0, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if l2 <= 0:
            raise ValueError(f"EASE needs l2 > 0 (X^T X alone is singular), got {l2}")
        self.l2 = l2
        # [I, I] once fitted or loaded: empty until then, so that building the model allocates
        # nothing (a checkpoint's weights take their own shape on load)
        self.register_buffer("weights", torch.zeros(0, 0))
        self.register_load_state_dict_pre_hook(_take_shape("weights"))

    def fit_interactions(self, train: Interactions) -> None:
        check_memory("EASE", PEAK_COPIES * self.num_items**2 * 4,
                     f"{PEAK_COPIES} dense float32 [I, I] matrices at I = {self.num_items:,}",
                     "Use SLIM (sparse weights: class_path lit_recs.models.SLIM) or ItemKNN, or "
                     "shrink the catalogue (data min_item_interactions).")
        self.weights = torch.empty(0, 0)  # a refit frees the old weights first
        g = torch.from_numpy(gram(train)).to(self.device)  # [I, I] float32
        self.weights = ease_weights(g, self.l2)
        del g

    def item_weights(self) -> Tensor:
        return self.weights  # [I, I]

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        if self.weights.shape != (self.num_items, self.num_items):
            raise RuntimeError("EASE has no weights yet: fit it, or load a checkpoint")
        return history_scorer(batch.seen, len(batch), self.weights)  # x_u B, [B, n]


def _take_shape(name: str) -> Any:
    """A load_state_dict pre-hook: the buffer `name` takes the incoming tensor's shape."""

    def hook(module: torch.nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        incoming = state_dict.get(prefix + name)
        if incoming is not None:
            setattr(module, name, torch.empty_like(incoming, device=getattr(module, name).device))

    return hook
