"""Two-tower retrieval (DSSM, Huang et al. 2013; YouTube / Google two-tower, Yi et al. 2019).

The item tower reads the item's fields (id, genres, year, hashed title words, ...) and optional
pre-computed item vectors; the user tower reads the user's fields, the context fields (ctr) and
the history: the item vectors (as ranking uses them: normalised for cosine) of the last L items,
pooled by `history`. Each tower ends in
an MLP to D; the score is the cosine (or dot product) divided by a temperature.

Training signals (`loss`), all on `TowerBatch` from `lit_recs.data.two_tower.TwoTowerDataModule`:
`bce`, `bpr`, `hinge` (margin) and `sampled_softmax` over the row's sampled negatives;
`in_batch_softmax` over every positive of the batch (accidental hits masked), plus the batch's
sampled negatives as shared extra candidates (mixed negatives), optional logQ correction, and with
`gather_negatives_across_devices` the candidates of every process (all_gather with gradients).
Task `ctr` trains a classifier (BCE on the labels, logit = similarity + bias).

Ranking computes the item tower once per evaluation epoch and one matmul per user batch.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lit_recs import losses
from lit_recs.data.batches import EvalBatch, TowerBatch
from lit_recs.data.fields import FeatureTables
from lit_recs.models.features import FeatureModule, Side
from lit_recs.nn.towers import (
    HistoryEncoder,
    HistoryKind,
    Similarity,
    Tower,
    pool_fields,
    ranking_vectors,
)
from lit_recs.nn.towers import similarity as similarity_matrix

Loss = Literal["bce", "bpr", "hinge", "sampled_softmax", "in_batch_softmax"]


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


class TwoTower(FeatureModule):
    """Two-tower model (see the module docstring).

    Args (besides FeatureModule's; num_features / num_fields / item_vector_dim / history_length are
    linked from the DataModule by the CLI):
        embedding_dim: E, the size of every feature embedding.
        user_hidden / item_hidden: hidden widths of each tower's MLP ([] = one linear map).
        dim: D, the output size of both towers.
        dropout: after every hidden layer.
        history: how the user tower pools its history: `none`, `mean`, `gru`, `transformer`.
        history_layers / history_heads: the transformer's size.
        similarity: `cosine` or `dot`; temperature: scores are similarity / temperature.
        loss: `bce`, `bpr`, `hinge`, `sampled_softmax` or `in_batch_softmax`; margin: hinge's.
        logq_correction: in-batch softmax subtracts log of each candidate's expected count.
        gather_negatives_across_devices: in-batch softmax over the candidates of all processes.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_features: int,
        num_fields: int,
        item_vector_dim: int = 0,
        history_length: int = 0,
        embedding_dim: int = 32,
        user_hidden: list[int] = (),  # type: ignore[assignment]
        item_hidden: list[int] = (),  # type: ignore[assignment]
        dim: int = 64,
        dropout: float = 0.0,
        history: HistoryKind = "none",
        history_layers: int = 1,
        history_heads: int = 2,
        similarity: Similarity = "cosine",
        temperature: float = 0.1,
        loss: Loss = "in_batch_softmax",
        margin: float = 1.0,
        logq_correction: bool = False,
        gather_negatives_across_devices: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        if loss not in Loss.__args__:  # type: ignore[attr-defined]
            raise ValueError(f"loss must be one of {Loss.__args__}, got {loss!r}")  # type: ignore
        if similarity not in ("cosine", "dot"):
            raise ValueError(f"similarity must be 'cosine' or 'dot', got {similarity!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if history != "none" and history_length < 1:
            raise ValueError(f"history={history!r} needs the data's history_length >= 1, got "
                             f"{history_length}")
        self.loss, self.margin, self.similarity = loss, margin, similarity
        self.temperature, self.logq_correction = temperature, logq_correction
        self.gather_negatives = gather_negatives_across_devices
        self.history_kind = history
        self.embedding = nn.Parameter(torch.randn(num_features, embedding_dim) * 0.1)  # [V, E]
        self.item_tower = Tower(num_fields, embedding_dim, item_vector_dim, list(item_hidden), dim,
                                dropout)
        history_dim = dim if history != "none" else 0
        self.user_tower = Tower(num_fields, embedding_dim, history_dim, list(user_hidden), dim,
                                dropout)
        self.history_encoder = None if history == "none" else HistoryEncoder(
            history, dim, history_length, history_layers, history_heads, dropout)
        # logit = score + bias: fitted by ctr and bce; a constant shift that the other losses cancel
        # (kept in their graph so that DDP sees every parameter used)
        self.bias = nn.Parameter(torch.zeros(()))
        self.item_vector_dim = item_vector_dim

    # ------------------------------------------------------------------ data tables
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        vectors = getattr(datamodule, "item_vectors", None)
        if vectors is not None:
            self.attach_item_vectors(vectors)
        probabilities = getattr(datamodule, "sampling_probabilities", None)
        if callable(probabilities) and self.logq_correction:
            self.attach_sampling_probabilities(**probabilities())

    def attach_features(self, tables: FeatureTables) -> None:
        super().attach_features(tables)
        for side in ("user", "item"):
            fields = self.side_fields(side)  # [F_side] consecutive field numbers
            slot_field = torch.from_numpy(getattr(tables, side).field[0].copy())  # [S_side]
            local = slot_field - (fields[0] if len(fields) else 0)
            self.register_buffer(f"_{side}_slot_field", local, persistent=False)
        context = [f.number for f in tables.side("context")]
        self.register_buffer("_context_fields", torch.tensor(context, dtype=torch.long),
                             persistent=False)

    def attach_item_vectors(self, vectors: np.ndarray) -> None:
        """Pre-computed item vectors [I, d] (data, not weights: not in the checkpoint)."""
        if vectors.shape != (self.num_items, self.item_vector_dim):
            raise ValueError(f"item vectors are {vectors.shape}, the model was built for "
                             f"{(self.num_items, self.item_vector_dim)}")
        self.register_buffer("_item_vectors", torch.from_numpy(vectors), persistent=False)

    def attach_sampling_probabilities(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        """Item distributions [I] of in-batch candidates and of extra negatives (logQ)."""
        self.register_buffer("_p_positive", torch.from_numpy(positives).float(), persistent=False)
        self.register_buffer("_p_negative", torch.from_numpy(negatives).float(), persistent=False)

    # ------------------------------------------------------------------ towers
    def item_vectors(self, items: Tensor) -> Tensor:
        """Item tower: item indices [C] -> [C, D]."""
        index, value, _ = self._side_slots("item", items)
        fields = self.side_fields("item")
        pooled = pool_fields(self.embedding, index, value, self._item_slot_field, len(fields))
        extra = self._item_vectors[items] if self.item_vector_dim else None
        return self.item_tower(pooled, fields, extra)

    def user_vectors(self, users: Tensor, history: Tensor | None, history_items: Tensor | None,
                     context: Tensor | None = None) -> Tensor:
        """User tower: users [B], history tokens [B, L] with their item vectors [B, L, D],
        context feature ids [B, Sc] -> [B, D]."""
        index, value, _ = self._side_slots("user", users)
        fields = self.side_fields("user")
        pooled = pool_fields(self.embedding, index, value, self._user_slot_field, len(fields))
        if context is not None and context.shape[1]:
            pooled = torch.cat([pooled, self.embedding[context]], 1)  # [B, F_u + Sc, E]
            fields = torch.cat([fields, self._context_fields])
        extra = None
        if self.history_encoder is not None:
            if history is None or history_items is None:
                raise ValueError(f"history={self.history_kind!r}: the batches carry no history "
                                 "(set the DataModule's history_length)")
            extra = self.history_encoder(history_items, history > 0)  # [B, D]
        return self.user_tower(pooled, fields, extra)

    def _ranking_vectors(self, raw: Tensor) -> Tensor:
        """Tower output -> the vector ranking uses (and the history encoder reads)."""
        return ranking_vectors(raw, self.similarity)

    def _items_once(self, *ids: Tensor) -> list[Tensor]:
        """Item vectors of several id tensors, the tower run once per distinct item."""
        flat = torch.cat([i.reshape(-1) for i in ids])
        distinct, inverse = torch.unique(flat, return_inverse=True)
        vectors = self.item_vectors(distinct)[inverse]  # [sum n, D]
        out = []
        for part, i in zip(vectors.split([t.numel() for t in ids]), ids, strict=True):
            out.append(part.view(*i.shape, vectors.shape[-1]))
        return out

    def _history_ids(self, history: Tensor | None) -> Tensor:
        if history is None or self.history_encoder is None:
            return torch.zeros(0, 0, dtype=torch.long, device=self.embedding.device)
        return (history - 1).clamp(min=0)  # [B, L] item ids (padding -> item 0, masked)

    def scores(self, user: Tensor, item: Tensor) -> Tensor:
        """user [B, D], item [B, ..., D] (the same rows) -> [B, ...] scaled similarities."""
        user, item = self._ranking_vectors(user), self._ranking_vectors(item)
        shape = (len(user),) + (1,) * (item.dim() - 2) + (user.shape[-1],)
        return (user.view(shape) * item).sum(-1) / self.temperature

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: TowerBatch) -> Tensor:
        if batch.labels is not None:
            return F.binary_cross_entropy_with_logits(self.score_rows(batch), batch.labels)
        if self.loss == "in_batch_softmax":
            return self._in_batch_loss(batch)
        if batch.negatives is None:
            raise ValueError(f"loss={self.loss!r} needs sampled negatives: set the DataModule's "
                             "num_negatives >= 1")
        pos_v, neg_v, hist_v = self._items_once(batch.items, batch.negatives,
                                                self._history_ids(batch.history))
        user = self.user_vectors(batch.users, batch.history, self._ranking_vectors(hist_v))
        # the bias shifts every score alike: only BCE depends on it, the rest cancel it exactly
        pos, neg = self.scores(user, pos_v) + self.bias, self.scores(user, neg_v) + self.bias
        if self.loss == "bce":
            return losses.bce(pos, neg)
        if self.loss == "bpr":
            return losses.bpr(pos, neg)
        if self.loss == "hinge":
            return losses.hinge(pos, neg, self.margin)
        return losses.sampled_softmax(pos, neg)

    def _in_batch_loss(self, batch: TowerBatch) -> Tensor:
        extra = batch.negatives.reshape(-1) if batch.negatives is not None else \
            batch.items.new_zeros(0)  # [M] shared extra negatives
        pos_v, neg_v, hist_v = self._items_once(batch.items, extra,
                                                self._history_ids(batch.history))
        user = self.user_vectors(batch.users, batch.history, self._ranking_vectors(hist_v))
        rank = 0
        if self.gather_negatives:  # every process's candidates: [W B, D], [W B], [W M, D], [W M]
            (pos_v, rank), (neg_v, _) = (gather_across_processes(v, True) for v in (pos_v, neg_v))
            pos_ids, neg_ids = (gather_across_processes(i, False)[0] for i in (batch.items, extra))
        else:
            pos_ids, neg_ids = batch.items, extra
        candidates = torch.cat([pos_v, neg_v])  # [C, D]
        ids = torch.cat([pos_ids, neg_ids])  # [C]
        logits = similarity_matrix(user, candidates, self.similarity, self.temperature)  # [B, C]
        logits = logits + self.bias  # cancels in the softmax
        targets = rank * len(batch) + torch.arange(len(batch), device=logits.device)  # [B]
        log_q = self._log_q(ids, len(pos_ids), len(neg_ids)) if self.logq_correction else None
        return losses.in_batch_softmax(logits, targets, batch.items, ids, log_q)

    def _log_q(self, ids: Tensor, num_positive: int, num_negative: int) -> Tensor:
        """log of each candidate's expected count among num_positive in-batch draws (training
        frequencies) and num_negative draws of the extra negatives' distribution [C]."""
        if not hasattr(self, "_p_positive"):
            raise RuntimeError("logq_correction needs the sampling probabilities: train with a "
                               "TwoTowerDataModule or call attach_sampling_probabilities")
        expected = num_positive * self._p_positive[ids] + num_negative * self._p_negative[ids]
        return expected.clamp(min=1e-12).log()

    # ------------------------------------------------------------------ evaluation
    def score_rows(self, batch: TowerBatch) -> Tensor:  # type: ignore[override]
        """Click logits of labelled rows [B]: similarity / temperature + bias."""
        item_v, hist_v = self._items_once(batch.items, self._history_ids(batch.history))
        user = self.user_vectors(batch.users, batch.history, self._ranking_vectors(hist_v),
                                 batch.context)
        return self.scores(user, item_v) + self.bias

    def set_global_bias(self, value: float) -> None:
        self.bias.fill_(value)

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        """Only the item side (all items at once, for `item_part`): (zeros [I], vec [I, D])."""
        items = torch.arange(self.num_items, device=self.embedding.device)
        vec = self._ranking_vectors(self.item_vectors(items))  # [I, D]
        return vec.new_zeros(len(vec)), vec

    def user_part(self, batch: EvalBatch) -> Tensor:
        """The users' tower vectors [B, D], scaled so that user_part @ item_part.T = scores."""
        history = batch.sequences if self.history_encoder is not None else None
        hist_v = None if history is None else self.item_part()[1][self._history_ids(history)]
        user = self.user_vectors(batch.users, history, hist_v)
        return self._ranking_vectors(user) / self.temperature

    def score(self, batch: EvalBatch) -> Tensor:
        return self.user_part(batch) @ self.item_part()[1].T  # [B, I]

    def score_candidates(self, batch: EvalBatch, items: Tensor) -> Tensor:
        user = self.user_part(batch)  # [B, D]
        return (user[:, None, :] * self.item_part()[1][items]).sum(-1)  # [B, C]

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, Tensor]:
        out = super().predict_step(batch, batch_idx)
        out["user_vectors"] = self.user_part(batch)[batch.weights > 0]  # [B', D]
        return out

    def item_embeddings(self) -> Tensor:
        """Every item's tower vector [I, D] as ranking uses it (normalised for cosine)."""
        return self.item_part()[1]
