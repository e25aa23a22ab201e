"""Embedding lookups shared by the models over ids and features."""

from __future__ import annotations

from torch import Tensor, nn


def lookup(table: nn.Embedding, index: Tensor) -> Tensor:
    """table(index): index [...] -> [..., D].

    A dense table goes through index_select: on the CPU its backward (an index_add) is faster than
    nn.Embedding's for the many repeated ids of feature rows. A table built with
    `sparse=True` keeps nn.Embedding's sparse gradient (large feature spaces; use an optimizer
    that takes sparse gradients, e.g. torch.optim.Adagrad or SparseAdam).
    """
    if table.sparse:
        return table(index)
    return table.weight.index_select(0, index.reshape(-1)).view(*index.shape, -1)


def projected_lookup(table: nn.Embedding, linear: nn.Linear, index: Tensor) -> Tensor:
    """linear(table(index)): index [...] -> [..., out].

    With more ids than table rows (a large training batch over a small catalogue), the whole table
    is projected once and the result indexed: the same values with fewer multiply-adds (rows x
    in x out instead of ids x in x out, forward and backward).
    """
    if table.sparse or index.numel() <= table.num_embeddings:
        return linear(lookup(table, index))
    projected = linear(table.weight)  # [N, out]
    return projected.index_select(0, index.reshape(-1)).view(*index.shape, -1)
