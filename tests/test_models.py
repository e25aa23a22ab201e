"""Models: evaluation through the Trainer equals a brute-force evaluation, training, predict, hooks.

MF weights are drawn on a dyadic grid (multiples of 1/2 or 1/16) so that every score is exact in
float32 whatever the batch shape: the brute force below then sees the very same scores, ties included.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lit_recs import losses
from lit_recs.data.batches import PairBatch
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import MF, MFNet, Popularity

KS = (5, 10, 20)
NAMES = ("hr", "recall", "ndcg", "mrr", "precision")


def make_dm(**kwargs) -> NegativeSamplingDataModule:
    args = {"dataset": Synthetic(num_users=100, num_items=220, interactions_per_user=25, seed=7),
            "seed": 3, "batch_size": 128, "eval_batch_size": 32, "sampled_negatives": 99, **kwargs}
    return NegativeSamplingDataModule(**args)


def make_trainer(**kwargs) -> Trainer:
    return Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False,
                   enable_model_summary=False, use_distributed_sampler=False, accelerator="cpu",
                   devices=1, **kwargs)


def grid_mf(dm, step: float = 1 / 16, dim: int = 16, seed: int = 0, **kwargs) -> MF:
    """MF with random weights on a grid of `step` in [-1, 1], biases included (exact scores)."""
    model = MF(dm.num_users, dm.num_items, dim=dim, top_k=KS, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    levels = round(1 / step)
    with torch.no_grad():
        for p in model.net.parameters():
            p.copy_(torch.randint(-levels, levels + 1, p.shape, generator=gen) * step)
    return model


def full_scores(model: MF) -> np.ndarray:
    with torch.no_grad():
        return model.net.score_all(torch.arange(model.num_users)).double().numpy()  # [U, I]


def per_user(inter, num_users: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(num_users)]
    for u, i in zip(inter.users.tolist(), inter.items.tolist()):
        sets[u].add(i)
    return sets


def stage_sets(dm, stage: str) -> tuple[list[set[int]], list[set[int]]]:
    n = dm.num_users
    train, val, test = (per_user(p, n) for p in (dm.splits.train, dm.splits.val, dm.splits.test))
    if stage == "val":
        return train, val
    return [a | b for a, b in zip(train, val)], test


def brute_force(scores, seen, targets, mask_seen=True, sampled=None) -> dict[str, float]:
    """Metrics by the letter of lit_recs.metrics' docstring, one user and one target at a time."""
    sums: Counter = Counter()
    counted = 0
    for u, tgt in enumerate(targets):
        if not tgt:
            continue
        counted += 1
        s = scores[u].copy()
        if mask_seen:
            for j in seen[u] - tgt:
                s[j] = -np.inf
        if sampled is not None:
            keep = tgt | set(sampled[u].tolist())
            for j in range(len(s)):
                if j not in keep:
                    s[j] = -np.inf
        others = np.array([j not in tgt for j in range(len(s))])
        ordered = sorted(tgt, key=lambda t: (-s[t], t))  # targets: score desc, then item asc
        positions = [int((s[others] >= s[t]).sum()) + r for r, t in enumerate(ordered)]
        for k in KS:
            hits = [p for p in positions if p < k]
            ideal = sum(1 / np.log2(i + 2) for i in range(min(len(tgt), k)))
            sums[f"hr@{k}"] += float(bool(hits))
            sums[f"recall@{k}"] += len(hits) / len(tgt)
            sums[f"precision@{k}"] += len(hits) / k
            sums[f"ndcg@{k}"] += sum(1 / np.log2(p + 2) for p in hits) / ideal
            sums[f"mrr@{k}"] += 1 / (min(positions) + 1) if min(positions) < k else 0.0
    return {key: value / counted for key, value in sums.items()}


def expected_metrics(model, dm, stage: str, mask_seen: bool = True) -> dict[str, float]:
    scores = full_scores(model)
    seen, targets = stage_sets(dm, stage)
    out = {f"{stage}/{k}": v for k, v in brute_force(scores, seen, targets, mask_seen).items()}
    sampled = dm.eval_dataset(stage).sampled
    if sampled is not None:
        n = sampled.shape[1]
        extra = brute_force(scores, seen, targets, mask_seen, sampled)
        out.update({f"{stage}/sampled{n}/{k}": v for k, v in extra.items()})
    return out


def run_eval(model, dm, stage: str) -> dict[str, float]:
    trainer = make_trainer()
    run = trainer.validate if stage == "val" else trainer.test
    return {k: float(v) for k, v in run(model, datamodule=dm, verbose=False)[0].items()}


# ------------------------------------------------------------------ evaluation vs brute force
@pytest.mark.parametrize("step,dim", [(1 / 16, 16), (1 / 2, 4)], ids=["fine", "many-ties"])
@pytest.mark.parametrize("stage", ["val", "test"])
@pytest.mark.parametrize("how", ["random", "loo"])
def test_evaluation_equals_brute_force(how, stage, step, dim):
    dm = make_dm(split=how)
    model = grid_mf(dm, step, dim)
    got = run_eval(model, dm, stage)
    want = expected_metrics(model, dm, stage)
    assert len(want) == 2 * len(NAMES) * len(KS)
    for key in (f"{stage}/ndcg@10", f"{stage}/hr@10", f"{stage}/mrr@5", f"{stage}/recall@20",
                f"{stage}/sampled99/ndcg@10", f"{stage}/sampled99/hr@5"):
        assert key in got
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    # random: several targets per user occur (multi-target path); loo: exactly one each
    most = max(len(t) for t in stage_sets(dm, stage)[1])
    assert most == 1 if how == "loo" else most >= 2
    # the random model is neither perfect nor useless under the sampled protocol
    assert 0.0 < got[f"{stage}/sampled99/hr@10"] < 1.0


@pytest.mark.parametrize("how", ["random", "loo"])
def test_constant_model_gets_no_credit_from_ties(how):
    dm = make_dm(split=how)
    model = grid_mf(dm)
    with torch.no_grad():
        for p in model.net.parameters():
            p.zero_()
    got = run_eval(model, dm, "val")
    want = expected_metrics(model, dm, "val")
    for key, value in want.items():
        assert value == 0.0 and got[key] == 0.0, key


def test_metrics_do_not_depend_on_eval_batch_size():
    results = []
    for size in (7, 64, 10_000):
        dm = make_dm(eval_batch_size=size)
        results.append(run_eval(grid_mf(dm, seed=1), dm, "test"))
    assert len(results[0]) >= 2 * len(NAMES) * len(KS)
    for other in results[1:]:
        assert other.keys() == results[0].keys()
        for key, value in results[0].items():
            assert other[key] == pytest.approx(value, abs=1e-9), key


def test_mask_seen_false_ranks_seen_items_too():
    dm = make_dm()
    masked = grid_mf(dm, seed=2)
    unmasked = grid_mf(dm, seed=2, mask_seen=False)
    assert torch.equal(unmasked.net.user.weight, masked.net.user.weight)
    got_masked, got = run_eval(masked, dm, "test"), run_eval(unmasked, dm, "test")
    for key, value in expected_metrics(unmasked, dm, "test", mask_seen=False).items():
        assert got[key] == pytest.approx(value, abs=1e-5), key
    assert got["test/ndcg@20"] < got_masked["test/ndcg@20"] - 1e-3  # seen items now crowd the top
    assert got["test/recall@20"] != pytest.approx(got_masked["test/recall@20"], abs=1e-4)


def test_no_sampled_metrics_without_sampled_negatives():
    dm = make_dm(sampled_negatives=0)
    got = run_eval(grid_mf(dm), dm, "val")
    assert "val/ndcg@10" in got
    assert not [k for k in got if "sampled" in k]


# ------------------------------------------------------------------ MF training
def one_batch(dm, num_negatives: int = 4) -> PairBatch:
    dm = NegativeSamplingDataModule(dataset=dm.source, seed=dm.seed, batch_size=64,
                                    num_negatives=num_negatives)
    return next(iter(dm.train_dataloader()))


@pytest.mark.parametrize("loss,start,end", [(losses.bpr, 0.5, 1e-3), (losses.bce, 2.5, 1e-2)],
                         ids=["bpr", "bce"])
def test_mf_overfits_one_batch(loss, start, end):
    dm = make_dm()
    batch = one_batch(dm)
    torch.manual_seed(0)
    model = MF(dm.num_users, dm.num_items, dim=16, loss=loss,
               optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    opt = model.configure_optimizers()
    history = []
    for _ in range(100):
        opt.zero_grad()
        value = model.compute_loss(batch)
        value.backward()
        opt.step()
        history.append(value.item())
    assert history[0] > start
    assert history[-1] < end
    with torch.no_grad():
        pos = model.net(batch.users, batch.pos_items[:, None])  # [B, 1]
        neg = model.net(batch.users, batch.neg_items)  # [B, N]
    assert bool((pos > neg).all())


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_mf_has_the_dense_gradients_and_trains_with_sparse_adam(bias):
    """sparse: true gives the same loss and, densified, the same gradients; a step with
    SparseAdam moves only the batch's rows."""
    dm = make_dm()
    batch = one_batch(dm)
    dense = MF(dm.num_users, dm.num_items, dim=8, bias=bias, l2=0.01)
    sparse = MF(dm.num_users, dm.num_items, dim=8, bias=bias, l2=0.01, sparse=True,
                optimizer=lambda p: torch.optim.SparseAdam(p, lr=0.05))
    sparse.load_state_dict(dense.state_dict())
    dense.compute_loss(batch).backward()
    loss = sparse.compute_loss(batch)
    loss.backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters()):
        assert b.grad.is_sparse, name
        torch.testing.assert_close(b.grad.to_dense(), a.grad, msg=name)
    before = sparse.net.user.weight.detach().clone()
    sparse.configure_optimizers().step()
    moved = (sparse.net.user.weight != before).any(1)  # [U]
    assert set(moved.nonzero()[:, 0].tolist()) == set(batch.users.tolist())


def test_mf_l2_adds_the_batch_embedding_penalty():
    dm = make_dm()
    batch = one_batch(dm, num_negatives=2)
    plain = MF(dm.num_users, dm.num_items, dim=8)
    reg = MF(dm.num_users, dm.num_items, dim=8, l2=0.5)
    reg.load_state_dict(plain.state_dict())
    u, p, n = (w.detach() for w in (plain.net.user.weight, plain.net.item.weight, plain.net.item.weight))
    penalty = sum(float(u[a].square().sum() + p[b].square().sum() + n[c].square().sum())
                  for a, b, c in zip(batch.users, batch.pos_items, batch.neg_items)) / len(batch)
    diff = reg.compute_loss(batch).item() - plain.compute_loss(batch).item()
    assert diff == pytest.approx(0.5 * penalty, rel=1e-4)


@pytest.mark.parametrize("bias", [True, False])
def test_mfnet_forward_gathers_from_score_all(bias):
    torch.manual_seed(1)
    net = MFNet(13, 40, dim=6, bias=bias)
    if bias:
        with torch.no_grad():
            net.user_bias.weight.normal_()
            net.item_bias.weight.normal_()
    users = torch.randint(0, 13, (9,))
    items = torch.randint(0, 40, (9, 5))
    with torch.no_grad():
        got = net(users, items)
        want = net.score_all(users).gather(1, items)
        manual = torch.stack([
            torch.stack([net.user.weight[u] @ net.item.weight[i]
                         + (net.user_bias.weight[u, 0] + net.item_bias.weight[i, 0] if bias else 0.0)
                         for i in row])
            for u, row in zip(users, items)
        ])
    assert got.shape == (9, 5)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got, manual, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------ Popularity
def test_popularity_counts_ranking_and_beats_random():
    dm = NegativeSamplingDataModule(dataset="ml-100k", seed=0, batch_size=4096, eval_batch_size=1024,
                                    sampled_negatives=0)
    pop = Popularity(dm.num_users, dm.num_items)
    assert not pop.automatic_optimization and not list(pop.parameters())
    make_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0,
                 num_sanity_val_steps=0).fit(pop, datamodule=dm)
    users_of = Counter(i for _, i in set(zip(dm.train.users.tolist(), dm.train.items.tolist())))
    want = np.array([users_of[i] for i in range(dm.num_items)], dtype=np.float32)
    np.testing.assert_array_equal(pop.counts.numpy(), want)
    assert want.max() > 100  # really fitted from the data
    batch = dm.eval_dataset("test")[np.arange(4)]
    scores = pop.score(batch)
    assert scores.shape == (4, dm.num_items)
    for row in scores.numpy():
        more = want[:, None] > want[None, :]  # i more popular than j ...
        assert (row[:, None] > row[None, :])[more].all()  # ... scores higher
    pop_hr = run_eval(pop, dm, "test")["test/hr@10"]
    torch.manual_seed(0)
    random_hr = run_eval(MF(dm.num_users, dm.num_items, dim=8, init_std=1.0), dm, "test")["test/hr@10"]
    assert pop_hr > random_hr + 0.1


# ------------------------------------------------------------------ predict
def test_predict_step_returns_top_unseen_items_for_real_rows():
    dm = make_dm()
    model = grid_mf(dm, step=1 / 2, dim=4, predict_k=7)  # coarse grid: many tied scores
    scores = full_scores(model)
    n = dm.num_users
    seen = [a | b | c for a, b, c in zip(*(per_user(p, n) for p in
                                          (dm.splits.train, dm.splits.val, dm.splits.test)))]
    rows = np.array([5, -1, 0, 17, -1, n - 1, 42])
    batch = dm.eval_dataset("predict")[rows]
    with torch.no_grad():
        out = model.predict_step(batch, 0)
    assert out["users"].tolist() == [5, 0, 17, n - 1, 42]
    assert out["items"].shape == (5, 7) and out["scores"].shape == (5, 7)
    for u, items, top in zip(out["users"].tolist(), out["items"].tolist(), out["scores"].numpy()):
        assert len(set(items)) == 7 and not set(items) & seen[u]
        np.testing.assert_array_equal(top, scores[u, items])
        assert (np.diff(top) <= 0).all()
        rest = [j for j in range(dm.num_items) if j not in seen[u] and j not in items]
        assert top[-1] >= scores[u, rest].max()
    # through the Trainer: every user once
    preds = make_trainer().predict(model, datamodule=dm)
    assert sorted(torch.cat([p["users"] for p in preds]).tolist()) == list(range(n))


# ------------------------------------------------------------------ extension contract, optimizers
class SquaredMF(MF):
    """Only the loss changes: pointwise squared error towards 1 (positives) and 0 (negatives)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.history: list[float] = []

    def compute_loss(self, batch: PairBatch) -> torch.Tensor:
        pos = self.net(batch.users, batch.pos_items[:, None])  # [B, 1]
        neg = self.net(batch.users, batch.neg_items)  # [B, N]
        loss = (1 - pos).square().mean() + neg.square().mean()
        self.history.append(loss.item())
        return loss


def test_subclass_overriding_compute_loss_trains():
    dm = make_dm(batch_size=64)
    torch.manual_seed(0)
    model = SquaredMF(dm.num_users, dm.num_items, dim=8,
                      optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    before = model.net.item.weight.detach().clone()
    trainer = make_trainer(max_epochs=4, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    steps_per_epoch = len(dm.train_dataloader())
    assert len(model.history) == 4 * steps_per_epoch  # our loss drove every step
    first = np.mean(model.history[:steps_per_epoch])
    last = np.mean(model.history[-steps_per_epoch:])
    assert last < 0.8 * first
    assert not torch.equal(before, model.net.item.weight)
    assert isinstance(trainer.optimizers[0], torch.optim.SGD)
    # training steps log when the Trainer writes logs: every log_every_n_steps-th step
    every = trainer.log_every_n_steps
    last_written = len(model.history) // every * every - 1
    assert last_written > 0
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(model.history[last_written],
                                                                         rel=1e-5)


def test_configure_optimizers_uses_the_injected_callables():
    model = MF(10, 20, dim=4, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["lr"] == 0.1
    assert {id(p) for g in opt.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    default = MF(10, 20, dim=4).configure_optimizers()
    assert isinstance(default, torch.optim.Adam)
    step_lr = MF(10, 20, dim=4, optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                 lr_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1))
    sched = step_lr.configure_optimizers()
    assert isinstance(sched["optimizer"], torch.optim.SGD)
    assert sched["lr_scheduler"]["scheduler"].optimizer is sched["optimizer"]
    assert sched["lr_scheduler"]["monitor"] == "val/ndcg@10"
    nothing = Popularity(10, 20).configure_optimizers()  # closed form: one step of nothing
    assert [p.numel() for g in nothing.param_groups for p in g["params"]] == [0]


# ------------------------------------------------------------------ review fixes
def test_evaluation_ignores_mixed_precision() -> None:
    """Scores are ranked in float32 even when the Trainer runs under bf16 autocast."""
    dm = make_dm()
    model = grid_mf(dm)
    with torch.no_grad():  # a large per-user offset: bf16 (8-bit mantissa) would tie most items
        model.net.user_bias.weight.fill_(64.0)
    full = run_eval(model, dm, "test")
    bf16 = make_trainer(precision="bf16-mixed").test(model, datamodule=dm, verbose=False)[0]
    for key, value in full.items():
        assert float(bf16[key]) == pytest.approx(value, abs=1e-7), key


def test_reduce_lr_on_plateau_watches_validation_ndcg() -> None:
    dm = make_dm()
    model = MF(dm.num_users, dm.num_items, dim=8,
               lr_scheduler=lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, mode="max"))
    make_trainer(max_epochs=2, limit_train_batches=2).fit(model, datamodule=dm)
    assert model.trainer.current_epoch == 2


class GatheringMF(MF):
    """Overrides score_candidates (the sampled protocol's hook) with an independent computation."""

    calls = 0

    def score_candidates(self, batch, items):
        GatheringMF.calls += 1
        return self.net(batch.users, items)  # [B, C]


def test_score_candidates_override_serves_the_sampled_protocol() -> None:
    dm = make_dm()
    base = grid_mf(dm)
    custom = GatheringMF(dm.num_users, dm.num_items, dim=16, top_k=KS)
    custom.load_state_dict(base.state_dict())
    expected, got = run_eval(base, dm, "test"), run_eval(custom, dm, "test")
    assert GatheringMF.calls > 0
    assert any("sampled99" in k for k in got)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key


def test_predict_lists_never_hold_seen_items_even_when_few_are_left(tmp_path) -> None:
    import polars as pl

    from lit_recs.callbacks import TopKWriter

    dm = make_dm()
    model = grid_mf(dm, predict_k=dm.num_items)  # longer than any user's unseen list
    trainer = make_trainer(callbacks=[TopKWriter()], default_root_dir=str(tmp_path))
    trainer.predict(model, datamodule=dm, return_predictions=False)
    pred = pl.read_parquet(tmp_path / "predictions.parquet")
    known = per_user(dm.data, dm.num_users)
    raw_to_user = {raw: u for u, raw in enumerate(dm.data.user_ids.tolist())}
    raw_to_item = {raw: i for i, raw in enumerate(dm.data.item_ids.tolist())}
    lengths = pred.group_by("user").len()
    for raw_user, length in zip(lengths["user"].to_list(), lengths["len"].to_list()):
        assert length == dm.num_items - len(known[raw_to_user[raw_user]])
    for raw_user, raw_item in zip(pred["user"].to_list(), pred["item"].to_list()):
        assert raw_to_item[raw_item] not in known[raw_to_user[raw_user]]
