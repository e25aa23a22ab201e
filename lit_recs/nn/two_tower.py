"""`TwoTowerNet`: the two-tower (DSSM) maths as a plain torch module, and its `TowerConfig`.

The net holds every weight of the model: the feature embedding table [V, E], the item tower, the
user tower, the history encoder and the global bias. Its methods take explicit tensors (the padded
feature slots of `lit_recs.data.fields`, history vectors, context feature ids), so it runs without
Lightning or a DataModule (`lit_recs.models.TwoTower` reads them from the data's feature tables):

    net = TwoTowerNet(num_features, num_fields, TowerConfig(dim=32, history="mean"),
                      history_length=20)
    items = net.item_vectors(item_index, item_value, item_slot_field, item_fields)  # [C, D]
    history = net.ranking_vectors(items)[history_rows]  # [B, L, D], rows of the history's items
    users = net.user_vectors(user_index, user_value, user_slot_field, user_fields,
                             history, keep=history_is_real)  # [B, D]
    logits = net.score_matrix(users, items)  # [B, C]: similarity / temperature

`gather_across_processes` is the all_gather with gradients that in-batch softmax uses to see every
process's candidates (plain torch.distributed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_recs.nn.towers import (
    HistoryEncoder,
    HistoryKind,
    Similarity,
    Tower,
    embed,
    pool_fields,
    ranking_vectors,
    similarity,
)


@dataclass(frozen=True)
class TowerConfig:
    """The sizes and the similarity of both towers (in YAML: `tower: {dim: 128, ...}`).

    embedding_dim: E, the size of every feature embedding.
    user_hidden / item_hidden: hidden widths of each tower's MLP ([] = one linear map).
    dim: D, the output size of both towers.
    dropout: after every hidden layer.
    history: how the user tower pools its history: `none`, `mean`, `gru`, `transformer`.
    history_layers / history_heads: the transformer's size.
    similarity: `cosine` or `dot`; temperature: scores are similarity / temperature.
    sparse: sparse gradients for the feature embedding table, so that a step touches only the
        batch's rows (large id spaces; pair with `lit_recs.optim.LazyAdam`).
    """

    embedding_dim: int = 32
    user_hidden: list[int] = field(default_factory=list)
    item_hidden: list[int] = field(default_factory=list)
    dim: int = 64
    dropout: float = 0.0
    history: HistoryKind = "none"
    history_layers: int = 1
    history_heads: int = 2
    similarity: Similarity = "cosine"
    temperature: float = 0.1
    sparse: bool = False

    def __post_init__(self) -> None:
        for name in ("user_hidden", "item_hidden"):  # any sequence (a tuple in Python) -> list
            object.__setattr__(self, name, [int(w) for w in getattr(self, name)])
        bad = [f"{name}={getattr(self, name)}" for name in
               ("embedding_dim", "dim", "history_layers", "history_heads")
               if getattr(self, name) < 1]
        bad += [f"{name}={getattr(self, name)}" for name in ("user_hidden", "item_hidden")
                if any(w < 1 for w in getattr(self, name))]
        if bad:
            raise ValueError(f"TowerConfig: sizes must be >= 1, got {', '.join(bad)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TowerConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.history not in HistoryKind.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"TowerConfig: history must be one of "
                             f"{HistoryKind.__args__}, got {self.history!r}")  # type: ignore
        if self.similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {self.similarity!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class TwoTowerNet(nn.Module):
    """Feature embeddings, item tower, user tower (+ history encoder), similarity, global bias.

    Args:
        num_features / num_fields: sizes of the feature and field spaces.
        config: the towers' sizes and similarity (`TowerConfig`).
        item_vector_dim: size of the pre-computed item vectors the item tower also reads (0: none).
        history_length: L, the longest history the user tower reads (>= 1 when config.history is
            not `none`).
    """

    def __init__(self, num_features: int, num_fields: int, config: TowerConfig | None = None,
                 item_vector_dim: int = 0, history_length: int = 0) -> None:
        super().__init__()
        config = TowerConfig() if config is None else config
        if config.history != "none" and history_length < 1:
            raise ValueError(f"history={config.history!r} needs the data's history_length >= 1, "
                             f"got {history_length}")
        self.config, self.item_vector_dim = config, item_vector_dim
        e, d = config.embedding_dim, config.dim
        self.embedding = nn.Parameter(torch.randn(num_features, e) * 0.1)  # [V, E]
        self.item_tower = Tower(num_fields, e, item_vector_dim, list(config.item_hidden), d,
                                config.dropout)
        history_dim = d if config.history != "none" else 0
        self.user_tower = Tower(num_fields, e, history_dim, list(config.user_hidden), d,
                                config.dropout)
        self.history_encoder = None if config.history == "none" else HistoryEncoder(
            config.history, d, history_length, config.history_layers, config.history_heads,
            config.dropout)
        # logit = score + bias: fitted by ctr and bce; a constant shift that the other losses cancel
        # (kept in their graph so that DDP sees every parameter used)
        self.bias = nn.Parameter(torch.zeros(()))

    # ------------------------------------------------------------------ towers
    def item_vectors(self, index: Tensor, value: Tensor, slot_field: Tensor, fields: Tensor,
                     vectors: Tensor | None = None) -> Tensor:
        """Item tower: the items' slots index / value [C, S_i] (slot_field [S_i]: each slot
        column's side-local field; fields [F_i]: the item side's field numbers) and their
        pre-computed vectors [C, item_vector_dim] -> [C, D]."""
        pooled = pool_fields(self.embedding, index, value, slot_field, len(fields),
                             self.config.sparse)  # [C, F_i, E]
        return self.item_tower(pooled, fields, vectors if self.item_vector_dim else None)

    def user_vectors(self, index: Tensor, value: Tensor, slot_field: Tensor, fields: Tensor,
                     history: Tensor | None = None, keep: Tensor | None = None,
                     context: Tensor | None = None, context_fields: Tensor | None = None
                     ) -> Tensor:
        """User tower: the users' slots [B, S_u] (slot_field, fields as for items), the item
        vectors of their histories [B, L, D] (as `ranking_vectors` gives them) with keep [B, L]
        (False on padding), context feature ids [B, Sc] of the fields context_fields [Sc]
        -> [B, D]."""
        pooled = pool_fields(self.embedding, index, value, slot_field, len(fields),
                             self.config.sparse)  # [B, F_u, E]
        if context is not None and context.shape[1]:
            if context_fields is None:
                raise ValueError("context feature ids need their field numbers (context_fields)")
            context_rows = embed(self.embedding, context, self.config.sparse)  # [B, Sc, E]
            pooled = torch.cat([pooled, context_rows], 1)  # [B, F_u + Sc, E]
            fields = torch.cat([fields, context_fields])
        extra = None
        if self.history_encoder is not None:
            if history is None or keep is None:
                raise ValueError(f"history={self.config.history!r}: the batches carry no history "
                                 "(set the DataModule's history_length)")
            extra = self.history_encoder(history, keep)  # [B, D]
        return self.user_tower(pooled, fields, extra)

    # ------------------------------------------------------------------ similarity
    def ranking_vectors(self, x: Tensor) -> Tensor:
        """Tower output [..., D] -> the vector ranking uses (and the history encoder reads): unit
        length for cosine, unchanged for dot."""
        return ranking_vectors(x, self.config.similarity)

    def scores(self, user: Tensor, item: Tensor) -> Tensor:
        """Row-paired scores: user [B, D], item [B, ..., D] (the same rows) -> [B, ...] scaled
        similarities."""
        user, item = self.ranking_vectors(user), self.ranking_vectors(item)
        shape = (len(user),) + (1,) * (item.dim() - 2) + (user.shape[-1],)
        return (user.view(shape) * item).sum(-1) / self.config.temperature

    def score_matrix(self, user: Tensor, items: Tensor) -> Tensor:
        """Every pair: user [B, D] x items [C, D] -> [B, C] scaled similarities."""
        return similarity(user, items, self.config.similarity, self.config.temperature)

    def query_vectors(self, user: Tensor) -> Tensor:
        """User tower output [B, D] -> the query whose dot product with `ranking_vectors` of the
        items is the score (the temperature folded in)."""
        return self.ranking_vectors(user) / self.config.temperature


# ---------------------------------------------------------------------- across processes
def _all_gather_cat(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns each process the summed gradient of its own
    slice (any backend: an all_reduce, then the slice)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rows, ctx.rank = len(x), dist.get_rank()
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_across_processes(x: Tensor, with_grad: bool) -> tuple[Tensor, int]:
    """Rows of every process, concatenated in rank order, and this process's rank (one process:
    x itself, 0). Every process must pass the same number of rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    gathered = _GatherWithGrad.apply(x) if with_grad else _all_gather_cat(x)
    return gathered, dist.get_rank()
