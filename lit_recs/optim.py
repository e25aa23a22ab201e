"""`LazyAdam`: one Adam for models that mix sparse-gradient embedding tables and dense layers.

A table built with `sparse=True` (`MF`, `NeuMF`, `TwoTower`, `FM` / `FFM`: the models' `sparse`
option) gets a sparse gradient holding only the batch's rows. `torch.optim.Adam` refuses sparse
gradients and `torch.optim.SparseAdam` refuses dense ones, so a model with tables and layers had no
single optimizer to name in YAML. `LazyAdam` takes both, per parameter:

- dense gradient: Adam (Kingma & Ba 2015), exactly `torch.optim.Adam`'s update (L2 `weight_decay`
  added to the gradient, as Adam's, not AdamW's);
- sparse gradient: the lazy update of `torch.optim.SparseAdam`: the moments and the weights of the
  rows in the gradient move, the other rows are left as they are (their moments do not decay);
  `weight_decay` is added to those rows' gradients only.

Why: with dense gradients Adam reads and writes every row of every table at every step. On
ML-20M-sized tables (138k users + 27k items, D = 128, 1 thread) an MF step took 208 ms dense
against 14 ms sparse (`experiments/benchmarks/scale.py`).

    optimizer:
      class_path: lit_recs.optim.LazyAdam
      init_args: {lr: 0.001}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class LazyAdam(torch.optim.Optimizer):
    """Adam for dense gradients, SparseAdam's lazy row update for sparse ones (see the module)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        if lr <= 0 or eps <= 0 or weight_decay < 0:
            raise ValueError(f"LazyAdam: lr and eps must be > 0 and weight_decay >= 0, got "
                             f"lr={lr}, eps={eps}, weight_decay={weight_decay}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"LazyAdam: betas must be in [0, 1), got {tuple(betas)}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                update = _sparse_update if p.grad.is_sparse else _dense_update
                update(p, p.grad, state, group)
        return loss


def _step_size(state: dict[str, Any], group: dict[str, Any]) -> tuple[float, float]:
    """(lr / (1 - beta1^t), 1 / sqrt(1 - beta2^t)): Adam's bias corrections at step t."""
    beta1, beta2 = group["betas"]
    t = float(state["step"])
    return group["lr"] / (1 - beta1 ** t), (1 - beta2 ** t) ** -0.5


def _dense_update(p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    beta1, beta2 = group["betas"]
    if group["weight_decay"]:
        grad = grad.add(p, alpha=group["weight_decay"])
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.lerp_(grad, 1 - beta1)
    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    step, correction2 = _step_size(state, group)
    denom = (v.sqrt() * correction2).add_(group["eps"])
    p.addcdiv_(m, denom, value=-step)


def _sparse_update(p: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
    """The rows in a sparse gradient (one index per row: an embedding table's) move; others stay."""
    beta1, beta2 = group["betas"]
    grad = grad.coalesce()  # repeated ids summed, as the dense gradient would hold them
    rows, values = grad.indices()[0], grad.values()  # [R], [R, ...]
    if group["weight_decay"]:
        values = values.add(p[rows], alpha=group["weight_decay"])
    m = state["exp_avg"][rows].lerp_(values, 1 - beta1)  # [R, ...]
    v = state["exp_avg_sq"][rows].mul_(beta2).addcmul_(values, values, value=1 - beta2)
    state["exp_avg"][rows], state["exp_avg_sq"][rows] = m, v
    step, correction2 = _step_size(state, group)
    denom = (v.sqrt() * correction2).add_(group["eps"])
    p.index_add_(0, rows, m.div_(denom), alpha=-step)
