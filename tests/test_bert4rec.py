"""The transformer block against brute force, and BERT4Rec's net, head, losses and evaluation
input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lit_recs import losses
from lit_recs.data.batches import ClozeBatch, EvalBatch
from lit_recs.data.cloze import ClozeDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import BERT4Rec
from lit_recs.models.bert4rec import BERT4RecNet
from lit_recs.nn.transformer import (
    MultiHeadSelfAttention,
    SequenceEncoder,
    TransformerBlock,
    sinusoidal_positions,
)


def brute_attention(att: MultiHeadSelfAttention, x: torch.Tensor, keep: torch.Tensor,
                    causal: bool) -> torch.Tensor:
    """Per batch row, per head, per query: an explicit masked softmax over the keys."""
    b, n, d = x.shape
    h = att.heads
    qkv = att.qkv(x)  # [B, L, 3D]
    out = torch.zeros(b, n, d, dtype=x.dtype)
    for r in range(b):
        for head in range(h):
            sl = slice(head * d // h, (head + 1) * d // h)
            q = qkv[r, :, :d][:, sl]
            k = qkv[r, :, d:2 * d][:, sl]
            v = qkv[r, :, 2 * d:][:, sl]
            for i in range(n):
                allowed = [j for j in range(n) if keep[r, j] and (not causal or j <= i)]
                if not allowed:
                    continue  # a padded query with nothing to see: its output is unused
                s = torch.stack([q[i] @ k[j] for j in allowed]) / math.sqrt(d // h)
                w = torch.softmax(s, 0)
                out[r, i, sl] = sum(w[a] * v[j] for a, j in enumerate(allowed))
    return att.out(out)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_an_explicit_masked_softmax(causal: bool) -> None:
    torch.manual_seed(0)
    att = MultiHeadSelfAttention(8, 2).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    keep = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]], dtype=torch.bool)
    got = att(x, keep, causal)
    expected = brute_attention(att, x, keep, causal)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got[keep], expected[keep])


def test_padded_positions_do_not_change_the_others() -> None:
    torch.manual_seed(1)
    block = TransformerBlock(8, 2, dropout=0.0).eval()
    x = torch.randn(2, 6, 8)
    keep = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    y = block(x, keep)
    x2 = x.clone()
    x2[~keep] = torch.randn(int((~keep).sum()), 8) * 10
    torch.testing.assert_close(block(x2, keep)[keep], y[keep])


def test_sinusoidal_positions() -> None:
    table = sinusoidal_positions(10, 6)
    assert table.shape == (10, 6)
    assert table[3, 0] == pytest.approx(math.sin(3.0))
    assert table[3, 1] == pytest.approx(math.cos(3.0))
    assert table[5, 2] == pytest.approx(math.sin(5.0 / 10000 ** (2 / 6)))


def test_encoder_rejects_unknown_positions() -> None:
    with pytest.raises(ValueError, match="positions"):
        SequenceEncoder(10, 5, positions="rotary")


def tiny_model(**kw) -> BERT4Rec:
    torch.manual_seed(2)
    return BERT4Rec(num_users=5, num_items=30, max_len=8, dim=16, layers=1, heads=2,
                    dropout=0.0, **kw)


def test_the_net_is_plain_torch_and_holds_every_weight() -> None:
    from lightning.pytorch import LightningModule

    model = tiny_model()
    names = [k for k, _ in model.named_parameters()]
    assert names and all(k.startswith("net.") for k in names), names
    net = BERT4RecNet(num_items=30, max_len=8, dim=16, layers=1, heads=2, dropout=0.0)
    assert not isinstance(net, LightningModule)
    net.load_state_dict(model.net.state_dict())  # strict: the same layout
    tokens = torch.tensor([[0, 0, 3, 7, 9, 2, 5, 31], [4, 8, 1, 30, 6, 2, 11, 31]])  # 31: [mask]
    batch = EvalBatch(users=torch.arange(2), weights=torch.ones(2),
                      seen=torch.zeros(2, 0, dtype=torch.long),
                      targets=torch.zeros(2, 0, dtype=torch.long), sequences=tokens)
    hidden = net.encode(tokens)  # [B, L, D]
    assert hidden.shape == (2, 8, 16) and net.item_table().shape == (30, 16)
    torch.testing.assert_close(net.logits(hidden[:, -1]), model.score(batch))


def test_head_is_tied_to_the_input_embedding() -> None:
    model = tiny_model()
    net = model.net
    h = torch.randn(4, 16)
    table = net.encoder.tokens.weight[1:31]
    expected = F.gelu(h @ net.transform.weight.T + net.transform.bias) @ table.T
    torch.testing.assert_close(net.logits(h), expected + net.out_bias)
    torch.testing.assert_close(net.item_table(), table)
    with torch.no_grad():
        net.encoder.tokens.weight[5] += 1.0  # token 5 = item 4
    assert not torch.allclose(net.logits(h)[:, 4], expected[:, 4])


def brute_logits(model: BERT4Rec, h: torch.Tensor) -> torch.Tensor:
    """GELU(h W_P + b_P) E^T + b_O written out from the raw weights, hidden [M, D] -> [M, I]."""
    net = model.net
    q = F.gelu(h @ net.transform.weight.T + net.transform.bias)  # [M, D]
    table = net.encoder.tokens.weight  # [I + 2, D], token = item + 1
    return torch.stack([torch.stack([q[m] @ table[i + 1] + net.out_bias[i]
                                     for i in range(model.num_items)]) for m in range(len(h))])


@pytest.mark.parametrize("loss", [None, losses.full_ce])
def test_full_loss_is_cross_entropy_at_masked_positions_only(loss) -> None:
    model = tiny_model() if loss is None else tiny_model(loss=loss)  # None: the default
    tokens = torch.tensor([[0, 0, 3, 31, 7, 31, 9, 31]])
    labels = torch.tensor([[-1, -1, -1, 11, -1, 4, -1, 20]])
    batch = ClozeBatch(users=torch.tensor([0]), tokens=tokens, labels=labels)
    hidden = model.net.encode(tokens)[0]  # [L, D]
    logits = brute_logits(model, hidden[[3, 5, 7]])  # [3, I]
    target = [11, 4, 20]
    expected = sum(torch.logsumexp(logits[m], 0) - logits[m, t] for m, t in enumerate(target)) / 3
    torch.testing.assert_close(model.compute_loss(batch), expected)


def test_sampled_loss_matches_its_formula() -> None:
    model = tiny_model(loss=losses.SampledCE(num_sampled=6))
    tokens = torch.tensor([[0, 3, 31, 7, 31, 9, 2, 31]])
    labels = torch.tensor([[-1, -1, 11, -1, 4, -1, -1, 20]])
    batch = ClozeBatch(users=torch.tensor([0]), tokens=tokens, labels=labels)
    torch.manual_seed(9)
    got = model.compute_loss(batch)
    torch.manual_seed(9)
    negatives = torch.randint(0, 30, (6,))
    full = brute_logits(model, model.net.encode(tokens)[0][[2, 4, 7]])  # [3, I]
    target = torch.tensor([11, 4, 20])
    loss = 0.0
    for m in range(3):
        neg = [full[m, n] - math.log(6 / 30) for n in negatives.tolist() if n != target[m]]
        row = torch.stack([full[m, target[m]], *neg])
        loss = loss - torch.log_softmax(row, 0)[0]
    torch.testing.assert_close(got, loss / 3)


def test_training_fits_a_fixed_batch() -> None:
    model = tiny_model()
    torch.manual_seed(3)
    tokens = torch.randint(1, 31, (16, 8))
    labels = torch.full((16, 8), -1)
    labels[:, -1] = tokens[:, -1] - 1
    tokens[:, -1] = 31
    batch = ClozeBatch(users=torch.arange(16), tokens=tokens, labels=labels)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = float(model.compute_loss(batch).detach())
    for _ in range(150):
        opt.zero_grad()
        model.compute_loss(batch).backward()
        opt.step()
    assert float(model.compute_loss(batch).detach()) < 0.1 * first


def test_scoring_reads_the_trailing_mask_and_needs_sequences() -> None:
    data = Synthetic(num_users=40, num_items=30, interactions_per_user=10, seed=1)
    dm = ClozeDataModule(dataset=data, max_len=8, sampled_negatives=0)
    model = tiny_model()
    batch = next(iter(dm.val_dataloader()))
    scores = model.score(batch)
    assert scores.shape == (len(batch), 30)
    hidden = model.net.encode(batch.sequences)[:, -1]
    torch.testing.assert_close(scores, brute_logits(model, hidden))
    batch.sequences = None
    with pytest.raises(ValueError, match="ClozeDataModule"):
        model.score(batch)


def test_too_long_sequences_and_bad_losses_are_refused() -> None:
    model = tiny_model()
    batch = ClozeBatch(users=torch.tensor([0]), tokens=torch.ones(1, 9, dtype=torch.long),
                          labels=torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model.compute_loss(batch)
    for old in ("bpr", "sampled"):  # loss is a callable now, not a name
        with pytest.raises(ValueError, match="loss must be a callable"):
            tiny_model(loss=old)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fits_and_evaluates_through_the_trainer(precision: str) -> None:
    from lightning.pytorch import Trainer

    data = Synthetic(num_users=60, num_items=80, interactions_per_user=15, seed=5)
    dm = ClozeDataModule(dataset=data, max_len=8, batch_size=16, sampled_negatives=20,
                         sampled_distribution="popularity")
    model = BERT4Rec(dm.num_users, dm.num_items, max_len=8, dim=16, layers=1, heads=2)
    trainer = Trainer(max_epochs=2, precision=precision, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0 <= out["test/ndcg@10"] <= 1 and 0 < out["test/sampled20pop/hr@10"] <= 1
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_the_config_names_the_loss_by_import_path_or_class() -> None:
    """conf/model/bert4rec.yaml: `loss: lit_recs.losses.full_ce`, no max_len (the CLI links the
    data's); the sampled softmax as `{class_path: lit_recs.losses.SampledCE, init_args: ...}`."""
    from pathlib import Path

    import yaml
    from jsonargparse import ArgumentParser

    conf = yaml.safe_load((Path(__file__).parents[1] / "conf/model/bert4rec.yaml").read_text())
    assert "max_len" not in conf["init_args"] and conf["init_args"]["loss"] == "lit_recs.losses.full_ce"
    parser = ArgumentParser()
    parser.add_argument("--model", type=BERT4Rec)
    sampled = {"class_path": "lit_recs.losses.SampledCE", "init_args": {"num_sampled": 7}}
    for loss in (conf["init_args"]["loss"], sampled):
        init = {**conf["init_args"], "num_users": 3, "num_items": 30, "loss": loss}
        init.pop("optimizer")
        cfg = parser.parse_object({"model": {"class_path": conf["class_path"], "init_args": init}})
        model = parser.instantiate(cfg).model
        assert model.max_len == 50  # the Python default when nothing links it
        if loss is sampled:
            assert isinstance(model.loss, losses.SampledCE) and model.loss.num_sampled == 7
        else:
            assert model.loss is losses.full_ce
