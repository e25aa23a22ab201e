"""FM and FFM interaction terms against brute-force double loops over feature pairs."""

from __future__ import annotations

import torch

from lit_recs.nn.fm import FFMInteraction, FMInteraction, LinearTerm


def random_rows(seed: int, rows: int = 6, slots: int = 7, features: int = 30, fields: int = 4
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    index = torch.randint(0, features, (rows, slots), generator=g)
    value = torch.rand(rows, slots, generator=g, dtype=torch.float64)
    value[:, -2:] = 0.0  # padding slots
    field = torch.randint(0, fields, (rows, slots), generator=g)
    return index, value, field


def test_linear_term() -> None:
    index, value, _ = random_rows(0)
    lin = LinearTerm(30).double()
    with torch.no_grad():
        lin.weight.weight.normal_()
        lin.bias.fill_(0.3)
    w = lin.weight.weight[:, 0]
    expected = torch.stack([0.3 + sum(w[index[r, i]] * value[r, i] for i in range(7))
                            for r in range(6)])
    torch.testing.assert_close(lin(index, value), expected)


def test_fm_pairwise_term_matches_the_double_loop() -> None:
    for seed in range(3):
        index, value, _ = random_rows(seed)
        fm = FMInteraction(30, 5, init_std=0.5).double()
        v = fm.embedding.weight
        expected = torch.stack([
            sum(v[index[r, i]] @ v[index[r, j]] * value[r, i] * value[r, j]
                for i in range(7) for j in range(i + 1, 7))
            for r in range(6)])
        torch.testing.assert_close(fm(index, value), expected, atol=1e-5, rtol=0)


def test_ffm_pairwise_term_matches_the_double_loop() -> None:
    for seed in range(3):
        index, value, field = random_rows(seed)
        ffm = FFMInteraction(30, 4, 3, init_std=0.5).double()
        v = ffm.embedding.weight.view(30, 4, 3)  # [feature, field, k]
        expected = torch.stack([
            sum(v[index[r, i], field[r, j]] @ v[index[r, j], field[r, i]]
                * value[r, i] * value[r, j]
                for i in range(7) for j in range(i + 1, 7))
            for r in range(6)])
        torch.testing.assert_close(ffm(index, value, field), expected, atol=1e-5, rtol=0)


def test_ffm_with_one_field_is_fm() -> None:
    index, value, _ = random_rows(4)
    ffm = FFMInteraction(30, 1, 5, init_std=0.5).double()
    fm = FMInteraction(30, 5).double()
    with torch.no_grad():
        fm.embedding.weight.copy_(ffm.embedding.weight)
    torch.testing.assert_close(ffm(index, value, torch.zeros_like(index)), fm(index, value))
