"""NeuMF / GMF / MLP: chunked catalogue scoring, tower pre-training, training on ML-100K."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer

from lit_recs.data.batches import EvalBatch
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import NeuMF
from lit_recs.models.neumf import NeuMFNet


def eval_batch(users: list[int]) -> EvalBatch:
    empty = torch.zeros(2, 0, dtype=torch.long)
    return EvalBatch(users=torch.tensor(users), weights=torch.ones(len(users)), seen=empty,
                     targets=empty)


def brute_force(net: NeuMFNet, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The paper's formulas, one (user, item) pair at a time."""
    out = []
    for u in users.tolist():
        row = []
        for i in items.tolist():
            parts = []
            if net.gmf_dim:
                parts.append(net.gmf_user.weight[u] * net.gmf_item.weight[i])
            if net.mlp_dims:
                w1 = torch.cat([net.first_user.weight, net.first_item.weight], 1)  # W_1 [H1, 2d]
                x = torch.relu(w1 @ torch.cat([net.mlp_user.weight[u], net.mlp_item.weight[i]])
                               + net.first_user.bias)
                parts.append(net.mlp(x))
            row.append(net.out(torch.cat(parts)).squeeze())
        out.append(torch.stack(row))
    return torch.stack(out)


@pytest.mark.parametrize("chunk", [7, None])  # 7 pairs: 3 users x 2 items a pass; None: one pass
@pytest.mark.parametrize(("gmf", "mlp"), [(4, (8, 6, 4)), (4, ()), (0, (8, 6, 4))])
def test_chunked_catalogue_scores_match_the_formulas(gmf, mlp, chunk) -> None:
    torch.manual_seed(0)
    model = NeuMF(5, 23, gmf_dim=gmf, mlp_dims=mlp, init_std=0.5, score_chunk=chunk).double()
    model.eval()
    with torch.no_grad():
        scores = model.score(eval_batch([0, 3, 4]))
        expected = brute_force(model.net, torch.tensor([0, 3, 4]), torch.arange(23))
        torch.testing.assert_close(scores, expected)
        items = torch.tensor([[1, 5], [22, 0], [3, 3]])
        torch.testing.assert_close(model.score_candidates(eval_batch([0, 3, 4]), items),
                                   expected.gather(1, items))


def test_a_score_chunk_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="score_chunk must be >= 1"):
        NeuMF(5, 23, score_chunk=0)


def test_training_batch_larger_than_the_tables_gives_the_same_loss_and_gradients() -> None:
    """More pairs than items / users: the first MLP layer projects the tables once and indexes
    them (nn.embedding.projected_lookup); values and gradients equal the per-pair formulas."""
    torch.manual_seed(0)
    net = NeuMFNet(7, 5, gmf_dim=3, mlp_dims=(8, 6, 4)).double()
    users = torch.randint(0, 7, (12,))
    items = torch.randint(0, 5, (12, 3))  # 36 pairs > 5 items, 12 users > 7
    small = [(users[k:k + 1], items[k:k + 1]) for k in range(12)]  # 3 pairs < 5 items each

    def grads(pairs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        net.zero_grad()
        scores = torch.cat([net(u, i) for u, i in pairs])  # [12, 3]
        (scores ** 2).sum().backward()
        return scores.detach(), [p.grad.clone() for p in net.parameters()]

    big_scores, big_grads = grads([(users, items)])
    small_scores, small_grads = grads(small)
    torch.testing.assert_close(big_scores, small_scores, rtol=1e-12, atol=1e-12)
    for a, b in zip(big_grads, small_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(big_scores, brute_force(net, users, torch.arange(5)).gather(
        1, items).detach(), rtol=1e-12, atol=1e-12)


def _side(name: str) -> str | None:
    """`user` / `item` for an embedding table's weight (net.gmf_user.weight ...), else None."""
    table = name.removeprefix("net.").removesuffix(".weight")
    return table.split("_")[1] if table in ("gmf_user", "gmf_item", "mlp_user", "mlp_item") else None


@pytest.mark.parametrize("gmf, mlp", [(3, ()), (0, (8, 6, 4)), (3, (8, 6, 4))],
                         ids=["gmf", "mlp", "neumf"])
def test_sparse_tables_have_the_dense_gradients_and_move_only_the_batch_rows(gmf, mlp) -> None:
    """sparse: true gives the tables sparse gradients equal, densified, to the dense ones; one
    LazyAdam step moves the layers and only the batch's rows of the tables."""
    from lit_recs.data.batches import PairBatch
    from lit_recs.optim import LazyAdam

    torch.manual_seed(0)
    kwargs = {"gmf_dim": gmf, "mlp_dims": mlp}
    dense = NeuMF(40, 30, **kwargs)
    sparse = NeuMF(40, 30, sparse=True, optimizer=lambda p: LazyAdam(p, lr=0.01), **kwargs)
    sparse.load_state_dict(dense.state_dict())
    users = torch.randint(0, 40, (16,))
    batch = PairBatch(users, torch.randint(0, 30, (16,)), torch.randint(0, 30, (16, 4)))
    dense.compute_loss(batch).backward()
    sparse.compute_loss(batch).backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), sparse.named_parameters()):
        assert b.grad.is_sparse == (_side(name) is not None), name
        torch.testing.assert_close(b.grad.to_dense(), a.grad, msg=name)
    tables = {n: p.detach().clone() for n, p in sparse.named_parameters()}
    sparse.configure_optimizers().step()
    for name, p in sparse.named_parameters():
        moved = (p != tables[name]).reshape(len(p), -1).any(1) if p.dim() else None
        if _side(name) == "user":
            assert set(moved.nonzero()[:, 0].tolist()) == set(users.tolist()), name
        elif _side(name) == "item":
            assert moved.sum() <= len(set(batch.pos_items.tolist()) | set(
                batch.neg_items.flatten().tolist())), name
        else:
            assert not torch.equal(p, tables[name]), name  # the layers move with Adam


def test_pretrained_towers_are_copied_and_mixed(tmp_path) -> None:
    torch.manual_seed(1)
    gmf = NeuMF(5, 9, gmf_dim=4, mlp_dims=())
    mlp = NeuMF(5, 9, gmf_dim=0, mlp_dims=(8, 6, 4))
    for name, model in (("gmf", gmf), ("mlp", mlp)):
        torch.save({"state_dict": model.state_dict()}, tmp_path / f"{name}.ckpt")
    both = NeuMF(5, 9, gmf_dim=4, mlp_dims=(8, 6, 4), pretrained_gmf=str(tmp_path / "gmf.ckpt"),
                 pretrained_mlp=str(tmp_path / "mlp.ckpt"), pretrain_alpha=0.3)
    torch.testing.assert_close(both.net.gmf_user.weight, gmf.net.gmf_user.weight)
    torch.testing.assert_close(both.net.mlp[1].weight, mlp.net.mlp[1].weight)
    torch.testing.assert_close(both.net.out.weight, torch.cat([0.3 * gmf.net.out.weight,
                                                               0.7 * mlp.net.out.weight], 1))
    with pytest.raises(ValueError, match="does not match"):
        NeuMF(5, 9, gmf_dim=3, mlp_dims=(8, 6, 4), pretrained_gmf=str(tmp_path / "gmf.ckpt"))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_neumf_learns_on_ml100k(tmp_path, precision: str) -> None:
    """Also under bf16 autocast on the CPU (the NeuMF benchmark's --precision bf16-mixed)."""
    dm = NegativeSamplingDataModule(dataset="ml-100k", split="loo", num_negatives=4)
    torch.manual_seed(0)
    model = NeuMF(dm.num_users, dm.num_items, dropout=0.1,
                  optimizer=lambda p: torch.optim.Adam(p, lr=0.003))
    trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False, precision=precision,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                      use_distributed_sampler=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert float(trainer.callback_metrics["val/sampled99/hr@10"]) > 0.3  # random: 0.1
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_needs_a_tower() -> None:
    with pytest.raises(ValueError, match="GMF tower"):
        NeuMF(3, 4, gmf_dim=0, mlp_dims=())
    with pytest.raises(ValueError, match="mlp_dims"):
        NeuMF(3, 4, mlp_dims=(7, 4))
