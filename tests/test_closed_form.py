"""EASE and ItemKNN against plain numpy references; closed-form fitting through the Trainer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from lightning.pytorch import Trainer

from lit_recs import runtime
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.losses import full_ce
from lit_recs.models import EASE, SLIM, ItemKNN, Popularity, SLIMGradient, itemknn
from lit_recs.models.ease import ease_weights
from lit_recs.models.itemknn import knn_similarity
from lit_recs.nn.item_item import by_column, history_scorer, history_scores, index_scorer
from lit_recs.nn.slim_screened import gram_nnz_bound


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


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_itemknn_keeps_the_k_most_similar_items_per_column(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = random_binary(seed=1)
    k, shrink = 4, 2.0
    monkeypatch.setattr(itemknn, "SPARSE_BELOW", 0.0 if path == "dense" else 2.0)
    sim = knn_similarity(sp.csr_matrix(x.T @ x), k, shrink).to_dense().numpy()
    n = x.shape[1]
    for j in range(n):
        full = np.array([
            0.0 if i == j else x[:, i] @ x[:, j]
            / (np.linalg.norm(x[:, i]) * np.linalg.norm(x[:, j]) + shrink)
            for i in range(n)
        ])
        kept = np.flatnonzero(sim[:, j] != 0)
        assert len(kept) <= k
        np.testing.assert_allclose(sim[kept, j], full[kept], rtol=1e-6)
        if len(kept):  # nothing left out scores above what was kept (float32 ties aside)
            left_out = full[np.setdiff1d(np.arange(n), kept)].max(initial=0)
            assert left_out <= sim[kept, j].min() * (1 + 1e-6)


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


def test_itemknn_blocks_of_columns_give_the_whole_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    g = sp.csr_matrix(random_binary(items=40, seed=2).T @ random_binary(items=40, seed=2))
    whole = knn_similarity(g, 5, 1.0).to_dense()
    monkeypatch.setattr(itemknn, "BLOCK_CELLS", 40 * 3)  # 3 columns per block, 14 blocks
    assert torch.equal(knn_similarity(g, 5, 1.0).to_dense(), whole)
    monkeypatch.setattr(itemknn, "SPARSE_BELOW", 2.0)  # the sparse path, whole and in blocks
    sparse_whole = knn_similarity(g, 5, 1.0).to_dense()
    monkeypatch.setattr(itemknn, "BLOCK_NONZEROS", 50)  # a few columns per block
    assert torch.equal(knn_similarity(g, 5, 1.0).to_dense(), sparse_whole)


@pytest.mark.parametrize("below", [0.0, 2.0])  # the dense path, the sparse path
def test_itemknn_similarity_is_built_coalesced(monkeypatch: pytest.MonkeyPatch, below) -> None:
    """knn_similarity orders its entries by (row, column) itself and marks them coalesced: the
    order must be the one coalesce() would give."""
    x = random_binary(items=50, seed=5)
    monkeypatch.setattr(itemknn, "SPARSE_BELOW", below)
    sim = knn_similarity(sp.csr_matrix(x.T @ x), 4, 0.5)
    assert sim.is_coalesced() and sim._nnz() > 50
    again = torch.sparse_coo_tensor(sim.indices(), sim.values(), sim.shape).coalesce()
    assert torch.equal(again.indices(), sim.indices())
    assert torch.equal(again.values(), sim.values())


def test_itemknn_sparse_path_equals_the_dense_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same cosines, bit for bit: every one when k keeps them all; with a cut, the same kept
    values per column (which of several equal cosines is kept may differ)."""
    x = random_binary(items=60, seed=4)
    g = sp.csr_matrix(x.T @ x)
    paths = {}
    for name, below in (("dense", 0.0), ("sparse", 2.0)):
        monkeypatch.setattr(itemknn, "SPARSE_BELOW", below)
        paths[name] = (knn_similarity(g, 59, 1.5).to_dense(), knn_similarity(g, 3, 1.5).to_dense())
    assert torch.equal(paths["dense"][0], paths["sparse"][0])
    assert paths["dense"][0].count_nonzero() > 60 * 3
    dense_cut, sparse_cut = paths["dense"][1], paths["sparse"][1]
    assert torch.equal(dense_cut.sort(dim=0).values, sparse_cut.sort(dim=0).values)


@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_scores_from_the_sparse_history_equal_the_dense_product(layout: str) -> None:
    gen = torch.Generator().manual_seed(0)
    history = torch.rand(7, 30, generator=gen) < 0.2  # [B, I]
    history[3] = False  # a user with no known item
    w = torch.rand(30, 30, generator=gen) * (torch.rand(30, 30, generator=gen) < 0.3)
    seen = torch.stack(history.nonzero(as_tuple=True))  # [2, S] sorted by row, then item
    weights = w if layout == "dense" else by_column(w.to_sparse())
    got = history_scores(seen, 7, weights)
    assert got.layout == torch.strided and got.shape == (7, 30)
    torch.testing.assert_close(got, history.float() @ w)
    scorers = [history_scorer(seen, 7, weights)]  # slices of the catalogue, as evaluation asks
    if layout == "sparse":
        scorers.append(index_scorer(seen, 7, weights))  # the accelerators' path, here on the CPU
    for scorer in scorers:
        for items in (slice(0, 11), slice(11, 29), slice(29, 30), slice(30, 30)):
            torch.testing.assert_close(scorer(items), (history.float() @ w)[:, items])


def test_ease_refuses_a_catalogue_beyond_memory_before_allocating(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = Synthetic(num_users=50, num_items=60, interactions_per_user=10, seed=4)
    dm = NegativeSamplingDataModule(dataset=data, sampled_negatives=0)
    monkeypatch.setattr(runtime, "available_memory", lambda: 30_000)  # bytes
    model = EASE(dm.num_users, dm.num_items, l2=10.0)
    with pytest.raises(ValueError, match=r"EASE needs about .* GiB \(3 dense float32 \[I, I\] "
                                         r"matrices at I = 60\).* Use SLIM"):
        fit_and_test(EASE, dm, l2=10.0)
    assert model.weights.numel() == 0  # building the model allocated nothing


def test_slim_gradient_refuses_a_dense_w_beyond_memory_before_allocating(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "available_memory", lambda: 2**30)
    with pytest.raises(ValueError, match=r"SLIMGradient needs about 14901\.2 GiB .*I = 1,000,000"
                                         r"\).* Use SLIM"):
        SLIMGradient(10, 1_000_000)  # would be 4 TB for W alone


def test_full_softmax_refuses_logits_beyond_memory_and_names_the_sampled_softmax(
        monkeypatch: pytest.MonkeyPatch) -> None:
    query, table = torch.randn(4096, 4), torch.randn(100_000, 4)  # logits: 1.5 GiB x 3
    labels = torch.randint(0, 100_000, (4096,))
    monkeypatch.setattr(runtime, "available_memory", lambda: 2**30)
    with pytest.raises(ValueError, match=r"full_ce needs about 4\.6 GiB .*M = 4,096 positions, "
                                         r"I = 100,000 items.*SampledCE"):
        full_ce(query, table, torch.zeros(100_000), labels)
    monkeypatch.setattr(runtime, "available_memory", lambda: 2**40)
    assert torch.isfinite(full_ce(query[:8], table, torch.zeros(100_000), labels[:8]))


@pytest.mark.parametrize("cls", [SLIM, ItemKNN])
def test_sparse_gram_models_refuse_before_building_a_gram_beyond_memory(
        cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    data = Synthetic(num_users=50, num_items=60, interactions_per_user=10, seed=4)
    dm = NegativeSamplingDataModule(dataset=data, sampled_negatives=0)
    x = dm.splits.train.binary_csr()
    bound = min(60**2, int((np.diff(x.indptr) ** 2).sum()))
    assert gram_nnz_bound(x) == bound
    monkeypatch.setattr(runtime, "available_memory", lambda: 1000)  # bytes
    with pytest.raises(ValueError, match=rf"{cls.__name__} needs about .* GiB \(the sparse "
                                         rf"item-item Gram matrix, up to {bound:,} non-zeros"):
        cls(dm.num_users, dm.num_items).fit_interactions(dm.splits.train)


def test_fitted_item_item_models_reload_from_their_checkpoints(tmp_path) -> None:
    data = Synthetic(num_users=60, num_items=50, interactions_per_user=10, seed=6)
    dm = NegativeSamplingDataModule(dataset=data, sampled_negatives=0)
    for cls, kwargs in ((EASE, {"l2": 10.0}), (ItemKNN, {"k": 5})):
        model = cls(dm.num_users, dm.num_items, **kwargs)
        trainer = Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                          default_root_dir=tmp_path / cls.__name__, use_distributed_sampler=False)
        trainer.fit(model, datamodule=dm)
        fitted = trainer.test(model, datamodule=dm, verbose=False)[0]
        fresh = cls(dm.num_users, dm.num_items, **kwargs)
        path = trainer.checkpoint_callback.best_model_path
        loaded = trainer.test(fresh, datamodule=dm, ckpt_path=path, verbose=False)[0]
        assert loaded == fitted and loaded["test/ndcg@10"] > 0
