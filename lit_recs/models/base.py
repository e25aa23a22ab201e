"""`RecModule`: the training system every model shares.

A model implements two hooks and little else:

- `compute_loss(batch) -> Tensor`: a scalar training loss for one training batch;
- `score(batch: EvalBatch) -> Tensor [B, I]`: a score for every item, for the users in the batch.

Training/validation/test/predict steps, optimizer wiring (LightningCLI callables) and metric logging
live here once. Evaluation is full-catalogue ranking with seen items masked (`stage/metric@k`), and
the sampled protocol beside it (`stage/sampled99/metric@k`; `stage/sampled99pop/...` when the
negatives were drawn by popularity) when the DataModule draws negatives.

Models that score field-encoded rows (FM, FFM, two-tower) also implement
`score_rows(batch: FeatureBatch) -> Tensor [R]`; labelled evaluation rows (`FeatureDataModule`
with task `ctr` or `rating`) are then measured by `stage/auc`, `stage/logloss` (logits of a click)
or `stage/rmse`, `stage/mae` (predicted ratings).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lit_recs.data.batches import EvalBatch, FeatureBatch
from lit_recs.data.interactions import Interactions
from lit_recs.metrics import BinaryMetrics, RankingMetrics, RatingMetrics, slots_from_pairs


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


def check_top_k(top_k: Sequence[int], num_items: int) -> None:
    """Every cut-off K must be >= 1 and, for ranking data, at most the catalogue's size: beyond it
    precision@K and coverage@K are diluted by items that do not exist."""
    bad = [k for k in top_k if int(k) < 1 or (num_items > 0 and int(k) > num_items)]
    if not top_k or bad:
        raise ValueError(f"top_k: every cut-off must be in [1, num_items={num_items:,}] (the "
                         f"catalogue's size), got {list(top_k)}")


class RecModule(LightningModule):
    """Base class of every lit_recs model.

    Args:
        num_users / num_items: sizes of the id spaces (linked from the DataModule by the CLI).
        optimizer: a callable params -> optimizer (in YAML: class_path + init_args).
        lr_scheduler: optional callable optimizer -> scheduler.
        top_k: the cut-offs K of every ranking metric.
        mask_seen: exclude items the user had in training (and validation, at test time).
        predict_k: length of the recommendation lists written by `predict`.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        optimizer: OptimizerCallable = _adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        top_k: Sequence[int] = (5, 10, 20),
        mask_seen: bool = True,
        predict_k: int = 20,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "loss"])
        self.num_users, self.num_items = num_users, num_items
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.top_k, self.mask_seen, self.predict_k = tuple(top_k), mask_seen, predict_k
        self.metrics = torch.nn.ModuleDict({  # coverage only for full ranking
            "val": RankingMetrics(self.top_k, num_items or None),  # 0 items: rows-only data
            "test": RankingMetrics(self.top_k, num_items or None),
            "val_sampled": RankingMetrics(self.top_k),
            "test_sampled": RankingMetrics(self.top_k),
            "val_ctr": BinaryMetrics(), "test_ctr": BinaryMetrics(),
            "val_rating": RatingMetrics(), "test_rating": RatingMetrics(),
        })
        self._sampled_key: dict[str, str] = {}  # stage -> e.g. sampled99, sampled100pop

    # ------------------------------------------------------------------ hooks
    def compute_loss(self, batch: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(batch)")

    def score(self, batch: EvalBatch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement score(batch) -> [B, I]")

    def score_rows(self, batch: FeatureBatch) -> Tensor:
        """One score per field-encoded row [R]: the logit of a click (ctr, topn) or the predicted
        rating (rating). Models that read feature rows implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not score feature rows "
                                  "(FeatureBatch): evaluate it with a ranking DataModule")

    def score_candidates(self, batch: EvalBatch, items: Tensor) -> Tensor:
        """Scores of the given items only: items [B, C] -> [B, C].

        Used by the sampled protocol. The default gathers from `score`; a model that can score a
        subset faster than the whole catalogue overrides it.
        """
        return self.score(batch).gather(1, items)  # [B, C]

    def item_weights(self) -> Tensor | None:
        """Item-item weights [I, I], W[i, j] = how much item i adds to item j's score, for models
        that score through such a matrix (SLIM, EASE, ItemKNN); None otherwise. `predict` exports
        each item's top neighbours from it."""
        return None

    def history(self, batch: EvalBatch) -> Tensor:
        """The users' known items as a dense 0/1 matrix [B, I] (train; + validation at test time)."""
        rows = torch.zeros(len(batch), self.num_items, device=batch.users.device)  # [B, I]
        rows[batch.seen[0], batch.seen[1]] = 1.0
        return rows

    def setup(self, stage: str) -> None:
        """Before any data is served: options that the data makes impossible fail here."""
        check_top_k(self.top_k, self.num_items)

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        loss = self.compute_loss(batch)
        if loss is not None and self._writes_logs_now():
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

    def _writes_logs_now(self) -> bool:
        """Whether the Trainer writes step logs after this step (every `log_every_n_steps`).
        `self.log` costs about 1.5 ms on the CPU, as much as a whole FM step: training steps log
        only when the value is written, which leaves the logged curves unchanged."""
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None)
        return connector is None or bool(connector.should_update_logs)

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None  # closed-form / count-based models
        optimizer = self.optimizer(params)
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)  # ReduceLROnPlateau watches `monitor`
        monitor = getattr(scheduler, "monitor", "val/ndcg@10")
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": monitor}}

    # ------------------------------------------------------------------ evaluation
    def masked_scores(self, batch: EvalBatch) -> tuple[Tensor, Tensor]:
        """Scores [B, I] with seen items at -inf (held-out targets never masked), targets [B, I]."""
        with torch.autocast(batch.users.device.type, enabled=False):  # rank in full precision
            scores = self.score(batch).float()  # [B, I]
        targets = batch.target_mask(self.num_items)  # [B, I]
        if self.mask_seen and batch.seen.numel():
            t_rows, t_items = batch.targets  # [T], [T]
            kept = scores[t_rows, t_items]  # [T]
            minus_inf = torch.tensor(float("-inf"), device=scores.device)
            scores = scores.index_put((batch.seen[0], batch.seen[1]), minus_inf)  # copy, [B, I]
            scores[t_rows, t_items] = kept
        return scores, targets

    def _evaluate(self, batch: EvalBatch, stage: str) -> None:
        scores, targets = self.masked_scores(batch)  # [B, I], [B, I]
        self.metrics[stage].update(scores, targets, batch.weights)
        if batch.sampled is not None:
            self._evaluate_sampled(scores, targets, batch, stage)

    def _evaluate_sampled(self, scores: Tensor, targets: Tensor, batch: EvalBatch,
                          stage: str) -> None:
        """Sampled protocol: rank each user's targets among its N fixed negatives only.

        The candidates form a small [B, N + T] matrix (negatives, then the targets in item order),
        ranked by the same metric code as the full catalogue.
        """
        n = batch.sampled.shape[1]
        slots, valid = slots_from_pairs(*batch.targets, len(batch))  # [B, T], [B, T]
        candidates = torch.cat([batch.sampled, slots], dim=1)  # [B, N + T]
        if type(self).score_candidates is RecModule.score_candidates:
            cand_scores = scores.gather(1, candidates)  # [B, N + T], from the full ranking's scores
        else:
            with torch.autocast(batch.users.device.type, enabled=False):
                cand_scores = self.score_candidates(batch, candidates).float()  # [B, N + T]
        cand_scores[:, n:] = cand_scores[:, n:].masked_fill(~valid, float("-inf"))
        cand_targets = torch.cat([torch.zeros_like(batch.sampled, dtype=torch.bool), valid], 1)
        self.metrics[f"{stage}_sampled"].update(cand_scores, cand_targets, batch.weights)
        self._sampled_key[stage] = batch.sampled_key or f"sampled{n}"

    def _evaluate_rows(self, batch: FeatureBatch, stage: str) -> None:
        """Labelled rows: AUC / LogLoss of click logits, or RMSE / MAE of predicted ratings."""
        if len(batch) == 0:
            return  # a process's padding-only batch
        with torch.autocast(batch.labels.device.type, enabled=False):
            scores = self.score_rows(batch).float()  # [R]
        kind = "rating" if batch.task == "rating" else "ctr"
        self.metrics[f"{stage}_{kind}"].update(scores, batch.labels)

    def _log_metrics(self, stage: str) -> None:
        for key in (f"{stage}_ctr", f"{stage}_rating"):
            if self.metrics[key].update_called:
                self._log_values({f"{stage}/{k}": v.float()
                                  for k, v in self.metrics[key].compute().items()})
                self.metrics[key].reset()
        for key, prefix in ((stage, stage), (f"{stage}_sampled", None)):
            metric = self.metrics[key]
            if not metric.update_called:
                continue
            if prefix is None:
                prefix = f"{stage}/{self._sampled_key.get(stage, 'sampled')}"
            values = {f"{prefix}/{k}": v.float() for k, v in metric.compute().items()}
            self._log_values(values)
            metric.reset()

    def _log_values(self, values: dict[str, Tensor]) -> None:
        """Logs epoch-level metrics; the one that checkpointing watches also goes to the progress
        bar (its value after each validation, beside the training loss)."""
        ckpt = self._trainer.checkpoint_callback if self._trainer is not None else None
        monitor = getattr(ckpt, "monitor", None)
        shown = {k: v for k, v in values.items() if k == monitor}
        self.log_dict({k: v for k, v in values.items() if k not in shown})
        if shown:
            self.log_dict(shown, prog_bar=True)

    def validation_step(self, batch: EvalBatch | FeatureBatch, batch_idx: int) -> None:
        self._evaluate_any(batch, "val")

    def test_step(self, batch: EvalBatch | FeatureBatch, batch_idx: int) -> None:
        self._evaluate_any(batch, "test")

    def _evaluate_any(self, batch: Any, stage: str) -> None:
        if isinstance(batch, EvalBatch):
            self._evaluate(batch, stage)
        else:  # labelled rows (FeatureBatch, TowerBatch): `labels` and `task`
            self._evaluate_rows(batch, stage)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, Tensor]:
        """Top-`predict_k` unseen items per user: users [B'], items [B', K], scores [B', K]."""
        scores, _ = self.masked_scores(batch)  # [B, I]
        k = min(self.predict_k, self.num_items)
        top_scores, top_items = scores.topk(k, dim=1)  # [B, K]
        real = batch.weights > 0  # [B]
        return {"users": batch.users[real], "items": top_items[real], "scores": top_scores[real]}


class ClosedFormModule(RecModule):
    """Base of models fitted in closed form from the training interactions (no gradient steps).

    Subclasses implement `fit_interactions(train)` (store what they learn in buffers, so it is in the
    checkpoint) and `score`. `fit` calls it once when fitting starts; the training loop then runs a
    single epoch with nothing to optimise, validation picks the checkpoint as for any model.
    """

    def fit_interactions(self, train: Interactions) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement fit_interactions(train)")

    def on_fit_start(self) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "train"):
            raise ValueError(f"{type(self).__name__} is fitted from a lit_recs DataModule's "
                             "training split (trainer.fit(model, datamodule=...))")
        with torch.no_grad():
            self.fit_interactions(datamodule.train)

    @property
    def automatic_optimization(self) -> bool:
        return False  # no loss to optimise: the one training step below is the model's own

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Lightning counts optimizer steps (global_step) and checkpoints only after one: the fit
        # is one step of an optimizer with nothing to optimise (an empty tensor, learning rate 0).
        return torch.optim.SGD([torch.zeros(0, requires_grad=True)], lr=0.0)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        self.optimizers().step()  # the fit happened in on_fit_start; this marks the step done

    def compute_loss(self, batch: Any) -> None:  # type: ignore[override]
        return None  # nothing to optimise

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # The fit is done: after this first batch (a no-op) Lightning validates and stops, instead
        # of building a whole epoch of training batches that nothing uses.
        self.trainer.should_stop = True
