"""SLIM's solver against an independent reference: per-column coordinate descent on A, in numpy
(tests/slim_reference.py). Its optimality is checked through the KKT conditions before it is
trusted.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from slim_reference import REGS, SEEDS, cd_slim_full, random_binary, reference

from lit_recs.nn.slim import SLIMLayer, fista_slim, slim_objective

SOLVE = {"max_iter": 2000, "tol": 1e-12}  # stops after ~50-150 steps, W within ~1e-5 of the optimum
CONVERGED = {"max_iter": 600, "tol": 0.0}  # a fixed 600 steps: W within ~1e-9 of the optimum


def gram_of(a: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.as_tensor(a.T @ a, dtype=dtype)


def direct_objective(a: np.ndarray, w: np.ndarray, l2: float, l1: float) -> float:
    return float(0.5 * np.square(a - a @ w).sum() + 0.5 * l2 * np.square(w).sum()
                 + l1 * np.abs(w).sum())


def kkt_violation(a: np.ndarray, w: np.ndarray, l2: float, l1: float) -> tuple[float, float]:
    """(max |grad + l1| where w > 0, max (-(grad + l1)) where w = 0), off the diagonal."""
    g = a.T @ a
    grad = g @ w - g + l2 * w + l1  # gradient of the smooth part plus l1 (the subgradient at w > 0)
    off = ~np.eye(a.shape[1], dtype=bool)
    active = off & (w > 0)
    at_zero = off & (w == 0)
    return float(np.abs(grad[active]).max(initial=0.0)), float(np.max(-grad[at_zero], initial=0.0))


# ---------------------------------------------------------------- the reference itself


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), REGS)
def test_reference_satisfies_kkt(seed: int, l2: float, l1: float) -> None:
    a = random_binary(seed)
    w = reference(seed, l2, l1)
    assert np.all(w >= 0) and np.all(np.diag(w) == 0)
    stationarity, dual = kkt_violation(a, w, l2, l1)
    assert stationarity < 1e-7 and dual < 1e-7
    assert np.any(w > 0)  # none of these regularisations is strong enough to empty W


# ---------------------------------------------------------------- fista_slim


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), REGS)
def test_fista_matches_coordinate_descent(seed: int, l2: float, l1: float) -> None:
    a = random_binary(seed)
    w, history = fista_slim(gram_of(a), l2, l1, **SOLVE)
    assert w.shape == (12, 12) and w.dtype == torch.float64
    w = w.numpy()
    assert np.all(w >= 0)
    assert np.all(np.diag(w) == 0)  # exactly, not approximately
    np.testing.assert_allclose(w, reference(seed, l2, l1), rtol=0, atol=1e-3)
    assert len(history) >= 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), REGS)
def test_objective_history_never_increases_and_reaches_the_optimum(seed: int, l2: float,
                                                                  l1: float) -> None:
    a = random_binary(seed)
    g = gram_of(a)
    w, history = fista_slim(g, l2, l1, **SOLVE)
    h = np.asarray(history)
    assert np.all(np.isfinite(h))
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1])), np.diff(h).max()
    optimum = direct_objective(a, reference(seed, l2, l1), l2, l1)
    assert h[-1] <= optimum + 1e-6
    # the last history entry is the objective of the W returned
    assert h[-1] == pytest.approx(direct_objective(a, w.numpy(), l2, l1), rel=1e-9)
    assert h[-1] == pytest.approx(slim_objective(g, w, l2, l1), rel=1e-9)
    # and the first step already improves on W = 0 (f(0) = 1/2 ||A||^2)
    assert h[0] < 0.5 * a.sum()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), [(0.1, 0.0), (1.0, 1.0), (0.5, 3.0)])
def test_float32_gram_matches_the_reference(seed: int, l2: float, l1: float) -> None:
    """The model fits in float32: same solution to 1e-3, same constraints."""
    a = random_binary(seed)
    w, history = fista_slim(gram_of(a, torch.float32), l2, l1, max_iter=500, tol=1e-12)
    assert w.dtype == torch.float32
    w = w.double().numpy()
    assert np.all(w >= 0) and np.all(np.diag(w) == 0)
    np.testing.assert_allclose(w, reference(seed, l2, l1), rtol=0, atol=1e-3)
    h = np.asarray(history)
    assert np.all(np.diff(h) <= 1e-6 * np.abs(h[:-1]))


def test_slim_objective_matches_the_direct_formula() -> None:
    rng = np.random.default_rng(7)
    for seed in SEEDS:
        a = random_binary(seed)
        g = gram_of(a)
        for l2, l1 in [(0.0, 0.0), (0.3, 0.0), (0.0, 2.0), (1.5, 0.7), (10.0, 5.0)]:
            for scale in (0.01, 0.3, 2.0):
                w = rng.random((12, 12)) * scale * (rng.random((12, 12)) < 0.5)
                np.fill_diagonal(w, 0.0)
                got = slim_objective(g, torch.as_tensor(w), l2, l1)
                assert isinstance(got, float)
                assert got == pytest.approx(direct_objective(a, w, l2, l1), rel=1e-6)


def test_slim_objective_of_a_block_of_columns() -> None:
    a = random_binary(3)
    g = gram_of(a)
    rng = np.random.default_rng(3)
    w = rng.random((12, 12))
    np.fill_diagonal(w, 0.0)
    cols = np.array([1, 4, 5, 10])
    block = w[:, cols]
    # the columns' own terms: 1/2 ||a_cols - A W_cols||^2 + l2/2 ||W_cols||^2 + l1 ||W_cols||_1
    expected = float(0.5 * np.square(a[:, cols] - a @ block).sum() + 0.5 * 0.8 * np.square(block).sum()
                     + 1.3 * block.sum())
    got = slim_objective(g, torch.as_tensor(block), 0.8, 1.3, columns=torch.as_tensor(cols))
    assert got == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_huge_l2_shrinks_w_to_zero(seed: int) -> None:
    a = random_binary(seed)
    w, history = fista_slim(gram_of(a), 1e6, 0.0, **SOLVE)
    w = w.numpy()
    assert np.abs(w).max() < 1e-4
    assert np.all(w >= 0) and np.all(np.diag(w) == 0)
    # to first order W = G / l2 off the diagonal
    expected = a.T @ a / 1e6
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(w, expected, rtol=1e-3, atol=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("factor", [1.0, 1.5, 10.0])
def test_l1_at_least_the_largest_off_diagonal_gram_entry_gives_exactly_zero(seed: int,
                                                                             factor: float) -> None:
    """At W = 0 the gradient is -G: W = 0 is optimal iff l1 >= max_{i != j} G_ij."""
    a = random_binary(seed)
    g = a.T @ a
    off_max = float(np.max(g[~np.eye(12, dtype=bool)]))
    for l2 in (0.0, 1.0):
        w, history = fista_slim(gram_of(a), l2, factor * off_max, max_iter=50)
        assert torch.count_nonzero(w) == 0
        assert history[-1] == pytest.approx(0.5 * a.sum(), rel=1e-12)  # f(0) = 1/2 tr(G)


@pytest.mark.parametrize("seed", SEEDS)
def test_l1_just_below_the_threshold_keeps_some_weight(seed: int) -> None:
    a = random_binary(seed)
    g = a.T @ a
    off_max = float(np.max(g[~np.eye(12, dtype=bool)]))
    w, _ = fista_slim(gram_of(a), 0.5, 0.9 * off_max, max_iter=200, tol=0.0)
    ref = cd_slim_full(a, 0.5, 0.9 * off_max)
    assert np.any(ref > 0)
    np.testing.assert_allclose(w.numpy(), ref, rtol=0, atol=1e-3)
    assert torch.count_nonzero(w) == np.count_nonzero(ref)


@cache
def converged_full_solve(seed: int, l2: float, l1: float) -> torch.Tensor:
    w, _ = fista_slim(gram_of(random_binary(seed)), l2, l1, **CONVERGED)
    return w


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("l2", "l1"), [(0.1, 0.0), (1.0, 1.0), (0.5, 3.0)])
@pytest.mark.parametrize("cols", [[3, 4, 5, 6, 7], [0, 2, 5, 11], [11, 0], [6]])
def test_a_block_of_columns_equals_the_same_columns_of_the_full_solve(
        seed: int, l2: float, l1: float, cols: list[int]) -> None:
    """Both run to convergence: the columns are independent problems with the same solutions.

    (At a finite step budget they may differ: the monotone accept/reject test and the stopping rule
    look at the objective summed over the columns being solved.)
    """
    a = random_binary(seed)
    g = gram_of(a)
    full = converged_full_solve(seed, l2, l1)
    index = torch.as_tensor(cols)
    block, history = fista_slim(g, l2, l1, columns=index, **CONVERGED)
    assert block.shape == (12, len(cols))
    np.testing.assert_allclose(block.numpy(), full[:, index].numpy(), rtol=0, atol=1e-6)
    # the constrained entries W[c, c] sit at rows `cols` of the block, and are exactly zero
    assert torch.all(block[index, torch.arange(len(cols))] == 0)
    assert torch.all(block >= 0)
    np.testing.assert_allclose(block.numpy(), reference(seed, l2, l1)[:, cols], rtol=0, atol=1e-6)
    # the block's history is the block's objective
    assert history[-1] == pytest.approx(slim_objective(g, block, l2, l1, columns=index), rel=1e-9)


# ---------------------------------------------------------------- SLIMLayer


def test_slim_layer_forward_is_rows_times_weight() -> None:
    rng = np.random.default_rng(0)
    w = rng.random((12, 12)).astype(np.float32)
    np.fill_diagonal(w, 0.0)
    layer = SLIMLayer(12)
    assert layer.weight.shape == (12, 12)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w))
    rows = (rng.random((5, 12)) < 0.4).astype(np.float32)
    out = layer(torch.as_tensor(rows))
    assert out.shape == (5, 12)
    np.testing.assert_allclose(out.detach().numpy(), rows @ w, rtol=1e-6, atol=1e-6)


def test_slim_layer_forward_treats_the_diagonal_as_zero() -> None:
    """A non-zero diagonal in `weight` (loaded, or set by hand) must not score an item by itself."""
    rng = np.random.default_rng(1)
    w = rng.random((12, 12)).astype(np.float32) + 0.5  # diagonal included
    layer = SLIMLayer(12)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w))
    rows = (rng.random((5, 12)) < 0.4).astype(np.float32)
    expected = rows @ (w * (1 - np.eye(12, dtype=np.float32)))
    np.testing.assert_allclose(layer(torch.as_tensor(rows)).detach().numpy(), expected,
                               rtol=1e-6, atol=1e-6)


def test_slim_layer_diagonal_gets_no_gradient() -> None:
    rng = np.random.default_rng(2)
    layer = SLIMLayer(12)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(rng.random((12, 12)), dtype=torch.float32))
    rows = torch.as_tensor((rng.random((6, 12)) < 0.5), dtype=torch.float32)
    loss = 0.5 * (rows - layer(rows)).square().sum()
    loss.backward()
    grad = layer.weight.grad
    assert grad is not None
    assert torch.all(torch.diagonal(grad) == 0)
    off = ~torch.eye(12, dtype=torch.bool)
    assert torch.any(grad[off] != 0)


@pytest.mark.parametrize("threshold", [0.0, 0.05, 0.3, 2.0])
def test_slim_layer_proximal_step_soft_thresholds_clamps_and_zeroes_the_diagonal(
        threshold: float) -> None:
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((12, 12)) * 0.5).astype(np.float32)  # negatives and a non-zero diagonal
    layer = SLIMLayer(12)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(w))
    layer.proximal_step(threshold)
    expected = np.maximum(w - np.float32(threshold), 0.0)
    np.fill_diagonal(expected, 0.0)
    got = layer.weight.detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-7)
    assert np.all(got >= 0) and np.all(np.diag(got) == 0)
    assert np.all((got == 0) == (expected == 0))  # exact zeros where thresholded
    assert layer.weight.requires_grad  # still a trainable parameter after the in-place step
