"""The screened SLIM solver: candidate sets, chunking, batched FISTA, and the exact solution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from slim_reference import REGS, SEEDS, random_binary, reference

from lit_recs.nn.slim_screened import (
    candidates,
    chunks,
    fista_columns,
    slim_screened,
    sparse_gram,
)


def test_candidates_are_the_off_diagonal_entries_above_l1() -> None:
    a = random_binary(5, users=60, items=15, density=0.4)
    g = sparse_gram(a)
    dense = a.T @ a
    cand = candidates(g, 4.0)
    for j in range(15):
        rows = cand.rows[cand.indptr[j]:cand.indptr[j + 1]]
        expected = [k for k in range(15) if k != j and dense[k, j] > 4.0]
        assert rows.tolist() == expected
        np.testing.assert_array_equal(cand.targets[cand.indptr[j]:cand.indptr[j + 1]],
                                      dense[expected, j])
    assert cand.work() == int(np.square(np.diff(cand.indptr)).sum())


def test_chunks_cover_every_column_with_candidates_once_within_the_limits() -> None:
    sizes = np.array([0, 3, 10, 1, 7, 0, 30, 2, 2, 9])
    parts = chunks(sizes, max_entries=200, max_rows=25)
    covered = np.concatenate(parts)
    assert sorted(covered.tolist()) == [j for j in range(10) if sizes[j] > 0]
    for part in parts:
        n = sizes[part].max()
        assert len(part) == 1 or (len(part) * n * n <= 200 and sizes[part].sum() <= 25)
    assert [len(p) for p in parts if 30 in sizes[p]] == [1]  # over both limits: alone


def test_batched_fista_solves_each_nonnegative_quadratic() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((3, 6, 6))
    h = torch.as_tensor(m @ m.transpose(0, 2, 1))  # [3, 6, 6] PSD
    c = torch.as_tensor(rng.normal(size=(3, 6)))  # [3, 6]
    x, steps = fista_columns(h, c, 0.5, max_iter=20000, tol=1e-13)
    assert steps > 1 and torch.all(x >= 0)
    grad = ((h @ x.unsqueeze(2)).squeeze(2) + 0.5 * x - c).numpy()  # KKT conditions:
    assert (x > 0).any() and (x == 0).any()
    assert np.abs(grad[(x > 0).numpy()]).max() < 1e-8  # 0 where x > 0
    assert (-grad[(x == 0).numpy()]).max() < 1e-8  # >= 0 where x = 0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), REGS)
def test_screened_matches_coordinate_descent(seed: int, l2: float, l1: float) -> None:
    a = random_binary(seed)
    w, steps = slim_screened(sparse_gram(a), l2, l1, max_iter=5000, tol=1e-9)
    assert isinstance(w, sp.csc_matrix) and len(steps) >= 1
    dense = w.toarray()
    assert np.all(dense >= 0) and np.all(np.diag(dense) == 0)
    np.testing.assert_allclose(dense, reference(seed, l2, l1), atol=1e-3, rtol=0)


def test_small_chunks_give_the_same_solution() -> None:
    a = random_binary(1, users=80, items=30, density=0.25)
    g = sparse_gram(a)
    whole, _ = slim_screened(g, 1.0, 1.0, max_iter=5000, tol=1e-9)
    pieces, steps = slim_screened(g, 1.0, 1.0, max_iter=5000, tol=1e-9, max_entries=50,
                                  max_rows=12)
    assert len(steps) > 5
    np.testing.assert_allclose(pieces.toarray(), whole.toarray(), atol=1e-5, rtol=0)


def test_l1_above_every_co_count_gives_an_empty_w() -> None:
    a = random_binary(2)
    g = sparse_gram(a)
    top = float(np.max(np.where(np.eye(12, dtype=bool), 0, (a.T @ a))))
    w, steps = slim_screened(g, 1.0, top)
    assert w.nnz == 0 and steps == []


@pytest.mark.parametrize("seed", SEEDS)
def test_lipschitz_bounds_are_upper_bounds_and_tight(seed: int) -> None:
    from lit_recs.nn.slim import lipschitz
    from lit_recs.nn.slim_screened import batched_lipschitz

    a = random_binary(seed, users=50, items=20, density=0.2)
    g = torch.as_tensor(a.T @ a)
    top = float(torch.linalg.eigvalsh(g).max())
    bound = lipschitz(g, 0.5)
    assert top + 0.5 <= bound <= 1.05 * top + 0.5
    blocks = torch.stack([g[:10, :10], g[10:, 10:]])  # [2, 10, 10]
    blocks[1, 7:, :] = 0.0  # padding rows and columns
    blocks[1, :, 7:] = 0.0
    bounds = batched_lipschitz(blocks, 0.5)  # [2, 1]
    for c in range(2):
        top = float(torch.linalg.eigvalsh(blocks[c]).max())
        assert top + 0.5 <= float(bounds[c]) <= 1.05 * top + 0.5
