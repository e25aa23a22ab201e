"""TwoTower: ranking equals pair scores, every loss equals its formula, history encoders, logQ,
all_gather with gradients across two processes, hard-negative mining, embeddings from predict."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lit_recs import losses
from lit_recs.callbacks import HardNegativeMiner, TopKWriter
from lit_recs.data.two_tower import TwoTowerDataModule
from lit_recs.models import TwoTower
from lit_recs.nn.towers import HistoryEncoder

FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age", "year"],
          "multi_hot": ["genres"], "text": ["title"], "text_buckets": 256}


@functools.lru_cache(maxsize=4)
def datamodule(history_length: int = 4, num_negatives: int = 3) -> TwoTowerDataModule:
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, batch_size=32,
                            eval_batch_size=16, history_length=history_length,
                            num_negatives=num_negatives, sampled_negatives=5)
    dm.features  # noqa: B018 (encode once)
    return dm


def model(dm: TwoTowerDataModule, **kwargs) -> TwoTower:
    torch.manual_seed(0)
    kwargs.setdefault("history", "mean" if dm.history_length else "none")
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                 history_length=dm.history_length, embedding_dim=8, dim=6, user_hidden=[10],
                 item_hidden=[12], **kwargs)
    m.attach_features(dm.features)
    m.attach_sampling_probabilities(**dm.sampling_probabilities())
    return m.double()


def train_batch(dm: TwoTowerDataModule):
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("history", ["none", "mean", "gru", "transformer"])
@pytest.mark.parametrize("similarity", ["cosine", "dot"])
def test_ranking_scores_equal_pair_scores(history: str, similarity: str) -> None:
    dm = datamodule(4 if history != "none" else 0)
    m = model(dm, history=history, similarity=similarity, temperature=0.5).eval()
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        full = m.score(batch)  # [B, I]
        for b in (0, 5, 11):
            items = torch.arange(dm.num_items)
            tokens = None if batch.sequences is None else batch.sequences[b : b + 1]
            hist = None
            if tokens is not None:
                hist = m._ranking_vectors(m.item_vectors((tokens - 1).clamp(min=0).reshape(-1)))
                hist = hist.view(1, tokens.shape[1], -1)
            user = m.user_vectors(batch.users[b : b + 1], tokens, hist)  # [1, D]
            want = m.scores(user.expand(len(items), -1), m.item_vectors(items))  # [I]
            assert torch.allclose(full[b], want, atol=1e-10)
        cand = batch.sampled  # [B, N]
        assert torch.allclose(m.score_candidates(batch, cand), full.gather(1, cand), atol=1e-12)


def test_history_encoders_read_only_the_real_items() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    keep = torch.tensor([[False, False, True, True, True], [False] * 5, [True] * 5])
    mean = HistoryEncoder("mean", 4, 5).double()
    assert torch.allclose(mean(x, keep)[0], x[0, 2:].mean(0))
    assert mean(x, keep)[1].eq(0).all()
    gru = HistoryEncoder("gru", 4, 5).double()
    out = gru(x, keep)
    _, h = gru.gru(x[0:1, 2:])  # the real items only, in order
    assert torch.allclose(out[0], h[0, 0]) and out[1].eq(0).all()
    _, h_full = gru.gru(x[2:3])
    assert torch.allclose(out[2], h_full[0, 0])
    tf = HistoryEncoder("transformer", 4, 5, layers=1, heads=2).double().eval()
    out = tf(x, keep)
    assert torch.isfinite(out).all() and out[1].eq(0).all()
    changed = x.clone()
    changed[0, :2] = 100.0  # padding positions of row 0: no effect
    assert torch.allclose(tf(changed, keep)[0], out[0])


@pytest.mark.parametrize("loss", ["bce", "bpr", "hinge", "sampled_softmax"])
def test_sampled_losses_equal_their_formulas(loss: str) -> None:
    dm = datamodule()
    m = model(dm, loss=loss, margin=0.3)
    batch = train_batch(dm)
    got = m.compute_loss(batch)
    items = torch.cat([batch.items[:, None], batch.negatives], 1)  # [B, 1 + N]
    hist = m._ranking_vectors(m.item_vectors((batch.history - 1).clamp(min=0).reshape(-1)))
    user = m.user_vectors(batch.users, batch.history, hist.view(*batch.history.shape, -1))
    s = torch.stack([m.scores(user, m.item_vectors(items[:, j])) for j in range(items.shape[1])], 1)
    with torch.no_grad():
        m.bias.fill_(0.7)  # BCE fits it; the other losses cancel it
    got = m.compute_loss(batch)
    want = {"bce": lambda: losses.bce(s[:, 0] + m.bias, s[:, 1:] + m.bias),
            "bpr": lambda: losses.bpr(s[:, 0], s[:, 1:]),
            "hinge": lambda: losses.hinge(s[:, 0], s[:, 1:], 0.3),
            "sampled_softmax": lambda: losses.sampled_softmax(s[:, 0], s[:, 1:])}[loss]()
    assert torch.allclose(got, want, atol=1e-12)
    got.backward()
    assert m.embedding.grad is not None and m.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("logq", [False, True])
def test_in_batch_softmax_with_mixed_negatives_and_logq(logq: bool) -> None:
    dm = datamodule(num_negatives=2)
    m = model(dm, logq_correction=logq, temperature=0.2)
    batch = train_batch(dm)
    got = m.compute_loss(batch)
    hist = m._ranking_vectors(m.item_vectors((batch.history - 1).clamp(min=0).reshape(-1)))
    user = F.normalize(m.user_vectors(batch.users, batch.history,
                                      hist.view(*batch.history.shape, -1)), dim=-1)
    ids = torch.cat([batch.items, batch.negatives.reshape(-1)])  # B positives, then B N extras
    cand = F.normalize(m.item_vectors(ids), dim=-1)
    logits = user @ cand.T / 0.2
    probs = dm.sampling_probabilities()
    if logq:
        expected = 32 * probs["positives"][ids.numpy()] + 64 * probs["negatives"][ids.numpy()]
        logits = logits - torch.from_numpy(np.log(expected))[None, :]
    total = 0.0
    for b in range(len(batch)):
        keep = [c for c in range(len(ids)) if c == b or ids[c] != batch.items[b]]
        total += -(logits[b, b] - torch.logsumexp(logits[b, keep], 0))
    assert torch.allclose(got, total / len(batch), atol=1e-10)


def test_ctr_scores_are_similarity_plus_bias_and_train() -> None:
    dm = TwoTowerDataModule(dataset="ml-100k", task="ctr", split="global_random",
                            categorical=["user_id", "item_id"], context=["hour", "weekday"],
                            history_length=3, batch_size=1024, eval_batch_size=10_000)
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, history="mean",
                 history_length=3, embedding_dim=8, dim=8,
                 optimizer=functools.partial(torch.optim.Adam, lr=0.01))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, dm)
    metrics = trainer.validate(m, dm, verbose=False)[0]
    assert 0.6 < metrics["val/auc"] <= 1.0 and 0.0 < metrics["val/logloss"] < 0.69


def _gather_worker(rank: int, init: str, half: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    dm = datamodule()
    m = model(dm, gather_negatives_across_devices=True, logq_correction=True)
    loss = m.compute_loss(half[rank])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    for g in grads.values():
        dist.all_reduce(g)
        g /= 2  # DDP averages gradients over processes
    loss_sum = loss.detach().clone()
    dist.all_reduce(loss_sum)
    if rank == 0:
        torch.save({"loss": loss_sum / 2, "grads": grads}, out)
    dist.destroy_process_group()


def test_gathered_in_batch_softmax_equals_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    dm = datamodule()
    batch = train_batch(dm)  # 32 rows, 3 negatives each
    whole = model(dm, gather_negatives_across_devices=True, logq_correction=True)
    loss = whole.compute_loss(batch)  # one process: gathering is a no-op
    loss.backward()
    halves = {r: type(batch)(users=batch.users[r * 16 : (r + 1) * 16],
                             items=batch.items[r * 16 : (r + 1) * 16],
                             history=batch.history[r * 16 : (r + 1) * 16],
                             negatives=batch.negatives[r * 16 : (r + 1) * 16])
              for r in range(2)}
    out = str(tmp_path / "two.pt")
    mp.spawn(_gather_worker, args=(f"file://{tmp_path}/store", halves, out), nprocs=2)
    two = torch.load(out, weights_only=True)
    assert float(two["loss"]) == pytest.approx(float(loss.detach()), rel=1e-10)
    grads = {n: p.grad for n, p in whole.named_parameters() if p.grad is not None}
    assert set(two["grads"]) == set(grads)
    for name, g in grads.items():
        assert torch.allclose(two["grads"][name], g, atol=1e-12), name
    # without gathering each process would see half the candidates: a different loss
    with torch.no_grad():
        alone = model(dm, logq_correction=True).compute_loss(halves[0])
        together = model(dm, logq_correction=True).compute_loss(batch)
    assert abs(float(alone) - float(together)) > 1e-3


def test_hard_negative_miner_pools_the_top_scored_non_positives() -> None:
    dm = datamodule()
    m = model(dm).float().eval()
    m.attach_features(dm.features)
    pool = HardNegativeMiner(pool_size=7, batch_size=100).mine(m, dm, world_size=1, rank=0)
    assert pool.shape == (dm.num_users, 7)
    train = dm.train.binary_csr()
    with torch.no_grad():
        for user in (0, 400, 942):
            batch = dm.scoring_dataset()[np.array([user])]
            scores = m.score(batch)[0].numpy()
            scores[train[user].indices] = -np.inf
            assert set(pool[user]) == set(np.argsort(-scores)[:7])
    skipped = HardNegativeMiner(pool_size=7, skip_top=3).mine(m, dm, world_size=1, rank=0)
    with torch.no_grad():
        for user in (0, 942):
            scores = m.score(dm.scoring_dataset()[np.array([user])])[0].numpy()
            scores[train[user].indices] = -np.inf
            assert set(skipped[user]) == set(np.argsort(-scores)[3:10])
    hard = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, num_negatives=5,
                              negative_distribution="hard", batch_size=256)
    hard.set_hard_negatives(pool)
    sampler = hard.negative_sampler("hard", 1.0)
    users = np.arange(dm.num_users)
    neg = sampler.sample(users, 5, np.random.default_rng(0))
    assert all(set(neg[u]) <= set(pool[u]) for u in users)


def test_hard_negatives_need_the_miner_callback() -> None:
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, num_negatives=2,
                            negative_distribution="hard")
    m = model(dm, loss="bpr").float()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="add the callback lit_recs.callbacks.HardNegativeMiner"):
        trainer.fit(m, dm)


def test_hard_negative_training_refreshes_the_pool_every_epoch() -> None:
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, num_negatives=2,
                            negative_distribution="hard", batch_size=4096, sampled_negatives=0)
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, loss="bpr",
                 embedding_dim=8, dim=8)
    miner = HardNegativeMiner(pool_size=20)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, callbacks=[miner], limit_val_batches=0)
    trainer.fit(m, dm)
    assert dm.hard_negatives.shape == (dm.num_users, 20)
    assert dm._train_sampler.hard_pool is dm.hard_negatives
    train = set(zip(dm.train.users.tolist(), dm.train.items.tolist()))
    users = np.repeat(np.arange(dm.num_users), 20)
    assert not set(zip(users.tolist(), dm.hard_negatives.reshape(-1).tolist())) & train


@pytest.mark.parametrize("fmt", ["parquet", "npz"])
def test_predict_writes_embeddings_whose_dot_products_are_the_scores(tmp_path: Path,
                                                                     fmt: str) -> None:
    dm = datamodule()
    m = model(dm).float()
    writer = TopKWriter(embeddings=fmt)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path),
                        callbacks=[writer])
    trainer.predict(m, dm, return_predictions=False)
    top = pl.read_parquet(tmp_path / "predictions.parquet")
    if fmt == "npz":
        users = dict(np.load(tmp_path / "user_embeddings.npz"))
        items = dict(np.load(tmp_path / "item_embeddings.npz"))
    else:
        u, i = pl.read_parquet(tmp_path / "user_embeddings.parquet"), \
            pl.read_parquet(tmp_path / "item_embeddings.parquet")
        users = {"ids": u["user"].to_numpy(), "vectors": np.stack(u["vector"].to_numpy())}
        items = {"ids": i["item"].to_numpy(), "vectors": np.stack(i["vector"].to_numpy())}
    assert users["vectors"].shape == (dm.num_users, 6) and items["vectors"].shape == (dm.num_items, 6)
    user_row = {str(x): r for r, x in enumerate(users["ids"])}
    item_row = {str(x): r for r, x in enumerate(items["ids"])}
    for rec in top.head(50).iter_rows(named=True):
        dot = users["vectors"][user_row[str(rec["user"])]] @ \
            items["vectors"][item_row[str(rec["item"])]]
        assert dot == pytest.approx(rec["score"], rel=1e-4, abs=1e-5)
