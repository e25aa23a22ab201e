"""TwoTower: ranking equals pair scores, every loss equals its formula, history encoders, logQ,
all_gather with gradients across two processes, hard-negative mining, embeddings from predict;
every weight in the plain-torch net, the config parsed by the CLI, clear errors."""

from __future__ import annotations

import functools
import io
from contextlib import redirect_stdout
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import yaml

from lit_recs import losses
from lit_recs.callbacks import HardNegativeMiner, TopKWriter
from lit_recs.cli import run
from lit_recs.data.tokens import token_items
from lit_recs.data.two_tower import TwoTowerDataModule
from lit_recs.models import TwoTower
from lit_recs.nn.towers import HistoryEncoder
from lit_recs.nn.two_tower import TowerConfig, TwoTowerNet

REPO = Path(__file__).resolve().parents[1]

FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age", "year"],
          "multi_hot": ["genres"], "text": ["title"], "text_buckets": 256}


@functools.lru_cache(maxsize=4)
def datamodule(history_length: int = 4, num_negatives: int = 3) -> TwoTowerDataModule:
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, batch_size=32,
                            eval_batch_size=16, history_length=history_length,
                            num_negatives=num_negatives, sampled_negatives=5)
    dm.features  # noqa: B018 (encode once)
    return dm


def model(dm: TwoTowerDataModule, loss=None, **tower) -> TwoTower:
    torch.manual_seed(0)
    tower.setdefault("history", "mean" if dm.history_length else "none")
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                 history_length=dm.history_length, loss=loss,
                 tower=TowerConfig(embedding_dim=8, dim=6, user_hidden=[10], item_hidden=[12],
                                   **tower))
    m.attach_data(dm.model_inputs("fit"))
    return m.double()


def train_batch(dm: TwoTowerDataModule):
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("history_length", [0, 4])
def test_sparse_embedding_table_has_the_dense_gradient(history_length: int) -> None:
    """tower: {sparse: true}: the feature table's gradient is sparse and equals the dense one; a
    LazyAdam step moves only the rows the batch read."""
    from lit_recs.optim import LazyAdam

    dm = datamodule(history_length)
    dense = model(dm)
    sparse = model(dm, sparse=True)
    sparse.optimizer = lambda p: LazyAdam(p, lr=0.01)
    batch = train_batch(dm)
    dense.compute_loss(batch).backward()
    sparse.compute_loss(batch).backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters()):
        assert b.grad.is_sparse == (name == "net.embedding"), name
        torch.testing.assert_close(b.grad.to_dense(), a.grad, msg=name)
    read = set(sparse.net.embedding.grad.coalesce().indices()[0].tolist())
    before = sparse.net.embedding.detach().clone()
    sparse.configure_optimizers().step()
    moved = (sparse.net.embedding != before).any(1)  # [V]
    assert 0 < moved.sum() < len(moved) and set(moved.nonzero()[:, 0].tolist()) <= read


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
                hist_ids = token_items(tokens).clamp(min=0).reshape(-1)
                hist = m.net.ranking_vectors(m.item_vectors(hist_ids))
                hist = hist.view(1, tokens.shape[1], -1)
            user = m.user_vectors(batch.users[b : b + 1], tokens, hist)  # [1, D]
            want = m.net.scores(user.expand(len(items), -1), m.item_vectors(items))  # [I]
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


PAIR_LOSSES = {"bce": losses.bce, "bpr": losses.bpr, "hinge": losses.hinge,
               "Hinge(0.3)": losses.Hinge(0.3), "sampled_softmax": losses.sampled_softmax}


@pytest.mark.parametrize("name", list(PAIR_LOSSES))
def test_sampled_losses_equal_their_formulas(name: str) -> None:
    dm = datamodule()
    m = model(dm, loss=PAIR_LOSSES[name])
    batch = train_batch(dm)
    items = torch.cat([batch.items[:, None], batch.negatives], 1)  # [B, 1 + N]
    hist = m.net.ranking_vectors(m.item_vectors(token_items(batch.history).clamp(min=0)
                                                .reshape(-1)))
    user = m.user_vectors(batch.users, batch.history, hist.view(*batch.history.shape, -1))
    s = torch.stack([m.net.scores(user, m.item_vectors(items[:, j]))
                     for j in range(items.shape[1])], 1)
    with torch.no_grad():
        m.net.bias.fill_(0.7)  # BCE fits it; the other losses cancel it
    got = m.compute_loss(batch)
    bias = m.net.bias
    want = {"bce": lambda: losses.bce(s[:, 0] + bias, s[:, 1:] + bias),
            "bpr": lambda: losses.bpr(s[:, 0], s[:, 1:]),
            "hinge": lambda: losses.hinge(s[:, 0], s[:, 1:]),
            "Hinge(0.3)": lambda: losses.hinge(s[:, 0], s[:, 1:], 0.3),
            "sampled_softmax": lambda: losses.sampled_softmax(s[:, 0], s[:, 1:])}[name]()
    assert torch.allclose(got, want, atol=1e-12)
    got.backward()
    assert m.net.embedding.grad is not None and m.net.embedding.grad.abs().sum() > 0


@pytest.mark.parametrize("logq", [False, True])
def test_in_batch_softmax_with_mixed_negatives_and_logq(logq: bool) -> None:
    dm = datamodule(num_negatives=2)
    m = model(dm, loss=losses.InBatchSoftmax(logq_correction=logq), temperature=0.2)
    batch = train_batch(dm)
    got = m.compute_loss(batch)
    hist = m.net.ranking_vectors(m.item_vectors(token_items(batch.history).clamp(min=0)
                                                .reshape(-1)))
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
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, history_length=3,
                 tower=TowerConfig(history="mean", embedding_dim=8, dim=8),
                 optimizer=functools.partial(torch.optim.Adam, lr=0.01))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(m, dm)
    metrics = trainer.validate(m, dm, verbose=False)[0]
    assert 0.6 < metrics["val/auc"] <= 1.0 and 0.0 < metrics["val/logloss"] < 0.69


GATHERED = losses.InBatchSoftmax(logq_correction=True, gather_across_devices=True)


def _gather_worker(rank: int, init: str, half: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.set_num_threads(1)
    dm = datamodule()
    m = model(dm, loss=GATHERED)
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
    whole = model(dm, loss=GATHERED)
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
        logq = losses.InBatchSoftmax(logq_correction=True)
        alone = model(dm, loss=logq).compute_loss(halves[0])
        together = model(dm, loss=logq).compute_loss(batch)
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
    m = model(dm, loss=losses.bpr).float()
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="add the callback lit_recs.callbacks.HardNegativeMiner"):
        trainer.fit(m, dm)


def test_hard_negative_training_refreshes_the_pool_every_epoch() -> None:
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS, num_negatives=2,
                            negative_distribution="hard", batch_size=4096, sampled_negatives=0)
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, loss=losses.bpr,
                 tower=TowerConfig(embedding_dim=8, dim=8))
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


def test_every_weight_lives_in_the_plain_torch_net() -> None:
    dm = datamodule()
    m = model(dm, history="transformer", loss=losses.Hinge(0.5))
    assert isinstance(m.net, TwoTowerNet) and not isinstance(m.net, L.LightningModule)
    names = [n for n, _ in m.named_parameters()]
    assert names and all(n.startswith("net.") for n in names), names
    assert {"net.embedding", "net.bias"} <= set(names)
    assert any(n.startswith("net.history_encoder.") for n in names)
    assert all(k.startswith("net.") for k in m.state_dict() if "metrics." not in k)
    # the net alone, from explicit slot tensors, gives the module's item vectors
    items = torch.arange(7)
    index, value, _ = m.side_slots("item", items)
    alone = m.net.item_vectors(index, value, m._item_slot_field, m.side_fields("item"))
    assert torch.equal(alone, m.item_vectors(items))


def test_checkpoint_hyperparameters_are_plain_values_that_rebuild_the_model() -> None:
    tower = TowerConfig(embedding_dim=4, dim=5, user_hidden=(7,), history="mean")
    m = TwoTower(3, 4, 10, 2, history_length=2, tower=tower, loss=losses.bpr)
    assert m.hparams["tower"] == asdict(tower) and isinstance(m.hparams["tower"], dict)
    assert "loss" not in m.hparams and m.tower.user_hidden == [7]
    rebuilt = TwoTower(**dict(m.hparams))  # as load_from_checkpoint does
    assert rebuilt.tower == tower and isinstance(rebuilt.loss, losses.InBatchSoftmax)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in m.state_dict().items()}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"tower": TowerConfig(history="mean")}, "needs the data's history_length >= 1"),
    ({"l2": 0.1}, "TwoTower has no l2 penalty"),
    ({"loss": "bpr"}, "loss must be a callable"),
    ({"dim": 8}, "dim -> tower: TowerConfig"),
    ({"logq_correction": True}, "InBatchSoftmax\\(logq_correction"),
    ({"margin": 0.5}, "lit_recs.losses.Hinge"),
    ({"tower": {"similarity": "euclid"}}, "similarity must be 'cosine' or 'dot'"),
    ({"tower": {"temperature": 0}}, "temperature must be > 0"),
    ({"tower": {"history": "lstm"}}, "history must be one of"),
    ({"tower": {"dim": 0}}, "sizes must be >= 1"),
    ({"tower": {"dropout": 1.0}}, "dropout must be in"),
])
def test_bad_arguments_fail_with_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        TwoTower(3, 4, 10, 2, **kwargs)


def print_config(*args: str) -> dict:
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stop:
        run(["fit", "--config", str(REPO / "conf" / "base.yaml"),
             "--data", str(REPO / "conf" / "data" / "ml-100k-two-tower.yaml"), *args,
             "--print_config"])
    assert stop.value.code in (0, None)
    return yaml.safe_load(out.getvalue())["model"]["init_args"]


def test_the_cli_parses_the_tower_mapping_and_the_loss_callables() -> None:
    tower_yaml = str(REPO / "conf" / "model" / "two_tower.yaml")
    args = print_config("--model", tower_yaml, "--model.init_args.tower.history", "gru")
    assert args["tower"]["dim"] == 128 and args["tower"]["user_hidden"] == [256]
    assert args["tower"]["history"] == "gru" and args["tower"]["temperature"] == 0.2
    assert args["loss"] == {"class_path": "lit_recs.losses.InBatchSoftmax",
                            "init_args": {"logq_correction": True,
                                          "gather_across_devices": False}}
    args = print_config("--model", tower_yaml,
                        "--model.init_args.loss.init_args.gather_across_devices", "true")
    assert args["loss"]["init_args"] == {"logq_correction": True, "gather_across_devices": True}
    args = print_config("--model", tower_yaml, "--model.init_args.loss", "lit_recs.losses.bpr")
    assert args["loss"] == "lit_recs.losses.bpr"
    args = print_config("--model", tower_yaml, "--model.init_args.loss",
                        "{class_path: lit_recs.losses.Hinge, init_args: {margin: 0.5}}")
    assert args["loss"] == {"class_path": "lit_recs.losses.Hinge", "init_args": {"margin": 0.5}}
    args = print_config("--model", str(REPO / "conf" / "model" / "dssm.yaml"))
    assert args["tower"]["user_hidden"] == [256, 128] and args.get("loss") is None


def test_the_cli_builds_the_config_and_the_loss_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump({"class_path": "lit_recs.models.TwoTower", "init_args": {
        "tower": {"dim": 12, "item_hidden": [16], "similarity": "dot"},
        "loss": {"class_path": "lit_recs.losses.Hinge", "init_args": {"margin": 0.25}}}}))
    # one batch of each stage; the test stage reloads the best checkpoint weights-only
    cli = run(["fit", "--config", str(REPO / "conf" / "base.yaml"),
               "--data", str(REPO / "conf" / "data" / "ml-100k-two-tower.yaml"),
               "--data.init_args.num_negatives", "2", "--model", str(config),
               "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
               "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1",
               "--trainer.default_root_dir", str(tmp_path / "run")])
    m = cli.model
    assert isinstance(m, TwoTower) and m.tower == TowerConfig(dim=12, item_hidden=[16],
                                                              similarity="dot")
    assert isinstance(m.loss, losses.Hinge) and m.loss.margin == 0.25 and not m.in_batch
    assert m.num_features == cli.datamodule.num_features


def test_the_item_tower_reads_the_attached_item_vectors(tmp_path: Path) -> None:
    base = datamodule()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(base.num_items, 5)).astype(np.float32)
    np.savez(tmp_path / "v.npz", item_id=base.data.item_ids.astype(str), vectors=vectors)
    dm = TwoTowerDataModule(dataset="ml-100k", split="random", **FIELDS,
                            item_vectors=str(tmp_path / "v.npz"))
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                 item_vector_dim=dm.item_vector_dim, tower=TowerConfig(dim=4))
    m.attach_data(dm.model_inputs("test"))
    assert not hasattr(m, "_p_positive")  # sampling probabilities: fit only
    with torch.no_grad():
        before = m.item_embeddings()  # [I, D]
        m._item_vectors[3] += 1.0
        after = m.item_embeddings()
    assert before.shape == (dm.num_items, 4)
    changed = (before - after).abs().sum(1) > 0
    assert changed[3] and int(changed.sum()) == 1
    wrong = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                     item_vector_dim=7)
    with pytest.raises(ValueError, match="item vectors are \\(1682, 5\\)"):
        wrong.attach_data(dm.model_inputs("test"))
