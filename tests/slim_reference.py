"""An independent SLIM reference shared by the solver tests: per-column coordinate descent on A.

For each column j separately it minimises
    1/2 ||a_j - A w||^2 + l2/2 ||w||^2 + l1 ||w||_1    s.t.  w >= 0, w_j = 0
by cyclic coordinate descent on A itself (never the Gram matrix), until no coordinate moves by
more than 1e-10. test_slim_solver.py checks its optimality through the KKT conditions.
(A plain module, not a test file: pytest puts tests/ on the path, so `from slim_reference import`
works under bare `pytest` as well as `python -m pytest`.)
"""

from __future__ import annotations

from functools import cache

import numpy as np

SEEDS = [0, 1, 2]
# (l2, l1): ridge only, then elastic net with l1 from small to large
REGS = [(0.1, 0.0), (1.0, 0.0), (5.0, 0.0), (0.1, 0.1), (1.0, 1.0), (5.0, 3.0), (0.5, 3.0)]


def random_binary(seed: int, users: int = 40, items: int = 12, density: float = 0.3) -> np.ndarray:
    return (np.random.default_rng(seed).random((users, items)) < density).astype(np.float64)


def cd_column(a: np.ndarray, j: int, l2: float, l1: float, tol: float = 1e-10,
              max_sweeps: int = 5000) -> np.ndarray:
    """argmin_w 1/2 ||a_j - A w||^2 + l2/2 ||w||^2 + l1 sum(w), w >= 0, w_j = 0 (coordinate descent)."""
    n = a.shape[1]
    w = np.zeros(n)
    residual = a[:, j].copy()  # a_j - A w
    sq = (a * a).sum(axis=0)
    for _ in range(max_sweeps):
        moved = 0.0
        for i in range(n):
            if i == j:
                continue
            denom = sq[i] + l2
            rho = a[:, i] @ residual + sq[i] * w[i]  # a_i . (a_j - A w without coordinate i)
            new = max(0.0, rho - l1) / denom if denom > 0 else 0.0
            step = new - w[i]
            if step != 0.0:
                residual -= step * a[:, i]
                w[i] = new
                moved = max(moved, abs(step))
        if moved < tol:
            break
    return w


def cd_slim_full(a: np.ndarray, l2: float, l1: float) -> np.ndarray:
    return np.stack([cd_column(a, j, l2, l1) for j in range(a.shape[1])], axis=1)  # [I, I]


@cache
def reference(seed: int, l2: float, l1: float) -> np.ndarray:
    w = cd_slim_full(random_binary(seed), l2, l1)
    w.setflags(write=False)
    return w
