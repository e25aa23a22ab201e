"""The cheaper CPU dropout (lit_recs.nn.dropout) and the written-out attention that uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_recs.nn.dropout import Dropout, dropout, keep_mask
from lit_recs.nn.transformer import attention


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_and_expectation(p: float) -> None:
    torch.manual_seed(0)
    keep, scale = keep_mask((1000, 1000), p)
    t = round(p * 65536)
    assert keep.dtype == torch.bool and keep.shape == (1000, 1000)
    assert scale == pytest.approx(65536 / (65536 - t))
    # 1e6 Bernoulli draws: standard error <= 5e-4
    assert keep.float().mean().item() == pytest.approx(1 - t / 65536, abs=3e-3)
    y = dropout(torch.ones(1000, 1000), p)
    assert y.mean().item() == pytest.approx(1.0, abs=3e-3 / (1 - p))
    assert torch.unique(y).tolist() == [0.0, pytest.approx(scale)]


def test_elements_sharing_a_random_word_are_independent() -> None:
    torch.manual_seed(1)
    keep, _ = keep_mask((4_000_000,), 0.5)
    lanes = keep.view(-1, 4).float()  # the four 16-bit slices of each 64-bit word
    corr = torch.corrcoef(lanes.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5e-3
    assert torch.allclose(lanes.mean(0), torch.full((4,), 0.5), atol=3e-3)


def test_gradient_is_the_mask_times_the_scale() -> None:
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.3)
    weights = torch.randn(64, 33)
    (y * weights).sum().backward()
    kept = y != 0
    scale = 65536 / (65536 - round(0.3 * 65536))
    assert torch.allclose(y[kept], x.detach()[kept] * scale)
    assert torch.allclose(x.grad, kept * weights * scale)


def test_module_is_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(10, 7)
    layer = Dropout(0.4)
    layer.eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)


def test_same_seed_same_mask() -> None:
    x = torch.randn(100, 50)
    torch.manual_seed(3)
    a = dropout(x, 0.2)
    torch.manual_seed(3)
    b = dropout(x, 0.2)
    assert torch.equal(a, b)


def _reference_attention(q, k, v, mask, keep=None, scale=1.0):
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    if keep is not None:
        weights = weights * keep * scale
    return weights @ v


def test_attention_without_dropout_is_sdpa_and_the_formula() -> None:
    torch.manual_seed(4)
    q, k, v = (torch.randn(3, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]],
                        dtype=torch.bool)[:, None, None, :]  # [B, 1, 1, L] key padding
    out = attention(q, k, v, mask, 0.0)
    assert torch.allclose(out, _reference_attention(q, k, v, mask), atol=1e-12)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)


def test_attention_with_dropout_drops_weights_after_the_softmax() -> None:
    q, k, v = (torch.randn(3, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(3, 1, 1, 6, dtype=torch.bool)
    mask[1, ..., :3] = False
    torch.manual_seed(5)
    out = attention(q, k, v, mask, 0.25)
    torch.manual_seed(5)
    keep, scale = keep_mask((3, 2, 6, 6), 0.25)
    expected = _reference_attention(q, k, v, mask, keep, scale)
    assert torch.allclose(out, expected, atol=1e-12)
    assert not torch.allclose(out, _reference_attention(q, k, v, mask))
