"""`FeatureModule`: the training system of models that score field-encoded rows (FM, FFM, ...).

Training batches are `FeatureBatch` rows from `lit_recs.data.feature_rows.FeatureDataModule`:
binary cross-entropy on click / sampled-negative labels (tasks `ctr`, `topn`), squared error on
ratings (task `rating`). Labelled evaluation rows are measured by `RecModule` (AUC, LogLoss, RMSE).

Full-catalogue ranking (task `topn`, and `predict` for any task) never builds I feature rows per
user: a subclass splits its score into a user part and an item part,

    score(u, i) = bias_u + bias_i + <vec_u, vec_i>        (`encode_side`)

the item part is computed once per evaluation epoch, and a batch of users is one matmul. The
per-user and per-item slots come from the DataModule's `features` (attached in `setup`, or by
`attach_features` in a notebook); they are data, not weights, and stay out of checkpoints.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_recs.data.batches import EvalBatch, FeatureBatch
from lit_recs.data.fields import FeatureTables
from lit_recs.models.base import RecModule
from lit_recs.nn.fm import FFMNet, FMNet, Parts

Side = Literal["user", "item"]


class FeatureModule(RecModule):
    """Base of models over field-encoded rows.

    Args:
        num_features / num_fields: sizes of the feature and field spaces (linked from the
            DataModule by the CLI).
        **kwargs: RecModule's (optimizer, top_k, mask_seen, ...).

    Subclasses implement `score_rows(batch) -> [R]` and, for ranking, `encode_side`.
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        self.num_features, self.num_fields = num_features, num_fields
        self._item_part: tuple[Tensor, Tensor] | None = None
        self._cache_items = False

    # ------------------------------------------------------------------ hooks
    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        """Slots of users (side='user') or items [R, S] -> (bias [R], vec [R, D]) such that the
        score of the row joining user u and item i is bias_u + bias_i + <vec_u, vec_i>."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode_side to rank the "
                                  "catalogue")

    def forward_rows(self, batch: FeatureBatch) -> tuple[Tensor, Tensor | None]:
        """(scores [R], penalty added to the loss or None); default: score_rows, no penalty."""
        return self.score_rows(batch), None

    def set_global_bias(self, value: float) -> None:
        """Start the global bias at `value` (mean rating, or log-odds of a click) when fitting
        from scratch; models without one ignore it."""

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: FeatureBatch) -> Tensor:
        scores, penalty = self.forward_rows(batch)  # [R], scalar or None
        if batch.task == "rating":
            loss = F.mse_loss(scores, batch.labels)
        else:
            loss = F.binary_cross_entropy_with_logits(scores, batch.labels)
        return loss if penalty is None else loss + penalty

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        label_mean = getattr(datamodule, "label_mean", None)
        mean = label_mean() if callable(label_mean) else None
        if self.trainer.ckpt_path is not None or mean is None:
            return  # resumed, or sampled labels (topn): nothing to start from
        if datamodule.task == "ctr":
            mean = float(torch.tensor(mean).clamp(1e-6, 1 - 1e-6).logit())
        with torch.no_grad():
            self.set_global_bias(mean)

    # ------------------------------------------------------------------ feature tables
    def setup(self, stage: str) -> None:
        super().setup(stage)
        features = getattr(getattr(self.trainer, "datamodule", None), "features", None)
        if isinstance(features, FeatureTables):
            self.attach_features(features)

    def attach_features(self, tables: FeatureTables) -> None:
        """Per-user and per-item slots for ranking (non-persistent buffers: they follow the device).
        """
        if tables.num_features != self.num_features or tables.num_fields != self.num_fields:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_features} features in "
                f"{self.num_fields} fields; the data has {tables.num_features} in "
                f"{tables.num_fields} (same field configuration as the checkpoint?)")
        for side, slots in (("user", tables.user), ("item", tables.item)):
            for name in ("index", "value", "field"):
                self.register_buffer(f"_{side}_{name}", torch.from_numpy(getattr(slots, name)),
                                     persistent=False)
            fields = [f.number for f in tables.side(side)]
            self.register_buffer(f"_{side}_fields", torch.tensor(fields, dtype=torch.long),
                                 persistent=False)
        self._item_part = None

    def side_fields(self, side: Side) -> Tensor:
        """Field numbers of the user's or the item's slots [F_side]."""
        return getattr(self, f"_{side}_fields")

    def _side_slots(self, side: Side, rows: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        if not hasattr(self, f"_{side}_index"):
            raise RuntimeError(f"{type(self).__name__} ranks items from the DataModule's feature "
                               "tables: fit/test it with a FeatureDataModule, or call "
                               "attach_features(datamodule.features) first")
        slots = [getattr(self, f"_{side}_{name}") for name in ("index", "value", "field")]
        return tuple(s if rows is None else s[rows] for s in slots)  # type: ignore[return-value]

    # ------------------------------------------------------------------ ranking
    def item_part(self) -> tuple[Tensor, Tensor]:
        """(bias [I], vec [I, D]) of every item; computed once per evaluation epoch."""
        if self._cache_items and self._item_part is not None:
            return self._item_part
        part = self.encode_side(*self._side_slots("item", None), side="item")
        if self._cache_items:
            self._item_part = part
        return part

    def score(self, batch: EvalBatch) -> Tensor:
        bias_u, vec_u = self.encode_side(*self._side_slots("user", batch.users), side="user")
        bias_i, vec_i = self.item_part()  # [I], [I, D]
        return torch.addmm(bias_u[:, None] + bias_i[None, :], vec_u, vec_i.T)  # [B, I]

    def _start_eval_epoch(self) -> None:
        self._cache_items, self._item_part = True, None

    def _end_eval_epoch(self) -> None:
        self._cache_items, self._item_part = False, None

    def on_validation_epoch_start(self) -> None:
        self._start_eval_epoch()

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch()

    def on_predict_epoch_start(self) -> None:
        self._start_eval_epoch()

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch()
        super().on_validation_epoch_end()

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch()
        super().on_test_epoch_end()

    def on_predict_epoch_end(self) -> None:
        self._end_eval_epoch()


class FactorizationModule(FeatureModule):
    """FM-family models: a net with `parts(index, value, field, norms) -> Parts` and a global bias
    `net.bias` (`FMNet`, `FFMNet`). Scores rows, adds the L2 penalty from the same lookup, and ranks
    the catalogue from the user's and the item's Parts; a subclass builds `self.net` and says how
    a side's `Parts.vector` enters the user-item dot product (`side_vector`).

    Args:
        l2: weight of an L2 penalty on the table rows of the batch's features (sum over the real
            slots / R), as the SGD of libFM / libffm regularises.
    """

    net: FMNet | FFMNet

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, num_features, num_fields, **kwargs)
        self.l2 = l2

    def side_vector(self, vector: Tensor, side: Side) -> Tensor:
        """Parts.vector of one side [R, ...] -> [R, D], dotted with the other side's."""
        return vector

    def score_rows(self, batch: FeatureBatch) -> Tensor:
        return self.forward_rows(batch)[0]

    def forward_rows(self, batch: FeatureBatch) -> tuple[Tensor, Tensor | None]:
        parts = self.net.parts(batch.index, batch.value, batch.field, norms=self.l2 > 0)
        penalty = None if parts.norms is None else self.l2 * parts.norms.sum() / len(batch)
        return self.net.bias + parts.terms, penalty

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        parts: Parts = self.net.parts(index, value, field)
        bias = parts.terms + self.net.bias if side == "user" else parts.terms  # [R]
        return bias, self.side_vector(parts.vector, side)

    def set_global_bias(self, value: float) -> None:
        self.net.bias.fill_(value)
