"""Dropout with a cheaper random mask on the CPU.

torch's CPU dropout draws one random number per element through `bernoulli_`, a large share of a
NeuMF epoch or a BERT4Rec step (measured in experiments/benchmarks). Here the CPU mask comes from
16-bit slices of 64-bit random integers (four elements per draw): an element is kept when its
slice is at or above t = round(p 65536), so the drop probability is t / 65536 (within 1 / 131072
of p) and the kept elements are scaled by 65536 / (65536 - t), which keeps the expectation exact.
On other devices (CUDA: Philox, already fast) and in evaluation, this is
`torch.nn.functional.dropout`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LEVELS = 1 << 16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | None = None
              ) -> tuple[Tensor, float]:
    """A bool mask of `shape` keeping each element with probability 1 - t / 65536 (t = round(p
    65536)), and the scale 65536 / (65536 - t) that keeps the kept elements' expectation."""
    threshold = round(p * _LEVELS)
    numel = math.prod(shape)
    words = torch.randint(-(1 << 63), (1 << 63) - 1, ((numel + 3) // 4,), dtype=torch.int64,
                          device=device)  # [ceil(n / 4)] uniform 64-bit words
    slices = words.view(torch.int16)[:numel]  # [n] uniform in [-32768, 32767]
    keep = slices >= threshold - (_LEVELS // 2)
    return keep.view(shape), _LEVELS / (_LEVELS - threshold)


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """F.dropout with the cheaper mask on the CPU (see the module docstring)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training=True)
    keep, scale = keep_mask(x.shape, p, x.device)
    # a float mask: multiplying by a bool tensor takes torch's slower type-promoting path
    return x * keep.to(x.dtype).mul_(scale)


class Dropout(nn.Module):
    """Drop-in for nn.Dropout (same `p`, same behaviour in train / eval) with the faster CPU mask."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
