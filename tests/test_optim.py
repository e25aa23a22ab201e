"""LazyAdam: Adam on dense gradients, SparseAdam's lazy update on sparse ones, in one optimizer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lit_recs.optim import LazyAdam


def _grads(step: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(100 + step))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_dense_gradients_follow_torch_adam(weight_decay):
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(7, 3))
    b = nn.Parameter(a.detach().clone())
    ours = LazyAdam([a], lr=0.05, betas=(0.8, 0.95), weight_decay=weight_decay)
    ref = torch.optim.Adam([b], lr=0.05, betas=(0.8, 0.95), weight_decay=weight_decay)
    for step in range(6):
        a.grad, b.grad = _grads(step, (7, 3)), _grads(step, (7, 3))
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.equal(a.detach(), torch.zeros(7, 3))


def _sparse_batch_loss(table: nn.Embedding, step: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(step)
    ids = torch.randint(0, 4, (6,), generator=gen) * 2  # even rows only, repeated ids
    target = torch.randn(6, table.embedding_dim, generator=gen)
    return (table(ids) - target).square().sum()


def test_sparse_gradients_follow_sparse_adam_and_leave_other_rows():
    torch.manual_seed(0)
    a = nn.Embedding(10, 4, sparse=True)
    b = copy.deepcopy(a)
    # SparseAdam adds eps before the bias correction, Adam after: a tiny eps makes that moot
    ours = LazyAdam(a.parameters(), lr=0.1, eps=1e-12)
    ref = torch.optim.SparseAdam(b.parameters(), lr=0.1, eps=1e-12)
    start = a.weight.detach().clone()
    for step in range(5):
        for table, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            _sparse_batch_loss(table, step).backward()
            assert table.weight.grad.is_sparse
            opt.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=1e-5, atol=1e-6)
    odd = torch.arange(1, 10, 2)
    assert torch.equal(a.weight[odd], start[odd])  # never in a batch: never moved
    assert not torch.equal(a.weight[0], start[0])


def test_a_model_mixing_sparse_tables_and_dense_layers():
    """What neither torch optimizer takes alone: LazyAdam equals SparseAdam on the table plus Adam
    on the layer."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"table": nn.Embedding(12, 5, sparse=True), "layer": nn.Linear(5, 1)})
    twin = copy.deepcopy(model)
    ours = LazyAdam(model.parameters(), lr=0.02, eps=1e-12)  # eps: as in the test above
    refs = [torch.optim.SparseAdam(twin["table"].parameters(), lr=0.02, eps=1e-12),
            torch.optim.Adam(twin["layer"].parameters(), lr=0.02, eps=1e-12)]
    with pytest.raises(RuntimeError, match="[Ss]parse"):  # why LazyAdam exists
        m = copy.deepcopy(model)
        m["layer"](m["table"](torch.tensor([1, 2]))).sum().backward()
        torch.optim.Adam(m.parameters()).step()
    for step in range(4):
        ids = torch.randint(0, 12, (8,), generator=torch.Generator().manual_seed(step))
        for net, opts in ((model, [ours]), (twin, refs)):
            for opt in opts:
                opt.zero_grad()
            net["layer"](net["table"](ids)).square().mean().backward()
            for opt in opts:
                opt.step()
    for (name, p), (_, q) in zip(model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_state_dict_resumes_the_same_trajectory():
    def run(steps, opt_state=None, weights=None):
        torch.manual_seed(0)
        model = nn.ModuleDict({"table": nn.Embedding(9, 3, sparse=True), "layer": nn.Linear(3, 2)})
        if weights is not None:
            model.load_state_dict(weights)
        opt = LazyAdam(model.parameters(), lr=0.03, weight_decay=0.01)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
        for step in steps:
            opt.zero_grad()
            ids = torch.randint(0, 9, (5,), generator=torch.Generator().manual_seed(step))
            model["layer"](model["table"](ids)).sum().backward()
            opt.step()
        return model, opt

    whole, _ = run(range(6))
    half, opt = run(range(3))
    resumed, _ = run(range(3, 6), copy.deepcopy(opt.state_dict()),
                     copy.deepcopy(half.state_dict()))
    for (name, p), (_, q) in zip(whole.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kwargs, word", [({"lr": 0.0}, "lr"), ({"weight_decay": -1.0}, "weight"),
                                          ({"betas": (0.9, 1.0)}, "betas")])
def test_bad_arguments_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LazyAdam([nn.Parameter(torch.zeros(2))], **kwargs)
