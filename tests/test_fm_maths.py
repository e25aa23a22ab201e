"""FM and FFM nets against brute-force double loops over feature pairs."""

from __future__ import annotations

import pytest
import torch

from lit_recs.nn.fm import FFMNet, FMNet


def random_rows(seed: int, rows: int = 6, slots: int = 7, features: int = 30, fields: int = 4
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, features, (rows, slots), generator=g)
    value = torch.rand(rows, slots, generator=g, dtype=torch.float64)
    value[:, -2:] = 0.0  # padding slots
    value[0, 1] = 0.0  # padding between real slots
    field = torch.randint(0, fields, (rows, slots), generator=g)
    return index, value, field


def filled(net: torch.nn.Module) -> torch.nn.Module:
    net = net.double()
    with torch.no_grad():
        net.table.weight.normal_()  # linear weights too (they start at 0)
        net.bias.fill_(0.3)
    return net


def test_fm_matches_the_double_loop() -> None:
    for seed in range(3):
        index, value, _ = random_rows(seed)
        net = filled(FMNet(30, 5))
        w, v = net.table.weight[:, 0], net.table.weight[:, 1:]
        expected = torch.stack([
            0.3 + sum(w[index[r, i]] * value[r, i] for i in range(7))
            + sum(v[index[r, i]] @ v[index[r, j]] * value[r, i] * value[r, j]
                  for i in range(7) for j in range(i + 1, 7))
            for r in range(6)])
        torch.testing.assert_close(net(index, value), expected, atol=1e-5, rtol=0)


def test_ffm_matches_the_double_loop() -> None:
    for seed in range(3):
        index, value, field = random_rows(seed)
        net = filled(FFMNet(30, 4, 3))
        w, v = net.table.weight[:, 0], net.table.weight[:, 1:].view(30, 4, 3)  # [feature, field, k]
        expected = torch.stack([
            0.3 + sum(w[index[r, i]] * value[r, i] for i in range(7))
            + sum(v[index[r, i], field[r, j]] @ v[index[r, j], field[r, i]]
                  * value[r, i] * value[r, j] for i in range(7) for j in range(i + 1, 7))
            for r in range(6)])
        torch.testing.assert_close(net(index, value, field), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [lambda: FMNet(30, 5), lambda: FFMNet(30, 4, 3)])
def test_norms_are_the_squared_rows_of_the_real_slots(make) -> None:
    index, value, field = random_rows(7)
    net = filled(make())
    norms = net.parts(index, value, field, norms=True).norms
    rows = net.table.weight[index].square().sum(-1)  # [B, S]
    torch.testing.assert_close(norms, (rows * (value != 0)).sum(1))
    assert net.parts(index, value, field).norms is None


def test_ffm_with_one_field_is_fm() -> None:
    index, value, _ = random_rows(4)
    ffm = filled(FFMNet(30, 1, 5))
    fm = FMNet(30, 5).double()
    with torch.no_grad():
        fm.table.weight.copy_(ffm.table.weight)
        fm.bias.copy_(ffm.bias)
    torch.testing.assert_close(ffm(index, value, torch.zeros_like(index)), fm(index, value))


def test_pairwise_terms_split_into_two_sides_and_a_dot_product() -> None:
    index, value, field = random_rows(5, slots=8)
    a, b = slice(0, 3), slice(3, 8)  # e.g. a user's slots and an item's
    fm = filled(FMNet(30, 5))
    whole, left, right = (fm.parts(index[:, s], value[:, s]) for s in (slice(None), a, b))
    torch.testing.assert_close(whole.terms, left.terms + right.terms
                               + (left.vector * right.vector).sum(1))
    ffm = filled(FFMNet(30, 4, 3))
    whole, left, right = (ffm.parts(index[:, s], value[:, s], field[:, s])
                          for s in (slice(None), a, b))
    cross = (left.vector * right.vector.transpose(1, 2)).sum((1, 2, 3))  # <T_a[f,g], T_b[g,f]>
    torch.testing.assert_close(whole.terms, left.terms + right.terms + cross)
