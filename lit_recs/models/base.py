"""`RecModule`: the training system every model shares, and `ClosedFormModule` for closed forms.

A model implements two hooks:

- `compute_loss(batch) -> Tensor`: a scalar training loss for one training batch;
- `score(batch: EvalBatch) -> Tensor [B, I]`: a score for every item, for the users in the batch;
  or, instead, `item_scorer(batch) -> (items: slice) -> [B, n]`: the batch's user side computed
  once, returning a function that scores a slice of the catalogue. Evaluation and predict then
  score the catalogue in chunks of at most `score_cells` (user, item) cells, so a 1M-item
  catalogue never makes a [B, I] matrix; the metrics are exact across chunks
  (`lit_recs.metrics.ChunkedRanking`), and `score` is `item_scorer(batch)(slice(None))`.

and, where it needs them, four optional ones (each has a default that does nothing):

- `attach_data(inputs: ModelInputs)`: what the data gives beyond batches (the training matrix,
  feature tables, item vectors, sampling probabilities); called by `setup` on every stage;
- `precompute() -> Any`: what scoring reuses across one evaluation epoch (every item's vector,
  say); computed at most once per validation / test / predict epoch, read with `precomputed()`;
- `score_candidates(batch, items [B, C]) -> [B, C]`: the sampled protocol's scores, when the
  model can score a few items faster than the catalogue;
- `item_weights() -> [I, I] | None`: item-item models' weights, exported by `predict`.

Training/validation/test/predict steps, optimizer wiring (LightningCLI callables) and metric
logging live here once. Evaluation is full-catalogue ranking with seen items masked
(`stage/metric@k`), and the sampled protocol beside it (`stage/sampled99/metric@k`;
`stage/sampled100pop/...` when the negatives were drawn by popularity) when the DataModule draws
negatives. Labelled rows (AUC, LogLoss, RMSE) are evaluated by `FeatureModule`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

import lit_recs.strategies  # noqa: F401  (registers RecDDPStrategy: closed forms under DDP)
from lit_recs.data.batches import EvalBatch
from lit_recs.data.inputs import ModelInputs, model_inputs
from lit_recs.data.interactions import Interactions
from lit_recs.metrics import ChunkedRanking, RankingMetrics, exclude_seen, slots_from_pairs
from lit_recs.runtime import writes_logs_now

ItemScorer = Callable[[slice], Tensor]  # a slice of the catalogue -> scores [B, n]


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
        score_cells: with an `item_scorer`, evaluation and predict score at most this many
            (user, item) cells at once (default 2^25: 128 MB of float32 scores per chunk).
        ties: how every ranking metric breaks score ties (`lit_recs.metrics`): ``pessimistic``
            (a held-out item ranks after every item scored the same) or ``expected`` (the exact
            expectation over random orders within ties, logged under the usual names, with the
            pessimistic values beside them as ``stage/pessimistic/metric@k``).
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
        score_cells: int = 1 << 25,
        ties: Literal["pessimistic", "expected"] = "pessimistic",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "loss"])
        self.num_users, self.num_items = num_users, num_items
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.top_k, self.mask_seen, self.predict_k = tuple(top_k), mask_seen, predict_k
        if score_cells < 1:
            raise ValueError(f"score_cells must be positive, got {score_cells}")
        self.score_cells, self.ties = score_cells, ties
        self.metrics = torch.nn.ModuleDict({  # coverage only for full ranking
            "val": RankingMetrics(self.top_k, num_items or None, ties),  # 0 items: rows-only data
            "test": RankingMetrics(self.top_k, num_items or None, ties),
            "val_sampled": RankingMetrics(self.top_k, ties=ties),
            "test_sampled": RankingMetrics(self.top_k, ties=ties),
        })
        self._sampled_key: dict[str, str] = {}  # stage -> e.g. sampled99, sampled100pop
        self._pass_cache: dict[str, Any] | None = None  # within an evaluation_pass: precomputed

    # ------------------------------------------------------------------ hooks
    def compute_loss(self, batch: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss(batch)")

    def score(self, batch: EvalBatch) -> Tensor:
        scorer = self.item_scorer(batch)
        if scorer is None:
            raise NotImplementedError(f"{type(self).__name__} must implement score(batch) -> "
                                      "[B, I] or item_scorer(batch) -> (slice -> [B, n])")
        return scorer(slice(None))  # [B, I]

    def item_scorer(self, batch: EvalBatch) -> ItemScorer | None:
        """The batch's scorer of catalogue slices: items -> [B, n], with the user side computed
        once per batch. None (the default): the model only scores the whole catalogue."""
        return None

    def attach_data(self, inputs: ModelInputs) -> None:
        """Receives what the data gives beyond batches (`lit_recs.data.inputs`), on every stage,
        before any batch. Models that need it override this (and call super)."""

    def precompute(self) -> Any:
        """What scoring reuses across the batches of one evaluation epoch (weights do not change
        within it), e.g. every item's vector. Read it with `precomputed()`."""
        return None

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

    # ------------------------------------------------------------------ data and caches
    def setup(self, stage: str) -> None:
        """Before any data is served: options that the data makes impossible fail here, and the
        model receives the DataModule's `model_inputs(stage)`."""
        check_top_k(self.top_k, self.num_items)
        trainer = self._trainer  # None when called by hand, without a Trainer
        self.attach_data(model_inputs(trainer.datamodule if trainer is not None else None, stage))

    def precomputed(self) -> Any:
        """`precompute()`'s value: computed on first use within an evaluation pass and kept until
        it ends; afresh outside one."""
        cache = self._pass_cache  # a plain dict: a tensor kept here is never made a module member
        if cache is None:
            return self.precompute()
        if "value" not in cache:
            with torch.no_grad():
                cache["value"] = self.precompute()
        return cache["value"]

    @contextmanager
    def evaluation_pass(self) -> Iterator[None]:
        """Scoring with fixed weights, `precompute()` at most once. Every validation, test and
        predict epoch runs in one; so does a callback that scores users between epochs."""
        self._start_pass()
        try:
            yield
        finally:
            self._end_pass()

    def _start_pass(self) -> None:
        self._pass_cache = {}

    def _end_pass(self) -> None:
        self._pass_cache = None

    def on_validation_epoch_start(self) -> None:
        self._start_pass()

    def on_test_epoch_start(self) -> None:
        self._start_pass()

    def on_predict_epoch_start(self) -> None:
        self._start_pass()

    def on_predict_epoch_end(self) -> None:
        self._end_pass()

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        loss = self.compute_loss(batch)
        # `self.log` costs as much as a whole small step on the CPU: log only when the Trainer
        # writes the value (every log_every_n_steps), which leaves the curves unchanged
        if loss is not None and writes_logs_now(self._trainer):
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        return loss

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
    def chunk_width(self, batch: EvalBatch) -> int | None:
        """Items per chunk when this batch is scored in chunks; None: the whole catalogue at once
        (the model has no item_scorer, or B x I fits in score_cells)."""
        if type(self).item_scorer is RecModule.item_scorer:
            return None
        width = max(1, self.score_cells // max(len(batch), 1))
        return width if width < self.num_items else None

    def ranked_in_chunks(self, batch: EvalBatch, k: int, candidates: Tensor | None = None
                         ) -> ChunkedRanking:
        """The batch ranked chunk by chunk (`chunk_width` items at a time), seen items excluded
        as in `masked_scores`; `candidates` [B, C]: items whose scores are kept too."""
        ranking = ChunkedRanking(batch.targets, len(batch), k, candidates,
                                 count_ties=self.ties == "expected")
        width = self.chunk_width(batch) or self.num_items
        with torch.autocast(batch.users.device.type, enabled=False):  # rank in full precision
            scorer = self.item_scorer(batch)
            assert scorer is not None  # chunk_width said so
            for first in range(0, self.num_items, width):
                scores = scorer(slice(first, first + width)).float()  # [B, n]
                if scores.numel() and torch.isnan(scores.amax()):
                    raise ValueError("scores contain NaN; check the model for NaN output")
                ranking.add(first, self._exclude_in(scores, batch, first))
        return ranking

    def _exclude_in(self, scores: Tensor, batch: EvalBatch, first: int) -> Tensor:
        """`exclude_seen` on the chunk of items first .. first + n - 1."""
        if not self.mask_seen:
            return scores
        last = first + scores.shape[1]
        seen = batch.seen[:, (batch.seen[1] >= first) & (batch.seen[1] < last)]  # [2, S']
        keep = batch.targets[:, (batch.targets[1] >= first) & (batch.targets[1] < last)]
        offset = seen.new_tensor([[0], [first]])  # [2, 1]
        return exclude_seen(scores, seen - offset, keep=keep - offset)

    def masked_scores(self, batch: EvalBatch) -> Tensor:
        """Scores [B, I] in full precision, seen items at -inf when `mask_seen` (held-out targets
        are never masked)."""
        with torch.autocast(batch.users.device.type, enabled=False):  # rank in full precision
            scores = self.score(batch).float()  # [B, I]
        if self.mask_seen:
            scores = exclude_seen(scores, batch.seen, keep=batch.targets)
        return scores

    def evaluate(self, batch: EvalBatch, stage: str) -> None:
        """Full ranking of the batch's users, and the sampled protocol when it has negatives."""
        if self.chunk_width(batch) is not None:
            self._evaluate_chunked(batch, stage)
            return
        scores = self.masked_scores(batch)  # [B, I]
        self.metrics[stage].update(scores, batch.targets, batch.weights)
        if batch.sampled is not None:
            self._evaluate_sampled(batch, stage, lambda: scores.gather(1, self._candidates(batch)))

    def _evaluate_chunked(self, batch: EvalBatch, stage: str) -> None:
        """`evaluate` through `ranked_in_chunks`: the sampled protocol's candidates are gathered
        from the chunks unless the model scores candidates itself."""
        candidates = None
        if batch.sampled is not None and type(self).score_candidates is RecModule.score_candidates:
            candidates = self._candidates(batch)  # [B, N + T]
        ranking = self.ranked_in_chunks(batch, max(self.top_k), candidates)
        self.metrics[stage].update(ranking, weights=batch.weights)
        if batch.sampled is not None:
            self._evaluate_sampled(batch, stage, lambda: ranking.candidate_scores)

    @staticmethod
    def _candidates(batch: EvalBatch) -> Tensor:
        """The sampled protocol's candidates [B, N + T]: negatives, then the targets in item
        order (padding slots hold item 0 and are ignored)."""
        slots, _ = slots_from_pairs(*batch.targets, len(batch))  # [B, T]
        return torch.cat([batch.sampled, slots], dim=1)

    def _evaluate_sampled(self, batch: EvalBatch, stage: str,
                          from_ranking: Callable[[], Tensor]) -> None:
        """Sampled protocol: rank each user's targets among its N fixed negatives only.

        The candidates form a small [B, N + T] matrix (negatives, then the targets in item order),
        ranked by the same metric code as the full catalogue. Their scores come from the model's
        `score_candidates` when it has its own, else from the full ranking (`from_ranking`).
        """
        n = batch.sampled.shape[1]
        _, valid = slots_from_pairs(*batch.targets, len(batch))  # [B, T]
        if type(self).score_candidates is RecModule.score_candidates:
            cand_scores = from_ranking()  # [B, N + T]
        else:
            with torch.autocast(batch.users.device.type, enabled=False):
                cand_scores = self.score_candidates(batch, self._candidates(batch)).float()
        cand_scores[:, n:] = cand_scores[:, n:].masked_fill(~valid, float("-inf"))
        rows, slot = valid.nonzero(as_tuple=True)  # [T'] each, sorted by row then slot
        targets = torch.stack([rows, slot + n])  # [2, T'] (row, candidate column) pairs
        self.metrics[f"{stage}_sampled"].update(cand_scores, targets, batch.weights)
        self._sampled_key[stage] = batch.sampled_key or f"sampled{n}"

    def log_metrics(self, stage: str) -> None:
        """Logs and resets the stage's ranking metrics (those that saw a batch)."""
        for key, prefix in ((stage, stage), (f"{stage}_sampled", None)):
            metric = self.metrics[key]
            if not metric.update_called:
                continue
            if prefix is None:
                prefix = f"{stage}/{self._sampled_key.get(stage, 'sampled')}"
            values = {f"{prefix}/{k}": v.float() for k, v in metric.compute().items()}
            self.log_values(values)
            metric.reset()

    def log_values(self, values: dict[str, Tensor]) -> None:
        """Logs epoch-level metrics; the one that checkpointing watches also goes to the progress
        bar (its value after each validation, beside the training loss)."""
        monitor = getattr(self.trainer.checkpoint_callback, "monitor", None)
        shown = {k: v for k, v in values.items() if k == monitor}
        self.log_dict({k: v for k, v in values.items() if k not in shown})
        if shown:
            self.log_dict(shown, prog_bar=True)

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch: EvalBatch, batch_idx: int) -> None:
        self.evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._end_pass()
        self.log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._end_pass()
        self.log_metrics("test")

    def predict_step(self, batch: EvalBatch, batch_idx: int) -> dict[str, Tensor]:
        """Top-`predict_k` unseen items per user: users [B'], items [B', K], scores [B', K]."""
        k = min(self.predict_k, self.num_items)
        if self.chunk_width(batch) is not None:
            ranking = self.ranked_in_chunks(batch, k)
            top_scores, top_items = ranking.top_values, ranking.top_items  # [B, K]
        else:
            top_scores, top_items = self.masked_scores(batch).topk(k, dim=1)  # [B, K]
        real = batch.weights > 0  # [B]
        return {"users": batch.users[real], "items": top_items[real], "scores": top_scores[real]}


class ClosedFormModule(RecModule):
    """Base of models fitted in closed form from the training interactions (no gradient steps).

    Subclasses implement `fit_interactions(train)` (store what they learn in buffers, so it is in the
    checkpoint) and `score`. `fit` calls it once when fitting starts, on the training split the
    DataModule hands over (`ModelInputs.train`); the training loop then runs a single step with
    nothing to optimise, and validation picks the checkpoint as for any model.
    """

    _train: Interactions | None = None  # the training split, from attach_data

    def fit_interactions(self, train: Interactions) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement fit_interactions(train)")

    def attach_data(self, inputs: ModelInputs) -> None:
        super().attach_data(inputs)
        self._train = inputs.train

    def on_fit_start(self) -> None:
        train = self._train
        if train is None:
            raise ValueError(f"{type(self).__name__} is fitted from a lit_recs DataModule's "
                             "training split (trainer.fit(model, datamodule=...))")
        with torch.no_grad():
            self.fit_interactions(train)

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
        # The fit is done: after this first batch (a no-op) Lightning validates and stops
        # (`should_stop`, the Trainer's public stopping flag), instead of building a whole epoch
        # of training batches that nothing uses.
        self.trainer.should_stop = True
