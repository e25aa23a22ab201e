"""Two-tower retrieval (DSSM, Huang et al. 2013; YouTube / Google two-tower, Yi et al. 2019).

The item tower reads the item's fields (id, genres, year, hashed title words, ...) and optional
pre-computed item vectors; the user tower reads the user's fields, the context fields (ctr) and
the history: the item vectors (as ranking uses them: normalised for cosine) of the last L items,
pooled by `tower.history`. Each tower ends in an MLP to D; the score is the cosine (or dot
product) divided by a temperature. The maths and every weight are `TwoTowerNet`
(`lit_recs.nn.two_tower`, `model.net`), sized by a `TowerConfig` (`tower: {dim: 128, ...}`);
this module wires in the data (feature tables, item vectors, sampling probabilities) and the loss.

Training signals (`loss`, a callable from `lit_recs.losses`), all on `TowerBatch` from
`lit_recs.data.two_tower.TwoTowerDataModule`:

- a pairwise loss (pos [B, 1], neg [B, N]) -> scalar: `lit_recs.losses.bce`, `bpr`, `hinge`,
  `Hinge` (another margin), `sampled_softmax`, over the row's sampled negatives;
- `lit_recs.losses.InBatchSoftmax` (the default): every positive of the batch is a candidate
  (accidental hits masked), plus the batch's sampled negatives as shared extra candidates (mixed
  negatives); its `logq_correction` subtracts log of each candidate's expected count, its
  `gather_across_devices` takes the candidates of every process (all_gather with gradients).

Task `ctr` (labelled rows) trains a classifier whatever `loss` says: BCE on the labels,
logit = similarity + bias.

Ranking computes the item tower once per evaluation epoch (`precompute`) and one matmul per user
batch.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lit_recs import losses
from lit_recs.data.batches import EvalBatch, FeatureBatch, TowerBatch
from lit_recs.data.fields import FeatureTables
from lit_recs.data.inputs import ModelInputs
from lit_recs.data.tokens import PAD, token_items
from lit_recs.models.base import ItemScorer
from lit_recs.models.features import FeatureModule, Side
from lit_recs.nn.two_tower import TowerConfig, TwoTowerNet, gather_across_processes

__all__ = ["TowerConfig", "TwoTower"]

# arguments of the old constructor -> where they went (a clear error instead of a TypeError)
_MOVED = {
    **{name: f"tower: TowerConfig({name}=...) (YAML: tower: {{{name}: ...}})" for name in (
        "embedding_dim", "user_hidden", "item_hidden", "dim", "dropout", "history",
        "history_layers", "history_heads", "similarity", "temperature")},
    "margin": "loss: lit_recs.losses.Hinge(margin) (YAML: {class_path: lit_recs.losses.Hinge, "
              "init_args: {margin: ...}})",
    "logq_correction": "loss: lit_recs.losses.InBatchSoftmax(logq_correction=...)",
    "gather_negatives_across_devices": "loss: lit_recs.losses.InBatchSoftmax("
                                       "gather_across_devices=...)",
}


def _loss_name(loss: Any) -> str:
    return getattr(loss, "__name__", type(loss).__name__)


class TwoTower(FeatureModule):
    """Two-tower model (see the module docstring).

    Args (num_features / num_fields / item_vector_dim / history_length are linked from the
    DataModule by the CLI):
        num_users / num_items / num_features / num_fields: sizes of the id and feature spaces.
        item_vector_dim: size of the data's pre-computed item vectors (0: none).
        history_length: L, the items of history the data serves (>= 1 for `tower.history`).
        tower: the towers' sizes and similarity (`TowerConfig`: embedding_dim, user_hidden,
            item_hidden, dim, dropout, history, history_layers, history_heads, similarity,
            temperature); a dict of the same keys is accepted (checkpoints store one).
        loss: a pairwise `lit_recs.losses.PairLoss` (bce, bpr, hinge, Hinge(margin),
            sampled_softmax) or a `lit_recs.losses.InBatchSoftmax`; None (the default) and the
            function `lit_recs.losses.in_batch_softmax` mean `InBatchSoftmax()` (no logQ
            correction, this process's candidates). A default of None rather than an instance:
            the CLI writes None to a run's config.yaml, and cannot write an instance.
        **kwargs: RecModule's (optimizer, top_k, mask_seen, ...). FeatureModule's `l2` (the
            FM-family penalty) must stay 0: regularise a two-tower model with the optimizer's
            weight decay.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_features: int,
        num_fields: int,
        item_vector_dim: int = 0,
        history_length: int = 0,
        tower: TowerConfig = TowerConfig(),  # noqa: B008 (frozen: never mutated)
        loss: losses.PairLoss | None = None,
        **kwargs: Any,
    ) -> None:
        moved = [f"{name} -> {where}" for name, where in _MOVED.items() if name in kwargs]
        if moved:
            raise TypeError("TwoTower's arguments moved: " + "; ".join(moved))
        if kwargs.get("l2", 0.0) != 0:
            raise ValueError(f"TwoTower has no l2 penalty (FM-family only), got l2={kwargs['l2']}: "
                             "use the optimizer's weight_decay")
        if isinstance(tower, dict):
            tower = TowerConfig(**tower)
        if not isinstance(tower, TowerConfig):
            raise TypeError(f"tower must be a TowerConfig (or a dict of its fields), got {tower!r}")
        if loss is None or loss is losses.in_batch_softmax:
            loss = losses.InBatchSoftmax()
        if not callable(loss):
            raise ValueError("loss must be a callable from lit_recs.losses: a pairwise loss (bce, "
                             "bpr, hinge, Hinge(margin), sampled_softmax) or InBatchSoftmax(...), "
                             f"got {loss!r}")
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.hparams["tower"] = asdict(tower)  # plain values: checkpoints load weights-only
        self.loss, self.in_batch = loss, isinstance(loss, losses.InBatchSoftmax)
        self.item_vector_dim, self.history_length = item_vector_dim, history_length
        self.net = TwoTowerNet(num_features, num_fields, tower, item_vector_dim, history_length)

    @property
    def tower(self) -> TowerConfig:
        return self.net.config

    # ------------------------------------------------------------------ data tables
    def attach_data(self, inputs: ModelInputs) -> None:
        """FeatureModule's feature tables, the item vectors and the sampling probabilities (logQ)."""
        super().attach_data(inputs)
        if inputs.item_vectors is not None:
            self.attach_item_vectors(inputs.item_vectors)
        if inputs.sampling_probabilities is not None:
            self.attach_sampling_probabilities(inputs.sampling_probabilities)

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

    def attach_sampling_probabilities(self, probabilities: dict[str, np.ndarray]) -> None:
        """Item distributions [I] of in-batch candidates (`positives`) and of extra negatives
        (`negatives`), for the logQ correction."""
        for name in ("positives", "negatives"):
            p = torch.from_numpy(np.asarray(probabilities[name])).float()
            self.register_buffer(f"_p_{name[:-1]}", p, persistent=False)

    # ------------------------------------------------------------------ towers (data -> net)
    def item_vectors(self, items: Tensor) -> Tensor:
        """Item tower: item indices [C] -> [C, D]."""
        index, value, _ = self.side_slots("item", items)
        vectors = self._item_vectors[items] if self.item_vector_dim else None
        return self.net.item_vectors(index, value, self._item_slot_field,
                                     self.side_fields("item"), vectors)

    def user_vectors(self, users: Tensor, history: Tensor | None, history_items: Tensor | None,
                     context: Tensor | None = None) -> Tensor:
        """User tower: users [B], history tokens [B, L] with their item vectors [B, L, D],
        context feature ids [B, Sc] -> [B, D]."""
        index, value, _ = self.side_slots("user", users)
        keep = None if history is None else history != PAD  # [B, L]
        return self.net.user_vectors(index, value, self._user_slot_field, self.side_fields("user"),
                                     history_items, keep, context,
                                     getattr(self, "_context_fields", None))

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
        if history is None or self.net.history_encoder is None:
            return torch.zeros(0, 0, dtype=torch.long, device=self.net.embedding.device)
        return token_items(history).clamp(min=0)  # [B, L] item ids (padding -> item 0, masked)

    def _user_and_items(self, batch: TowerBatch, *items: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The batch's user vectors [B, D] and the item vectors of each id tensor, the history's
        items read through the same tower run."""
        *vectors, hist_v = self._items_once(*items, self._history_ids(batch.history))
        user = self.user_vectors(batch.users, batch.history, self.net.ranking_vectors(hist_v),
                                 batch.context)
        return user, vectors

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: TowerBatch) -> Tensor:
        if batch.labels is not None:
            return F.binary_cross_entropy_with_logits(self.score_rows(batch), batch.labels)
        if self.in_batch:
            return self._in_batch_loss(batch)
        if batch.negatives is None:
            raise ValueError(f"loss={_loss_name(self.loss)} needs sampled negatives: set the "
                             "DataModule's num_negatives >= 1")
        user, (pos_v, neg_v) = self._user_and_items(batch, batch.items, batch.negatives)
        # the bias shifts every score alike: only BCE depends on it, the rest cancel it exactly
        bias = self.net.bias
        return self.loss(self.net.scores(user, pos_v) + bias, self.net.scores(user, neg_v) + bias)

    def _in_batch_loss(self, batch: TowerBatch) -> Tensor:
        extra = batch.negatives.reshape(-1) if batch.negatives is not None else \
            batch.items.new_zeros(0)  # [M] shared extra negatives
        user, (pos_v, neg_v) = self._user_and_items(batch, batch.items, extra)
        rank = 0
        if self.loss.gather_across_devices:  # every process's candidates: [W B, D], [W B], ...
            (pos_v, rank), (neg_v, _) = (gather_across_processes(v, True) for v in (pos_v, neg_v))
            pos_ids, neg_ids = (gather_across_processes(i, False)[0] for i in (batch.items, extra))
        else:
            pos_ids, neg_ids = batch.items, extra
        candidates = torch.cat([pos_v, neg_v])  # [C, D]
        ids = torch.cat([pos_ids, neg_ids])  # [C]
        logits = self.net.score_matrix(user, candidates)  # [B, C]
        logits = logits + self.net.bias  # cancels in the softmax
        targets = rank * len(batch) + torch.arange(len(batch), device=logits.device)  # [B]
        log_q = self._log_q(ids, len(pos_ids), len(neg_ids)) if self.loss.logq_correction \
            else None
        return self.loss(logits, targets, batch.items, ids, log_q)

    def _log_q(self, ids: Tensor, num_positive: int, num_negative: int) -> Tensor:
        """log of each candidate's expected count among num_positive in-batch draws (training
        frequencies) and num_negative draws of the extra negatives' distribution [C]."""
        if not hasattr(self, "_p_positive"):
            raise RuntimeError("logq_correction needs the sampling probabilities: train with a "
                               "TwoTowerDataModule or call "
                               "model.attach_data(datamodule.model_inputs('fit'))")
        expected = num_positive * self._p_positive[ids] + num_negative * self._p_negative[ids]
        return expected.clamp(min=1e-12).log()

    # ------------------------------------------------------------------ labelled rows
    def score_rows(self, batch: TowerBatch) -> Tensor:  # type: ignore[override]
        """Click logits of labelled rows [B]: similarity / temperature + bias."""
        user, (item_v,) = self._user_and_items(batch, batch.items)
        return self.net.scores(user, item_v) + self.net.bias

    def forward_rows(self, batch: FeatureBatch) -> tuple[Tensor, Tensor | None]:
        return self.score_rows(batch), None  # type: ignore[arg-type]

    def set_global_bias(self, value: float) -> None:
        self.net.bias.fill_(value)

    # ------------------------------------------------------------------ ranking
    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError("TwoTower does not score from one side's slots alone (item "
                                  "vectors, histories): use item_part() and user_part(batch)")

    def precompute(self) -> tuple[Tensor, Tensor] | None:
        """The item side of every item, once per evaluation epoch: (zeros [I], vectors [I, D] as
        ranking uses them); None without feature tables."""
        if not self.has_features():
            return None
        items = torch.arange(self.num_items, device=self.net.embedding.device)
        vec = self.net.ranking_vectors(self.item_vectors(items))  # [I, D]
        return vec.new_zeros(len(vec)), vec

    def user_part(self, batch: EvalBatch) -> Tensor:
        """The users' tower vectors [B, D], scaled so that user_part @ item_part.T = scores."""
        history = batch.sequences if self.net.history_encoder is not None else None
        hist_v = None if history is None else self.item_part()[1][self._history_ids(history)]
        return self.net.query_vectors(self.user_vectors(batch.users, history, hist_v))

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        user, items = self.user_part(batch), self.item_part()[1]  # [B, D], [I, D]
        return lambda cols: user @ items[cols].T  # [B, n]

    def score_candidates(self, batch: EvalBatch, items: Tensor) -> Tensor:
        user = self.user_part(batch)  # [B, D]
        return (user[:, None, :] * self.item_part()[1][items]).sum(-1)  # [B, C]

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, Tensor]:
        out = super().predict_step(batch, batch_idx)
        out["user_vectors"] = self.user_part(batch)[batch.weights > 0]  # [B', D]
        return out

    def item_embeddings(self) -> Tensor:
        """Every item's tower vector [I, D] as ranking uses them (normalised for cosine)."""
        return self.item_part()[1]
