"""iALS: exact half-steps against a dense brute-force solve, a monotone objective, ML-100K quality."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from lightning.pytorch import Trainer

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import IALS
from lit_recs.models.ials import _to_torch, solve_side


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


def fitted_model(dim: int = 8) -> tuple[IALS, NegativeSamplingDataModule]:
    dm = NegativeSamplingDataModule(dataset="ml-100k", split="loo")
    torch.manual_seed(0)
    return IALS(dm.num_users, dm.num_items, dim=dim, alpha0=0.1, reg=0.01), dm


def test_each_sweep_lowers_the_objective() -> None:
    model, dm = fitted_model()
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
