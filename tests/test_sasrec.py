"""SASRec: its four losses against brute force, causality, the tied head, training, evaluation
through the common path, and the config files of its loss variants."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lit_recs import losses
from lit_recs.data.batches import ClozeBatch, EvalBatch, NextItemBatch
from lit_recs.data.datasets import Synthetic
from lit_recs.data.sequential import NextItemDataModule
from lit_recs.models import SASRec, SASRecNet

REPO = Path(__file__).parents[1]
I = 30  # items  # noqa: E741


def tiny_model(**kw) -> SASRec:
    torch.manual_seed(2)
    return SASRec(num_users=5, num_items=I, max_len=8, dim=16, layers=2, heads=2, dropout=0.0, **kw)


def a_batch() -> NextItemBatch:
    """Two rows of next-item targets: the second padded on the left."""
    tokens = torch.tensor([[3, 7, 9, 2, 5, 11, 4], [0, 0, 8, 1, 30, 6, 2]])  # [B, L - 1]
    labels = torch.tensor([[6, 8, 1, 4, 10, 3, 12], [-1, -1, 0, 29, 5, 1, 17]])
    return NextItemBatch(users=torch.arange(2), tokens=tokens, labels=labels)


def brute_logits(model: SASRec, hidden: torch.Tensor) -> torch.Tensor:
    """h . E_i written out from the raw embedding table (token = item + 1): hidden [M, D] ->
    [M, I]."""
    table = model.net.encoder.tokens.weight  # [I + 1, D]
    return torch.stack([torch.stack([hidden[m] @ table[i + 1] for i in range(I)])
                        for m in range(len(hidden))])


def labelled(model: SASRec, batch: NextItemBatch) -> tuple[torch.Tensor, list[int]]:
    """Brute logits [M, I] at the labelled positions, in row-major order, and their targets."""
    hidden = model.net.encode(batch.tokens)  # [B, L, D]
    rows = [(b, t) for b in range(len(batch)) for t in range(batch.tokens.shape[1])
            if batch.labels[b, t] >= 0]
    logits = brute_logits(model, torch.stack([hidden[b, t] for b, t in rows]))
    return logits, [int(batch.labels[b, t]) for b, t in rows]


def test_full_ce_is_the_softmax_over_the_catalogue_at_every_labelled_position() -> None:
    model = tiny_model()  # the default loss
    batch = a_batch()
    logits, targets = labelled(model, batch)
    expected = sum(torch.logsumexp(logits[m], 0) - logits[m, t]
                   for m, t in enumerate(targets)) / len(targets)
    assert len(targets) == 12
    torch.testing.assert_close(model.compute_loss(batch), expected)


def test_sampled_ce_is_the_corrected_softmax_over_shared_negatives_without_hits() -> None:
    model = tiny_model(loss=losses.SampledCE(num_sampled=12))
    batch = a_batch()
    torch.manual_seed(9)
    got = model.compute_loss(batch)
    torch.manual_seed(9)
    negatives = torch.randint(0, I, (12,)).tolist()
    logits, targets = labelled(model, batch)
    total = 0.0
    hits = 0
    for m, t in enumerate(targets):
        neg = [logits[m, n] - math.log(12 / I) for n in negatives if n != t]
        hits += len(negatives) - len(neg)
        row = torch.stack([logits[m, t], *neg])
        total = total - torch.log_softmax(row, 0)[0]
    assert hits > 0  # the case of an accidental hit is exercised
    torch.testing.assert_close(got, total / len(targets))


def brute_binary(logits: torch.Tensor, targets: list[int], negatives: torch.Tensor, beta: float
                 ) -> torch.Tensor:
    """mean over positions of -beta log sigma(s_t) - sum_k log(1 - sigma(s_k)), term by term."""
    total = 0.0
    for m, t in enumerate(targets):
        loss = -beta * torch.log(torch.sigmoid(logits[m, t]))
        for n in negatives[m].tolist():
            loss = loss - torch.log(1 - torch.sigmoid(logits[m, n]))
        total = total + loss
    return total / len(targets)


@pytest.mark.parametrize("k", [1, 3])
def test_bce_is_binary_cross_entropy_against_negatives_drawn_per_position(k: int) -> None:
    model = tiny_model(loss=losses.SampledBCE(num_negatives=k))
    batch = a_batch()
    torch.manual_seed(4)
    got = model.compute_loss(batch)
    logits, targets = labelled(model, batch)
    torch.manual_seed(4)
    negatives = losses.other_items(torch.tensor(targets), k, I)  # [M, K]
    assert negatives.shape == (len(targets), k)
    torch.testing.assert_close(got, brute_binary(logits, targets, negatives, 1.0))


@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_raises_the_positive_probability_to_beta(t: float) -> None:
    k = 5
    model = tiny_model(loss=losses.GBCE(num_negatives=k, t=t))
    alpha = k / (I - 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)  # the paper's formula
    assert model.loss.beta(I) == pytest.approx(beta)
    assert model.loss.beta(I) == pytest.approx({0.0: 1.0, 1.0: alpha}.get(t, beta))
    batch = a_batch()
    torch.manual_seed(5)
    got = model.compute_loss(batch)
    logits, targets = labelled(model, batch)
    torch.manual_seed(5)
    negatives = losses.other_items(torch.tensor(targets), k, I)
    # -log(sigma(s)^beta) is the positive term: beta = 1 is plain BCE
    torch.testing.assert_close(got, brute_binary(logits, targets, negatives, beta))


def test_negatives_are_uniform_over_the_other_items() -> None:
    torch.manual_seed(0)
    labels = torch.randint(0, 7, (20000,))
    draws = losses.other_items(labels, 3, 7)  # [M, 3]
    assert not (draws == labels[:, None]).any()
    assert draws.min() >= 0 and draws.max() < 7
    for label in (0, 4):
        share = torch.bincount(draws[labels == label].reshape(-1), minlength=7).float()
        share /= share.sum()
        others = torch.arange(7) != label
        assert share[label] == 0 and (share[others] - 1 / 6).abs().max() < 0.02  # each 1/6


def test_both_ways_of_scoring_the_negatives_agree() -> None:
    torch.manual_seed(1)
    query, table, bias = torch.randn(6, 4), torch.randn(50, 4), torch.randn(50)
    items = torch.randint(0, 50, (6, 3))
    expected = torch.stack([torch.stack([query[m] @ table[j] + bias[j] for j in row])
                            for m, row in enumerate(items.tolist())])
    gathered = losses.catalogue_logits(query, table, bias, items)  # 3 * 4 < 50: gathers vectors
    full = losses.catalogue_logits(query, table[:12], bias[:12], items % 12)  # 12 <= 12: full
    torch.testing.assert_close(gathered, expected)
    torch.testing.assert_close(full, torch.stack([
        torch.stack([query[m] @ table[j % 12] + bias[j % 12] for j in row])
        for m, row in enumerate(items.tolist())]))


def test_binary_losses_refuse_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_negatives"):
        losses.SampledBCE(num_negatives=0)
    with pytest.raises(ValueError, match="t must be"):
        losses.GBCE(t=1.5)
    model = tiny_model(loss=losses.GBCE(num_negatives=I))  # only I - 1 items besides a target
    with pytest.raises(ValueError, match="num_negatives=30 exceeds"):
        model.compute_loss(a_batch())


def test_a_later_item_never_changes_an_earlier_position() -> None:
    model = tiny_model().eval()
    tokens = a_batch().tokens
    hidden = model.net.encode(tokens)  # [B, L, D]
    for t in range(tokens.shape[1]):
        changed = tokens.clone()
        changed[:, t] = torch.tensor([17, 23])
        after = model.net.encode(changed)
        torch.testing.assert_close(after[:, :t], hidden[:, :t])  # earlier positions: unchanged
        assert not torch.allclose(after[:, t:], hidden[:, t:])  # this one and later: changed


def test_the_head_is_tied_and_has_no_bias_and_the_net_is_plain_torch() -> None:
    from lightning.pytorch import LightningModule

    model = tiny_model()
    net = SASRecNet(num_items=I, max_len=8, dim=16, layers=2, heads=2, dropout=0.0)
    assert not isinstance(net, LightningModule)
    net.load_state_dict(model.net.state_dict())  # strict: every weight is in the net
    assert net.encoder.tokens.num_embeddings == I + 1  # padding + items, no [mask]
    h = torch.randn(3, 16)
    torch.testing.assert_close(model.net.logits(h), h @ net.encoder.tokens.weight[1:].T)
    torch.testing.assert_close(model.net.logits(h, slice(4, 9)), model.net.logits(h)[:, 4:9])


def test_scoring_reads_the_history_without_the_mask() -> None:
    data = Synthetic(num_users=40, num_items=I, interactions_per_user=10, seed=1)
    dm = NextItemDataModule(dataset=data, max_len=8, sampled_negatives=0)
    model = tiny_model()
    batch = next(iter(dm.val_dataloader()))
    assert (batch.sequences[:, -1] == dm.mask_token).all()
    scores = model.score(batch)  # [B, I]
    hidden = model.net.encode(batch.sequences[:, :-1])[:, -1]  # the last known item's output
    torch.testing.assert_close(scores, brute_logits(model, hidden))
    batch.sequences = None
    with pytest.raises(ValueError, match="NextItemDataModule"):
        model.score(batch)


def test_cloze_batches_and_too_long_sequences_are_refused() -> None:
    model = tiny_model()
    cloze = ClozeBatch(users=torch.tensor([0]), tokens=torch.ones(1, 4, dtype=torch.long),
                       labels=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="SASRec trains on NextItemBatch"):
        model.compute_loss(cloze)
    long = NextItemBatch(users=torch.tensor([0]), tokens=torch.ones(1, 9, dtype=torch.long),
                         labels=torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model.compute_loss(long)
    empty = EvalBatch(users=torch.arange(1), weights=torch.ones(1),
                      seen=torch.zeros(2, 0, dtype=torch.long),
                      targets=torch.zeros(2, 0, dtype=torch.long),
                      sequences=torch.ones(1, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model.score(empty)


@pytest.mark.parametrize("loss", [losses.full_ce, losses.SampledCE(8), losses.SampledBCE(1),
                                  losses.GBCE(8, 0.75)], ids=["ce", "sampled_ce", "bce", "gbce"])
def test_training_lowers_the_loss_on_a_fixed_batch(loss) -> None:
    model = tiny_model(loss=loss)
    torch.manual_seed(3)
    tokens = torch.randint(1, I + 1, (16, 7))
    labels = (tokens + 1) % I  # the next item is a function of the current one: learnable
    batch = NextItemBatch(users=torch.arange(16), tokens=tokens, labels=labels)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)  # gBCE (t = 0.75) stalls at 1e-2 here

    def mean_loss() -> float:  # the sampled losses: averaged over draws
        torch.manual_seed(11)
        with torch.no_grad():
            return sum(float(model.compute_loss(batch)) for _ in range(5)) / 5

    first = mean_loss()
    for _ in range(300):
        opt.zero_grad()
        model.compute_loss(batch).backward()
        opt.step()
    assert mean_loss() < 0.3 * first
    # and the full ranking learnt it: the next item ranks first at most positions
    with torch.no_grad():
        top = model.net.logits(model.net.encode(tokens).reshape(-1, 16)).argmax(1)
    assert (top == labels.reshape(-1)).float().mean() > 0.8


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fits_and_evaluates_through_the_trainer_and_in_chunks(precision: str) -> None:
    from lightning.pytorch import Trainer

    data = Synthetic(num_users=60, num_items=80, interactions_per_user=15, seed=5)
    dm = NextItemDataModule(dataset=data, max_len=8, window_stride=7, batch_size=16,
                            sampled_negatives=20, sampled_distribution="popularity")
    model = SASRec(dm.num_users, dm.num_items, max_len=8, dim=16, layers=1, heads=2,
                   loss=losses.GBCE(10, 0.75))
    trainer = Trainer(max_epochs=2, precision=precision, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False,
                      use_distributed_sampler=False, accelerator="cpu")
    trainer.fit(model, datamodule=dm)
    whole = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert 0 < whole["test/ndcg@10"] <= 1 and 0 < whole["test/sampled20pop/hr@10"] <= 1
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.score_cells = 100  # 16-user batches: chunks of 6 items
    assert model.chunk_width(next(iter(dm.test_dataloader()))) == 100 // 60
    chunked = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert chunked.keys() == whole.keys()
    for key, value in whole.items():
        assert chunked[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("variant,loss_type", [
    (None, None), ("loss_bce.yaml", losses.SampledBCE), ("loss_gbce.yaml", losses.GBCE),
    ("loss_sampled_ce.yaml", losses.SampledCE)])
def test_the_loss_variants_compose_over_the_base_config(variant, loss_type) -> None:
    """`--model conf/model/sasrec.yaml --model conf/model/sasrec/<variant>`: the CLI's own parser
    (with --print_config) merges the override's loss into the base config."""
    import contextlib
    import io

    import yaml

    from lit_recs.cli import main

    args = ["fit", "--config", str(REPO / "conf/base.yaml"),
            "--data", str(REPO / "conf/data/ml-100k-seq-next.yaml"),
            "--model", str(REPO / "conf/model/sasrec.yaml")]
    if variant:
        args += ["--model", str(REPO / "conf/model/sasrec" / variant)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([*args, "--print_config"])
    model = yaml.safe_load(out.getvalue())["model"]
    assert model["class_path"] == "lit_recs.models.SASRec" and model["init_args"]["dim"] == 64
    loss = model["init_args"]["loss"]
    if variant is None:
        assert loss == "lit_recs.losses.full_ce"
    else:
        assert loss["class_path"] == f"lit_recs.losses.{loss_type.__name__}"
        built = loss_type(**loss["init_args"])
        assert callable(built)
