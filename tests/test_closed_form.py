"""EASE and ItemKNN against plain numpy references; closed-form fitting through the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import EASE, ItemKNN, Popularity
from lit_recs.models.ease import ease_weights
from lit_recs.models.itemknn import knn_similarity


def random_binary(users: int = 60, items: int = 25, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((users, items)) < 0.2).astype(np.float64)


@pytest.mark.parametrize("l2", [1.0, 30.0])
def test_ease_solves_its_constrained_ridge_problem(l2: float) -> None:
    x = random_binary()
    b = ease_weights(torch.as_tensor(x.T @ x), l2).numpy()
    assert np.all(np.diag(b) == 0)
    # column j of B is the ridge regression of x_j on the other columns (diag(B) = 0 constraint)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        a = x[:, others]
        ref = np.linalg.solve(a.T @ a + l2 * np.eye(len(others)), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], ref, atol=1e-8)


def test_itemknn_keeps_the_k_most_similar_items_per_column() -> None:
    x = random_binary(seed=1)
    k, shrink = 4, 2.0
    sim = knn_similarity(torch.as_tensor(x.T @ x), k, shrink).numpy()
    n = x.shape[1]
    for j in range(n):
        full = np.array([
            0.0 if i == j else x[:, i] @ x[:, j]
            / (np.linalg.norm(x[:, i]) * np.linalg.norm(x[:, j]) + shrink)
            for i in range(n)
        ])
        kept = np.flatnonzero(sim[:, j] != 0)
        assert len(kept) <= k
        np.testing.assert_allclose(sim[kept, j], full[kept], atol=1e-10)
        if len(kept):  # nothing left out scores above what was kept
            assert full[np.setdiff1d(np.arange(n), kept)].max(initial=0) <= sim[kept, j].min()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="l2 > 0"):
        EASE(3, 4, l2=0.0)
    with pytest.raises(ValueError, match="k must be"):
        ItemKNN(3, 4, k=0)


def fit_and_test(model_cls, dm, **kwargs) -> tuple[object, dict]:
    model = model_cls(dm.num_users, dm.num_items, **kwargs)
    trainer = Trainer(max_epochs=5, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 1, "closed-form models fit in one epoch"
    return model, trainer.test(model, datamodule=dm, verbose=False)[0]


def test_ease_scores_are_the_known_history_times_b() -> None:
    data = Synthetic(num_users=80, num_items=120, interactions_per_user=15, seed=3)
    dm = NegativeSamplingDataModule(dataset=data, eval_batch_size=16, sampled_negatives=20)
    model, _ = fit_and_test(EASE, dm, l2=10.0)
    x = dm.train.binary_csr().toarray()
    np.testing.assert_allclose(model.weights.numpy(),
                               ease_weights(torch.as_tensor(x.T @ x), 10.0).float().numpy(),
                               atol=1e-5)
    batch = dm.eval_dataset("test")[np.arange(10)]
    history = np.zeros((10, dm.num_items))
    history[batch.seen[0].numpy(), batch.seen[1].numpy()] = 1.0  # train + validation items
    np.testing.assert_allclose(model.score(batch).numpy(), history @ model.weights.numpy(),
                               atol=1e-5)


def test_closed_form_models_beat_popularity_on_ml100k() -> None:
    dm = NegativeSamplingDataModule(dataset="ml-100k")
    _, pop = fit_and_test(Popularity, dm)
    _, ease = fit_and_test(EASE, dm, l2=400.0)
    _, knn = fit_and_test(ItemKNN, dm, k=200)
    assert ease["test/ndcg@10"] > pop["test/ndcg@10"] + 0.15
    assert knn["test/ndcg@10"] > pop["test/ndcg@10"] + 0.1
