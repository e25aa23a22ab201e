"""`FeatureModule`: the training system of models that score field-encoded rows (FM, FFM, two-tower).

Training batches are `FeatureBatch` rows from `lit_recs.data.feature_rows.FeatureDataModule`:
binary cross-entropy on click / sampled-negative labels (tasks `ctr`, `topn`), squared error on
ratings (task `rating`). Labelled evaluation rows are measured here: `stage/auc`, `stage/logloss`
(logits of a click) or `stage/rmse`, `stage/mae` (predicted ratings); ranking batches
(`EvalBatch`) by `RecModule`.

Full-catalogue ranking (task `topn`, and `predict` for any task) never builds I feature rows per
user: the score splits into a user part and an item part,

    score(u, i) = bias_u + bias_i + <vec_u, vec_i>        (`encode_side`)

the item part is computed once per evaluation epoch (`precompute`), and a batch of users is one
matmul. The per-user and per-item slots come from the DataModule's feature tables
(`ModelInputs.features`, received by `attach_data`); they are data, not weights, and stay out of
checkpoints.

The defaults below run any `self.net` with FM's interface (`lit_recs.nn.fm.FactorizationNet`:
`rows`, `encode_side`, `bias`): FM and FFM only build their net. A model with other maths
(TwoTower) overrides `forward_rows`, `encode_side` and `set_global_bias`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_recs.data.batches import EvalBatch, FeatureBatch
from lit_recs.data.fields import FeatureTables
from lit_recs.data.inputs import ModelInputs
from lit_recs.metrics import BinaryMetrics, RatingMetrics
from lit_recs.models.base import ItemScorer, RecModule

Side = Literal["user", "item"]


class FeatureModule(RecModule):
    """Base of models over field-encoded rows.

    Args:
        num_features / num_fields: sizes of the feature and field spaces (linked from the
            DataModule by the CLI).
        l2: weight of an L2 penalty on the table rows of the batch's features (sum over the real
            slots / R), as the SGD of libFM / libffm regularises (FM-family nets).
        **kwargs: RecModule's (optimizer, top_k, mask_seen, ...).
    """

    def __init__(self, num_users: int, num_items: int, num_features: int, num_fields: int,
                 l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(num_users, num_items, **kwargs)
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        self.num_features, self.num_fields, self.l2 = num_features, num_fields, l2
        self.row_metrics = torch.nn.ModuleDict({
            "val_ctr": BinaryMetrics(), "test_ctr": BinaryMetrics(),
            "val_rating": RatingMetrics(), "test_rating": RatingMetrics(),
        })
        self._initial_bias: float | None = None

    # ------------------------------------------------------------------ maths (FM-family defaults)
    def forward_rows(self, batch: FeatureBatch) -> tuple[Tensor, Tensor | None]:
        """(scores [R]: logits of a click or predicted ratings, penalty added to the loss or None)."""
        return self.net.rows(batch.index, batch.value, batch.field, self.l2)

    def score_rows(self, batch: FeatureBatch) -> Tensor:
        """One score per labelled row [R]."""
        return self.forward_rows(batch)[0]

    def encode_side(self, index: Tensor, value: Tensor, field: Tensor, side: Side
                    ) -> tuple[Tensor, Tensor]:
        """Slots of users (side='user') or items [R, S] -> (bias [R], vec [R, D]) such that the
        score of the row joining user u and item i is bias_u + bias_i + <vec_u, vec_i>."""
        return self.net.encode_side(index, value, field, side, self.side_fields("user"),
                                    self.side_fields("item"))

    def set_global_bias(self, value: float) -> None:
        """Start the global bias at `value` (mean rating, or log-odds of a click)."""
        self.net.bias.fill_(value)

    # ------------------------------------------------------------------ training
    def compute_loss(self, batch: FeatureBatch) -> Tensor:
        scores, penalty = self.forward_rows(batch)  # [R], scalar or None
        if batch.task == "rating":
            loss = F.mse_loss(scores, batch.labels)
        else:
            loss = F.binary_cross_entropy_with_logits(scores, batch.labels)
        return loss if penalty is None else loss + penalty

    def on_fit_start(self) -> None:
        if self.trainer.ckpt_path is not None or self._initial_bias is None:
            return  # resumed, or sampled labels (topn): nothing to start from
        with torch.no_grad():
            self.set_global_bias(self._initial_bias)

    # ------------------------------------------------------------------ data
    def attach_data(self, inputs: ModelInputs) -> None:
        super().attach_data(inputs)
        self._initial_bias = inputs.initial_bias
        if inputs.features is not None:
            self.attach_features(inputs.features)

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

    def has_features(self) -> bool:
        return hasattr(self, "_item_index")

    def side_fields(self, side: Side) -> Tensor:
        """Field numbers of the user's or the item's slots [F_side]."""
        return getattr(self, f"_{side}_fields")

    def side_slots(self, side: Side, rows: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(index, value, field) [R, S] of the given users / items (None: all of them)."""
        if not self.has_features():
            raise RuntimeError(f"{type(self).__name__} ranks items from the DataModule's feature "
                               "tables: fit/test it with a FeatureDataModule, or call "
                               "model.attach_data(datamodule.model_inputs('test')) first")
        slots = [getattr(self, f"_{side}_{name}") for name in ("index", "value", "field")]
        return tuple(s if rows is None else s[rows] for s in slots)  # type: ignore[return-value]

    # ------------------------------------------------------------------ ranking
    def precompute(self) -> tuple[Tensor, Tensor] | None:
        """(bias [I], vec [I, D]) of every item, once per evaluation epoch (None without tables)."""
        if not self.has_features():
            return None  # labelled rows only (LibFFMDataModule): nothing is ranked
        return self.encode_side(*self.side_slots("item", None), side="item")

    def item_part(self) -> tuple[Tensor, Tensor]:
        part = self.precomputed()
        if part is None:
            self.side_slots("item", None)  # raises: no feature tables
        return part

    def item_scorer(self, batch: EvalBatch) -> ItemScorer:
        bias_u, vec_u = self.encode_side(*self.side_slots("user", batch.users), side="user")
        bias_i, vec_i = self.item_part()  # [I], [I, D]
        return lambda cols: torch.addmm(bias_u[:, None] + bias_i[None, cols], vec_u,
                                        vec_i[cols].T)  # [B, n]

    # ------------------------------------------------------------------ labelled rows
    def evaluate_rows(self, batch: Any, stage: str) -> None:
        """Labelled rows (FeatureBatch, TowerBatch with labels): AUC / LogLoss of click logits,
        or RMSE / MAE of predicted ratings."""
        if len(batch) == 0:
            return  # a process's padding-only batch
        with torch.autocast(batch.labels.device.type, enabled=False):
            scores = self.score_rows(batch).float()  # [R]
        kind = "rating" if batch.task == "rating" else "ctr"
        self.row_metrics[f"{stage}_{kind}"].update(scores, batch.labels)

    def evaluate(self, batch: Any, stage: str) -> None:
        """Ranking batches (EvalBatch) as every model; labelled rows by `evaluate_rows`."""
        if isinstance(batch, EvalBatch):
            super().evaluate(batch, stage)
        else:
            self.evaluate_rows(batch, stage)

    def log_metrics(self, stage: str) -> None:
        for key in (f"{stage}_ctr", f"{stage}_rating"):
            if self.row_metrics[key].update_called:
                self.log_values({f"{stage}/{k}": v.float()
                                 for k, v in self.row_metrics[key].compute().items()})
                self.row_metrics[key].reset()
        super().log_metrics(stage)
