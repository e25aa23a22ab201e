"""Losses vs brute-force double loops, both `pos` shapes, and stable gradients for large scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lit_recs.losses import bce, bpr, hinge


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def bpr_reference(pos: np.ndarray, neg: np.ndarray) -> float:
    total, count = 0.0, 0
    for b in range(neg.shape[0]):
        for j in range(neg.shape[1]):
            total += -math.log(sigmoid(pos[b] - neg[b, j]))
            count += 1
    return total / count


def bce_reference(pos: np.ndarray, neg: np.ndarray) -> float:
    per_user = []
    for b in range(neg.shape[0]):
        loss = -math.log(sigmoid(pos[b]))
        for j in range(neg.shape[1]):
            loss += -math.log(1.0 - sigmoid(neg[b, j]))
        per_user.append(loss)
    return sum(per_user) / len(per_user)


def hinge_reference(pos: np.ndarray, neg: np.ndarray, margin: float) -> float:
    total, count = 0.0, 0
    for b in range(neg.shape[0]):
        for j in range(neg.shape[1]):
            total += max(0.0, margin - pos[b] + neg[b, j])
            count += 1
    return total / count


def scores(seed: int, batch: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 2, size=batch), rng.normal(0, 2, size=(batch, n))


CASES = [
    ("bpr", lambda p, q: bpr(p, q), bpr_reference),
    ("bce", lambda p, q: bce(p, q), bce_reference),
    ("hinge", lambda p, q: hinge(p, q), lambda p, q: hinge_reference(p, q, 1.0)),
    ("hinge_m0.3", lambda p, q: hinge(p, q, margin=0.3), lambda p, q: hinge_reference(p, q, 0.3)),
]


@pytest.mark.parametrize("name,loss,reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("pos_2d", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_loss_matches_double_loop(name, loss, reference, n, pos_2d, seed):
    pos, neg = scores(seed, batch=7, n=n)
    pos_t = torch.tensor(pos, dtype=torch.float64)
    if pos_2d:
        pos_t = pos_t[:, None]  # [B, 1]
    out = loss(pos_t, torch.tensor(neg, dtype=torch.float64))
    assert out.dim() == 0
    assert abs(out.item() - reference(pos, neg)) < 1e-6


@pytest.mark.parametrize("name,loss,reference", CASES, ids=[c[0] for c in CASES])
def test_float32_close_to_reference(name, loss, reference):
    pos, neg = scores(9, batch=16, n=5)
    out = loss(torch.tensor(pos, dtype=torch.float32), torch.tensor(neg, dtype=torch.float32))
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(reference(pos, neg), rel=1e-5, abs=1e-5)


def test_hinge_zero_when_margin_is_met():
    pos = torch.tensor([3.0, 2.0])
    neg = torch.tensor([[1.0, 0.5], [-1.0, 1.0]])
    assert hinge(pos, neg).item() == 0.0
    assert hinge(pos, neg, margin=2.5).item() == pytest.approx((0.5 + 0.0 + 0.0 + 1.5) / 4)


@pytest.mark.parametrize("name,loss,reference", CASES, ids=[c[0] for c in CASES])
def test_gradients_match_autograd_check(name, loss, reference):
    pos, neg = scores(4, batch=5, n=3)
    pos_t = torch.tensor(pos, dtype=torch.float64, requires_grad=True)
    neg_t = torch.tensor(neg, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (pos_t, neg_t))


@pytest.mark.parametrize("name,loss,reference", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_scores_give_finite_loss_and_gradients(name, loss, reference, sign, dtype):
    pos = torch.full((4,), 100.0 * sign, dtype=dtype, requires_grad=True)
    neg = torch.full((4, 5), -100.0 * sign, dtype=dtype, requires_grad=True)
    neg.data[0, 0] = 100.0 * sign  # one tie as well
    out = loss(pos, neg)
    out.backward()
    assert torch.isfinite(out)
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    if sign < 0:  # everything ranked wrong: the loss is large and pushes pos up, neg down
        assert out.item() > 10
        assert (pos.grad < 0).all()
        assert (neg.grad[:, 1:] > 0).all()


def test_bpr_gradient_closed_form():
    pos, neg = scores(5, batch=3, n=4)
    pos_t = torch.tensor(pos, requires_grad=True)
    neg_t = torch.tensor(neg, requires_grad=True)
    bpr(pos_t, neg_t).backward()
    bn = neg.size
    expected_neg = np.array([[sigmoid(neg[b, j] - pos[b]) / bn for j in range(neg.shape[1])]
                             for b in range(neg.shape[0])])
    np.testing.assert_allclose(neg_t.grad.numpy(), expected_neg, atol=1e-12)
    np.testing.assert_allclose(pos_t.grad.numpy(), -expected_neg.sum(1), atol=1e-12)


def sampled_softmax_reference(pos: np.ndarray, neg: np.ndarray) -> float:
    total = 0.0
    for b in range(neg.shape[0]):
        denom = math.exp(pos[b]) + sum(math.exp(v) for v in neg[b])
        total += -math.log(math.exp(pos[b]) / denom)
    return total / neg.shape[0]


def in_batch_reference(logits: np.ndarray, targets: np.ndarray, row_items: np.ndarray,
                       column_items: np.ndarray, log_q: np.ndarray | None) -> float:
    total = 0.0
    for b in range(logits.shape[0]):
        terms = []
        for c in range(logits.shape[1]):
            if c != targets[b] and column_items[c] == row_items[b]:
                continue  # accidental hit: the row's positive again
            terms.append(logits[b, c] - (0.0 if log_q is None else log_q[c]))
        own = logits[b, targets[b]] - (0.0 if log_q is None else log_q[targets[b]])
        total += -(own - math.log(sum(math.exp(t) for t in terms)))
    return total / logits.shape[0]


def test_sampled_softmax_matches_brute_force() -> None:
    from lit_recs.losses import sampled_softmax

    rng = np.random.default_rng(3)
    pos, neg = rng.normal(size=6) * 3, rng.normal(size=(6, 5)) * 3
    want = sampled_softmax_reference(pos, neg)
    got = sampled_softmax(torch.tensor(pos), torch.tensor(neg))
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert float(sampled_softmax(torch.tensor(pos)[:, None], torch.tensor(neg))) == \
        pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("with_log_q", [False, True])
def test_in_batch_softmax_matches_brute_force(with_log_q: bool) -> None:
    from lit_recs.losses import in_batch_softmax

    rng = np.random.default_rng(4)
    b, extra = 7, 5
    row_items = np.array([3, 1, 3, 4, 1, 9, 2])  # items 3 and 1 twice: accidental hits
    column_items = np.concatenate([row_items, [3, 8, 2, 0, 6]])  # extra negatives hit 3 and 2
    logits = rng.normal(size=(b, b + extra)) * 2
    targets = np.arange(b)
    log_q = np.log(rng.uniform(0.01, 1.0, size=b + extra)) if with_log_q else None
    want = in_batch_reference(logits, targets, row_items, column_items, log_q)
    got = in_batch_softmax(torch.tensor(logits), torch.tensor(targets), torch.tensor(row_items),
                           torch.tensor(column_items),
                           None if log_q is None else torch.tensor(log_q))
    assert float(got) == pytest.approx(want, rel=1e-9)
    # masking changes the value: without it the duplicated items would compete with themselves
    plain = in_batch_reference(logits, targets, np.arange(b), np.arange(b + extra), log_q)
    assert abs(plain - want) > 1e-3


def test_in_batch_softmax_targets_off_the_diagonal() -> None:
    """Another process's rows: targets point into the middle of the gathered candidates."""
    from lit_recs.losses import in_batch_softmax

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 9))
    targets = np.array([3, 4, 5])
    row_items = np.array([10, 11, 10])
    column_items = np.array([10, 12, 13, 10, 11, 10, 14, 11, 15])
    want = in_batch_reference(logits, targets, row_items, column_items, None)
    got = in_batch_softmax(torch.tensor(logits), torch.tensor(targets), torch.tensor(row_items),
                           torch.tensor(column_items))
    assert float(got) == pytest.approx(want, rel=1e-9)
