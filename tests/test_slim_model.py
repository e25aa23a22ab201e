"""SLIM as a model: block-wise solving, constraints, checkpoint contents, quality on ML-100K."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import SLIM, Popularity


def small_dm() -> NegativeSamplingDataModule:
    data = Synthetic(num_users=120, num_items=60, interactions_per_user=12, seed=4)
    return NegativeSamplingDataModule(dataset=data, sampled_negatives=20)


def test_blocks_of_columns_give_the_full_solution() -> None:
    dm = small_dm()
    full = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0, tol=1e-9, max_iter=400)
    blocks = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0, tol=1e-9, max_iter=400,
                  block_size=7)
    full.fit_interactions(dm.train)
    blocks.fit_interactions(dm.train)
    assert len(blocks.fit_steps) == 9  # ceil(60 / 7)
    w = full.layer.weight
    assert torch.all(w >= 0) and torch.all(torch.diagonal(w) == 0) and (w > 0).any()
    torch.testing.assert_close(blocks.layer.weight, w, atol=1e-3, rtol=0)  # float32 solves


def test_bad_regularisation_is_refused() -> None:
    with pytest.raises(ValueError, match="l1 and l2"):
        SLIM(3, 4, l1=-1.0)


def fit_and_test(model, dm) -> dict[str, float]:
    trainer = Trainer(max_epochs=5, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 1
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {**metrics, **trainer.test(model, datamodule=dm, verbose=False)[0]}


def test_slim_logs_sparsity_and_its_weights_are_in_the_checkpoint() -> None:
    dm = small_dm()
    model = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0)
    metrics = fit_and_test(model, dm)
    nnz = float((model.layer.weight > 0).sum())
    assert metrics["slim/nnz"] == nnz > 0
    assert metrics["slim/density"] == pytest.approx(nnz / dm.num_items**2)
    assert torch.equal(model.state_dict()["layer.weight"], model.layer.weight)
    assert not model.layer.weight.requires_grad  # solved, not optimised


def test_slim_beats_popularity_on_ml100k() -> None:
    dm = NegativeSamplingDataModule(dataset="ml-100k")
    pop = fit_and_test(Popularity(dm.num_users, dm.num_items), dm)
    slim = fit_and_test(SLIM(dm.num_users, dm.num_items, l1=3.77, l2=184.8), dm)
    assert slim["test/ndcg@10"] > pop["test/ndcg@10"] + 0.15
    assert 0 < slim["slim/density"] < 0.1  # the L1 term makes W sparse
