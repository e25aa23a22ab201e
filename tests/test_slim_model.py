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
    full = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0, tol=1e-6, max_iter=400)
    blocks = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0, tol=1e-6, max_iter=400,
                  block_size=7)
    full.fit_interactions(dm.train)
    blocks.fit_interactions(dm.train)
    assert len(blocks.fit_steps) == 9  # ceil(60 / 7)
    w = full.dense_weight()
    assert torch.all(w >= 0) and torch.all(torch.diagonal(w) == 0) and (w > 0).any()
    torch.testing.assert_close(blocks.dense_weight(), w, atol=1e-3, rtol=0)  # float32 solves


@pytest.mark.parametrize("l1", [0.0, 0.5, 3.0])
def test_screened_and_gram_solvers_agree(l1: float) -> None:
    dm = small_dm()
    fits = {}
    for solver in ("gram", "screened"):
        model = SLIM(dm.num_users, dm.num_items, l1=l1, l2=2.0, tol=1e-7, max_iter=3000,
                     solver=solver)
        model.fit_interactions(dm.train)
        assert model.fitted_solver == solver
        fits[solver] = model.dense_weight()
    w = fits["gram"]
    assert torch.all(fits["screened"] >= 0) and torch.all(torch.diagonal(fits["screened"]) == 0)
    assert (w > 0).any()
    torch.testing.assert_close(fits["screened"], w, atol=1e-3, rtol=0)


def test_auto_solver_screens_sparse_catalogues_and_uses_the_gram_matrix_on_dense_ones() -> None:
    sparse = NegativeSamplingDataModule(dataset=Synthetic(num_users=300, num_items=400,
                                                          interactions_per_user=5, seed=1))
    dense = small_dm()  # 120 users x 60 items, 12 each: every pair co-occurs often
    for dm, expected in ((sparse, "screened"), (dense, "gram")):
        model = SLIM(dm.num_users, dm.num_items, l1=1.0, l2=2.0)
        model.fit_interactions(dm.train)
        assert model.fitted_solver == expected


def test_sparse_weights_survive_a_checkpoint_and_score_like_the_dense_product() -> None:
    dm = small_dm()
    model = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0)
    model.fit_interactions(dm.train)
    assert model.weight.is_sparse and model.weight._nnz() > 0
    fresh = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0)  # empty W: a different nnz
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.dense_weight(), model.dense_weight())
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    expected = batch.seen_rows(model.num_items) @ model.dense_weight()  # [B, I]
    torch.testing.assert_close(fresh.score(batch), expected)


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(ValueError, match="solver"):
        SLIM(3, 4, solver="newton")


def test_bad_regularisation_is_refused() -> None:
    with pytest.raises(ValueError, match="l1 and l2"):
        SLIM(3, 4, l1=-1.0)


def fit_and_test(model, dm, epochs: int | None = None) -> dict[str, float]:
    trainer = Trainer(max_epochs=epochs or 5, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == (epochs or 1)  # closed-form SLIM: one epoch
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return {**metrics, **trainer.test(model, datamodule=dm, verbose=False)[0]}


def test_slim_logs_sparsity_and_its_weights_are_in_the_checkpoint() -> None:
    dm = small_dm()
    model = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0)
    metrics = fit_and_test(model, dm)
    nnz = float((model.dense_weight() > 0).sum())
    assert metrics["slim/nnz"] == nnz > 0
    assert metrics["slim/density"] == pytest.approx(nnz / dm.num_items**2)
    assert torch.equal(model.state_dict()["weight"].to_dense(), model.dense_weight())
    assert not list(model.parameters())  # solved, not optimised


def test_slim_beats_popularity_on_ml100k() -> None:
    dm = NegativeSamplingDataModule(dataset="ml-100k")
    pop = fit_and_test(Popularity(dm.num_users, dm.num_items), dm)
    slim = fit_and_test(SLIM(dm.num_users, dm.num_items, l1=3.77, l2=184.8), dm)
    assert slim["test/ndcg@10"] > pop["test/ndcg@10"] + 0.15
    assert 0 < slim["slim/density"] < 0.1  # the L1 term makes W sparse


def test_gradient_training_with_proximal_steps_reaches_the_fista_solution() -> None:
    from lit_recs.data.datamodules import UserRowsDataModule
    from lit_recs.models import SLIMGradient
    from lit_recs.nn.slim import fista_slim, lipschitz

    data = Synthetic(num_users=60, num_items=20, interactions_per_user=6, seed=2)
    dm = UserRowsDataModule(dataset=data, batch_size=1000, sampled_negatives=5)
    a = torch.as_tensor(dm.train.binary_csr().toarray(), dtype=torch.float64)
    g = a.T @ a
    l1, l2 = 0.5, 2.0
    target, _ = fista_slim(g, l2, l1, max_iter=5000, tol=1e-12)
    model = SLIMGradient(dm.num_users, dm.num_items, l1=l1, l2=l2).double()
    lr = 0.9 * dm.num_users / lipschitz(g, l2)  # step 1/L of the objective divided by U
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    batch = next(iter(dm.train_dataloader()))  # every user: full-batch proximal gradient
    batch.rows = batch.rows.double()
    for _ in range(1500):
        opt.zero_grad()
        model.compute_loss(batch).backward()
        opt.step()
        model.net.proximal_step(lr * l1 / dm.num_users)
    w = model.net.weight.detach()
    assert torch.all(w >= 0) and torch.all(torch.diagonal(w) == 0)
    torch.testing.assert_close(w, target, atol=1e-3, rtol=0)


def test_gradient_slim_keeps_w_sparse_during_training() -> None:
    from lit_recs.data.datamodules import UserRowsDataModule
    from lit_recs.models import SLIMGradient

    data = Synthetic(num_users=120, num_items=60, interactions_per_user=12, seed=4)
    dm = UserRowsDataModule(dataset=data, batch_size=32, sampled_negatives=20)
    model = SLIMGradient(dm.num_users, dm.num_items, l1=100.0, l2=2.0,
                         optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    metrics = fit_and_test(model, dm, epochs=3)
    w = model.net.weight.detach()
    assert torch.all(w >= 0) and torch.all(torch.diagonal(w) == 0)
    assert 0 < metrics["slim/nnz"] == float((w > 0).sum()) < w.numel() / 2


def test_predict_exports_each_items_top_neighbours_with_raw_ids(tmp_path) -> None:
    import numpy as np
    import polars as pl

    from lit_recs.callbacks import TopKWriter

    dm = small_dm()
    model = SLIM(dm.num_users, dm.num_items, l1=0.5, l2=2.0, predict_k=5)
    model.fit_interactions(dm.train)
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu",
                      callbacks=[TopKWriter()], default_root_dir=str(tmp_path))
    trainer.predict(model, datamodule=dm, return_predictions=False)
    nb = pl.read_parquet(tmp_path / "neighbours.parquet")
    assert nb.columns == ["item", "rank", "neighbour", "weight"]
    w = model.dense_weight().numpy()
    raw = dm.data.item_ids
    for j in range(dm.num_items):
        expected = [i for i in np.argsort(-w[:, j], kind="stable")[:5] if w[i, j] > 0]
        got = nb.filter(pl.col("item") == raw[j]).sort("rank")
        assert got["neighbour"].to_list() == raw[expected].tolist()
        np.testing.assert_allclose(got["weight"].to_numpy(), w[expected, j], rtol=1e-6)
    assert (nb["item"] != nb["neighbour"]).all() and (nb["weight"] > 0).all()
