"""iALS: exact half-steps against a dense brute-force solve, conjugate-gradient half-steps against the
exact ones, both solvers reaching the same objective, a monotone objective, ML-100K quality."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from lightning.pytorch import Trainer

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import IALS, IALSNet
from lit_recs.models.ials import _to_torch, nnz_blocks, solve_side, solve_side_cg


def random_matrix(seed: int, rows: int = 9, cols: int = 7, density: float = 0.4) -> sp.csr_matrix:
    m = sp.random(rows, cols, density, format="csr", random_state=seed, dtype=np.float64)
    m.data[:] = 1.0
    return m


@pytest.mark.parametrize("chunk", [1, 4, 100])
def test_half_step_is_the_exact_minimiser(chunk: int) -> None:
    x = random_matrix(0)
    g = torch.Generator().manual_seed(0)
    other = torch.randn(7, 3, generator=g, dtype=torch.float64)
    reg = torch.rand(9, generator=g, dtype=torch.float64) + 0.1
    got = solve_side(_to_torch(x, torch.device("cpu")), other, 0.3, reg, chunk)
    dense = torch.from_numpy(x.toarray())
    for r in range(9):  # normal equations of row r's least squares, solved densely
        picked = other[dense[r] > 0]  # [n_r, D]
        a = picked.T @ picked + 0.3 * other.T @ other + reg[r] * torch.eye(3, dtype=torch.float64)
        torch.testing.assert_close(got[r], torch.linalg.solve(a, picked.sum(0)))


def cg_problem() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x = _to_torch(random_matrix(1, rows=30, cols=20, density=0.3), torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    other = torch.randn(20, 5, generator=g, dtype=torch.float64)  # [C, D]
    current = torch.randn(30, 5, generator=g, dtype=torch.float64)  # [R, D] the warm start
    reg = torch.rand(30, generator=g, dtype=torch.float64) + 0.1
    return x, other, current, reg


@pytest.mark.parametrize("max_nnz", [1, 7, 1000])
def test_cg_with_d_steps_is_the_exact_half_step(max_nnz: int) -> None:
    """CG on a D x D system is exact after D steps (in exact arithmetic): it equals the Cholesky
    half-step, whatever the blocks of rows; with fewer steps it is not there yet."""
    x, other, current, reg = cg_problem()
    exact = solve_side(x, other, 0.3, reg, 4)
    got, _ = solve_side_cg(x, other, current, 0.3, reg, steps=5, max_nnz=max_nnz)
    torch.testing.assert_close(got, exact)
    few, _ = solve_side_cg(x, other, current, 0.3, reg, steps=2, max_nnz=max_nnz)
    assert (few - exact).abs().max() > 1e-3


def test_cg_tracks_the_scores_it_is_given_and_returns() -> None:
    x, other, current, reg = cg_problem()
    rows = torch.repeat_interleave(torch.arange(30), x.crow_indices().diff())  # [nnz]
    start = (current[rows] * other[x.col_indices()]).sum(1)  # <w_r, o_c> at x's non-zeros
    plain, none = solve_side_cg(x, other, current, 0.3, reg, steps=3, max_nnz=7)
    given, tracked = solve_side_cg(x, other, current, 0.3, reg, steps=3, max_nnz=7, scores=start,
                                   track_scores=True)
    assert none is None
    torch.testing.assert_close(given, plain)
    torch.testing.assert_close(tracked, (plain[rows] * other[x.col_indices()]).sum(1))


def test_nnz_blocks_cover_the_rows_within_the_budget() -> None:
    x = _to_torch(random_matrix(2, rows=40, cols=9, density=0.5), torch.device("cpu"))
    counts = x.crow_indices().diff()
    for budget in (1, 5, 13, 10**6):
        blocks = nnz_blocks(x, budget)
        assert [b[0] for b in blocks] == [0] + [b[1] for b in blocks[:-1]] and blocks[-1][1] == 40
        assert all(stop - start == 1 or int(counts[start:stop].sum()) <= budget
                   for start, stop in blocks)


def small_model(solver: str, cg_steps: int = 3) -> IALS:
    torch.manual_seed(0)
    model = IALS(60, 45, dim=8, alpha0=0.1, reg=0.01, solver=solver, cg_steps=cg_steps)
    model.set_train_matrix(random_matrix(3, rows=60, cols=45, density=0.15))
    return model


def test_both_solvers_reach_the_same_objective() -> None:
    """From the same start: CG with D steps per half-step follows the exact solver sweep by sweep;
    with implicit's 3 steps it lags at first and reaches the same objective."""
    exact, full, three = small_model("cholesky"), small_model("cg", cg_steps=8), small_model("cg")
    for sweep in range(40):
        for model in (exact, full, three):
            model.sweep()
        assert float(full.loss()) == pytest.approx(float(exact.loss()), rel=1e-4), sweep
    assert float(three.loss()) == pytest.approx(float(exact.loss()), rel=1e-3)


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_popularity_order_inside_the_model_changes_nothing(solver: str) -> None:
    """`IALS` keeps the matrix with its items by popularity (and "cg" hands the user half-step's
    scores to the item half-step); the net on the matrix as given computes the same sweep."""
    model = small_model(solver)
    net = IALSNet(60, 45, dim=8, alpha0=0.1, reg=0.01, solver=solver)
    net.load_state_dict(model.net.state_dict())
    csr = random_matrix(3, rows=60, cols=45, density=0.15).astype(np.float32)
    x = [_to_torch(m, torch.device("cpu")) for m in (csr, csr.T.tocsr())]
    for _ in range(2):
        model.sweep()
        net.sweep(*x)
    torch.testing.assert_close(model.net.items, net.items)
    torch.testing.assert_close(model.loss(), net.objective(*x))


def fitted_model(dim: int = 8, solver: str = "cg") -> tuple[IALS, NegativeSamplingDataModule]:
    dm = NegativeSamplingDataModule(dataset="ml-100k", split="loo")
    torch.manual_seed(0)
    return IALS(dm.num_users, dm.num_items, dim=dim, alpha0=0.1, reg=0.01, solver=solver), dm


@pytest.mark.parametrize("solver", ["cg", "cholesky"])
def test_each_sweep_lowers_the_objective(solver: str) -> None:
    model, dm = fitted_model(solver=solver)
    model.attach_data(dm.model_inputs("fit"))
    losses = [float(model.loss())]
    for _ in range(4):
        model.sweep()
        losses.append(float(model.loss()))
    assert all(b <= a * (1 + 1e-5) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.8 * losses[0]


def test_fit_on_ml100k_beats_popularity(tmp_path) -> None:
    model, dm = fitted_model(dim=32)
    trainer = Trainer(max_epochs=4, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, default_root_dir=tmp_path,
                      use_distributed_sampler=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 1 and trainer.global_step == 4  # one sweep per epoch
    assert float(trainer.callback_metrics["val/hr@10"]) > 0.1  # Popularity: about 0.08


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="reg > 0"):
        IALS(3, 4, reg=0.0)
    with pytest.raises(ValueError, match="solver"):
        IALS(3, 4, solver="lu")
    with pytest.raises(ValueError, match="cg_steps >= 1"):
        IALS(3, 4, cg_steps=0)
