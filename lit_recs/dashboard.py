"""The W&B dashboard of a run: what the model recommends, its metrics at every K, the run's files
as artifacts and its final results in the run's summary.

`WandbDashboard` is a Callback; the `lit-recs` command adds it to every run under the config key
`dashboard:` (`--dashboard.sample_users 50`, `--dashboard.log_checkpoint false`). It does
nothing (it reads no data and imports no wandb) unless the Trainer has a `WandbLogger`; under DDP
only the first process logs. With a plain Trainer, add `WandbDashboard()` to its callbacks for
the tables, and call `end_of_command(trainer, "fit", completed=True)` before `wandb.finish()`
for the summary and artifacts (the summary reads the results.json of a `ResultsWriter`). What
it logs:

- at the end of every test (`fit` tests its best checkpoint after training when
  `test_after_fit` is true): the Table `recommendations` (one row per user and rank: for a
  fixed, seeded sample of test users, their last training items, the top-K items of the
  evaluation's ranking with scores, seen items masked as the test masks them, and whether each
  hit the user's held-out items; raw ids, and titles when the data names its items), the Table
  `metrics_by_k` (one row per protocol and K: HR, NDCG, Recall, MRR, ... as logged) and the line
  chart `ndcg_by_k` (NDCG@K against K, one line per protocol);
- when the command ends (`end_of_command`, called by the CLI): the run's summary gets every
  metric of results.json under its logged name and results.json's `status` (also when the
  command failed or was interrupted); a completed command logs artifacts, each with the dataset
  fingerprint and git commit in its metadata: `model-<run id>` (type `model`, the best
  checkpoint of `fit`, unless `log_checkpoint` is false or the WandbLogger's own `log_model`
  uploads checkpoints), `results-<run id>` (results.json), `config-<run id>` (the resolved
  config.yaml) and, after `predict`, `predictions-<run id>` (predictions.parquet).

Offline runs (no credentials) keep the tables under `<run>/wandb/offline-run-*/files/media/table/`
and the artifacts' files in W&B's staging folder (`$WANDB_DATA_DIR`, default
`~/.local/share/wandb`) until `wandb sync <run>/wandb/offline-run-*` uploads them all.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor

from lit_recs.callbacks import ResultsWriter, TopKWriter, git_commit, git_dirty
from lit_recs.data.batches import EvalBatch
from lit_recs.data.datamodules import RecDataModule
from lit_recs.data.interactions import Interactions
from lit_recs.models.base import RecModule
from lit_recs.runtime import logs_checkpoints, started_wandb_run

log = logging.getLogger(__name__)

TABLE_ROWS = 10_000  # wandb.Table.MAX_ROWS: a logged Table is cut to this many rows
FIRST_METRICS = ("hr", "ndcg", "recall", "mrr")  # the per-K table's first columns, in this order
_METRIC_AT_K = re.compile(r"^test/(?:(?P<protocol>[^/@]+)/)?(?P<metric>[a-z_]+)@(?P<k>\d+)$")


class WandbDashboard(Callback):
    """W&B dashboard of a run, only with a WandbLogger: the tables `recommendations` and
    `metrics_by_k` and the chart `ndcg_by_k` after each test; artifacts and the summary when the
    command ends (lit_recs.dashboard says what each holds).

    Args:
        sample_users: test users in the `recommendations` table (0: no table). The same users
            for the same data and `seed`, so that runs compare row by row.
        top_k: recommended items shown per user.
        history: each user's last training items shown (time order, oldest first).
        seed: seeds the sample of users (not the global seed: every training seed shows the
            same users).
        log_checkpoint: log the best checkpoint as a `model` artifact. W&B copies the file into
            its staging folder, then uploads it: set false for big models.
    """

    def __init__(self, sample_users: int = 20, top_k: int = 10, history: int = 5, seed: int = 0,
                 log_checkpoint: bool = True) -> None:
        for name, value, low in (("sample_users", sample_users, 0), ("top_k", top_k, 1),
                                 ("history", history, 0)):
            if value < low:
                raise ValueError(f"dashboard.{name} must be >= {low}, got {value}")
        if sample_users * top_k > TABLE_ROWS:
            raise ValueError(f"dashboard.sample_users x dashboard.top_k = {sample_users} x {top_k} "
                             f"rows: a W&B Table keeps at most {TABLE_ROWS:,} (it truncates the "
                             "rest); lower one of them")
        self.sample_users, self.top_k, self.history = sample_users, top_k, history
        self.seed, self.log_checkpoint = seed, log_checkpoint

    # ------------------------------------------------------------ at the end of a test
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = wandb_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        import wandb

        logged: dict[str, Any] = {}
        columns, rows = metrics_by_k(
            {k: float(v) for k, v in trainer.callback_metrics.items()})
        if rows:
            table = wandb.Table(columns=columns, data=rows)
            logged["metrics_by_k"] = table
            logged["ndcg_by_k"] = wandb.plot.line(table, "k", "ndcg", stroke="protocol",
                                                  title="test NDCG@K")
        recommended = self.recommendations(trainer, pl_module)
        if recommended is not None:
            logged["recommendations"] = wandb.Table(columns=recommended[0], data=recommended[1])
        if logged:
            logger.experiment.log(logged)

    def recommendations(self, trainer: Trainer, model: LightningModule
                        ) -> tuple[list[str], list[list[Any]]] | None:
        """(columns, rows) of the `recommendations` table; None when there is nothing to show
        (no users asked for, a model or DataModule that does not rank the catalogue)."""
        datamodule = trainer.datamodule
        if self.sample_users == 0 or not isinstance(model, RecModule) or \
                not isinstance(datamodule, RecDataModule):
            return None
        dataset = datamodule.eval_dataset("test")  # the test's users, seen items and targets
        if len(dataset) == 0:
            return None
        rng = np.random.default_rng(self.seed)
        rows = np.sort(rng.choice(len(dataset), min(self.sample_users, len(dataset)),
                                  replace=False))  # [n]
        batch = move_data_to_device(dataset[rows], model.device)
        scores, items = top_items(model, batch, min(self.top_k, model.num_items))  # [n, K] each
        users = batch.users.cpu().numpy()  # [n]
        held = split_rows(batch.targets.cpu().numpy(), len(users))  # n arrays of item indices
        recent = last_items(datamodule.train, users, self.history)
        return recommendation_rows(datamodule.data, users, items.cpu().numpy(),
                                   scores.cpu().numpy(), held, recent)

    # ------------------------------------------------------------ at the end of the command
    def end_of_command(self, trainer: Trainer, subcommand: str | None, completed: bool) -> None:
        """The summary (results.json's metrics and status); artifacts when `completed`. Every
        process calls it (a multi-process `predict` waits for every process's file first)."""
        logger = wandb_logger(trainer)
        if logger is None:
            return
        log_dir = None
        if completed:  # collectives under DDP: every process takes part, in this order
            log_dir = trainer.log_dir  # where config.yaml is (broadcast from the first process)
            if subcommand == "predict" and trainer.world_size > 1:
                trainer.strategy.barrier("WandbDashboard")  # every process has written its file
        if not trainer.is_global_zero or (not completed and started_wandb_run(logger) is None):
            return  # a command that failed before W&B started has no run to annotate
        run = logger.experiment
        results = read_results(trainer)
        if results is not None:
            summary = {**results.get("metrics", {}), "status": results.get("status")}
            if results.get("error"):
                summary["error"] = results["error"]
            run.summary.update(summary)
        if completed:
            self.log_artifacts(run, trainer, logger, subcommand, results, log_dir)

    def log_artifacts(self, run: Any, trainer: Trainer, logger: WandbLogger,
                      subcommand: str | None, results: dict[str, Any] | None,
                      log_dir: str | None) -> None:
        """model (fit), results.json, config.yaml (in `log_dir`), predictions (predict): what
        exists of them."""
        meta = provenance(trainer, subcommand, results)
        ckpt = trainer.checkpoint_callback
        if subcommand == "fit" and self.log_checkpoint and not logs_checkpoints(logger) and \
                isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            score = ckpt.best_model_score
            log_files(run, "model", [Path(ckpt.best_model_path)], {
                **meta, "monitor": ckpt.monitor,
                "score": None if score is None else float(score),
                "model": type(trainer.lightning_module).__name__,
            }, aliases=["best", "latest"])
        if results is not None:  # fit, validate and test write one; predict does not
            log_files(run, "results", [results_path(trainer)], {**meta,
                                                               "status": results.get("status")})
        saver = _callback(trainer, SaveConfigCallback)
        if saver is not None and log_dir is not None:
            log_files(run, "config", [Path(log_dir) / saver.config_filename], meta)
        topk = _callback(trainer, TopKWriter)
        if subcommand == "predict" and topk is not None:
            log_files(run, "predictions", prediction_files(trainer, topk.filename), meta)


# ====================================================================== ranking the sample
@torch.no_grad()
def top_items(model: RecModule, batch: EvalBatch, k: int) -> tuple[Tensor, Tensor]:
    """Scores and items [B, K] of each user's top K in the evaluation's own ranking: seen items
    masked as `mask_seen` says, held-out items kept; a large catalogue is ranked in chunks
    (`RecModule.ranked_in_chunks`), never as one [B, I] block."""
    was_training = model.training
    model.eval()
    try:
        with model.evaluation_pass():
            if model.chunk_width(batch) is not None:
                ranking = model.ranked_in_chunks(batch, k)
                return ranking.top_values, ranking.top_items
            scores, items = model.masked_scores(batch).topk(k, dim=1)  # [B, K]
            return scores, items
    finally:
        model.train(was_training)


def split_rows(pairs: np.ndarray, n: int) -> list[np.ndarray]:
    """(row, item) pairs [2, P] sorted by row -> n arrays: each row's items."""
    bounds = np.searchsorted(pairs[0], np.arange(n + 1))  # [n + 1]
    return [pairs[1, bounds[r] : bounds[r + 1]] for r in range(n)]


def last_items(log: Interactions, users: np.ndarray, n: int) -> list[np.ndarray]:
    """Each user's last n items of `log` (time order, file order on ties; oldest first). One
    pass over the log for the few sampled users, no sort of the whole log."""
    rows = np.flatnonzero(np.isin(log.users, users))  # [m] rows of the sampled users
    time = log.timestamps[rows] if log.timestamps is not None else rows
    rows = rows[np.lexsort((time, log.users[rows]))]  # by user, then time (stable: file order)
    owners = log.users[rows]  # [m] sorted
    ends = np.searchsorted(owners, users, side="right")  # [n]
    starts = np.maximum(np.searchsorted(owners, users, side="left"), ends - n)
    return [log.items[rows[s:e]] for s, e in zip(starts, ends, strict=True)]


def recommendation_rows(data: Interactions, users: np.ndarray, items: np.ndarray,
                        scores: np.ndarray, held: list[np.ndarray], recent: list[np.ndarray]
                        ) -> tuple[list[str], list[list[Any]]]:
    """The `recommendations` table: one row per (user, rank) with raw ids.

    users [n], items / scores [n, K] (scores -inf: fewer than K unseen items, left out), held /
    recent: each user's held-out and last training items (indices). Columns: user, rank, item,
    score, hit (the item is one of the user's held-out items), last_train_items, held_out_items,
    and, when the data names its items, title, last_train_titles, held_out_titles.
    """
    named = data.item_names(np.zeros(0, dtype=np.int64)) is not None

    def ids(idx: np.ndarray) -> list[Any]:
        return data.item_ids[idx].tolist()

    def names(idx: np.ndarray) -> list[str | None]:
        return data.item_names(idx) or []

    columns = ["user", "rank", "item", "score", "hit", "last_train_items", "held_out_items"]
    if named:
        columns += ["title", "last_train_titles", "held_out_titles"]
    raw_users = data.user_ids[users].tolist()  # [n] raw ids (numbers or text)
    rows: list[list[Any]] = []
    for u, user in enumerate(raw_users):
        real = np.isfinite(scores[u])  # [K]
        top = items[u][real]  # [K']
        context = [ids(recent[u]), ids(held[u])]
        titles = [names(top), names(recent[u]), names(held[u])] if named else []
        hits = np.isin(top, held[u]).tolist()
        for rank, (item, score) in enumerate(zip(ids(top), scores[u][real].tolist(),
                                                 strict=True)):
            row = [user, rank + 1, item, score, hits[rank], *context]
            if named:
                row += [titles[0][rank], titles[1], titles[2]]
            rows.append(row)
    return columns, rows


def metrics_by_k(metrics: dict[str, float]) -> tuple[list[str], list[list[Any]]]:
    """The test metrics `test/[<protocol>/]<metric>@<k>` as a table: columns protocol (`full`
    or the sampled protocol's key), k, hr, ndcg, recall, mrr, then any other metric in name
    order; one row per (protocol, k); None where a protocol lacks a metric (coverage)."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for key, value in metrics.items():
        match = _METRIC_AT_K.match(key)
        if match:
            row = (match["protocol"] or "full", int(match["k"]))
            cells.setdefault(row, {})[match["metric"]] = value
    found = {name for values in cells.values() for name in values}
    names = [m for m in FIRST_METRICS if m in found] + sorted(found - set(FIRST_METRICS))
    rows = [[protocol, k, *(values.get(m) for m in names)]
            for (protocol, k), values in sorted(cells.items(), key=lambda c: (c[0][0] != "full",
                                                                              c[0]))]
    return ["protocol", "k", *names], rows


# ====================================================================== files and provenance
def wandb_logger(trainer: Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def _callback(trainer: Trainer, kind: type) -> Any:
    return next((cb for cb in trainer.callbacks if isinstance(cb, kind)), None)


def results_path(trainer: Trainer) -> Path | None:
    """Where the run's ResultsWriter writes results.json; None without one."""
    writer = _callback(trainer, ResultsWriter)
    return None if writer is None else Path(trainer.default_root_dir) / writer.filename


def read_results(trainer: Trainer) -> dict[str, Any] | None:
    """The run's results.json, None where there is none (no ResultsWriter; `predict`)."""
    path = results_path(trainer)
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text())


def provenance(trainer: Trainer, subcommand: str | None, results: dict[str, Any] | None
               ) -> dict[str, Any]:
    """What reproduces a run: dataset fingerprint, git commit, the subcommand, the run folder."""
    fingerprint = (results or {}).get("data_fingerprint") or \
        getattr(trainer.datamodule, "fingerprint", None)
    return {"data_fingerprint": fingerprint, "git_commit": git_commit(),
            "git_dirty": git_dirty(), "subcommand": subcommand,
            "run_folder": str(trainer.default_root_dir)}


def prediction_files(trainer: Trainer, filename: str) -> list[Path]:
    """TopKWriter's file(s): one, or one per process (`predictions-rank<r>.parquet`)."""
    root = Path(trainer.default_root_dir)
    if trainer.world_size == 1:
        return [root / filename]
    return [root / filename.replace(".parquet", f"-rank{r}.parquet")
            for r in range(trainer.world_size)]


def log_files(run: Any, kind: str, paths: list[Path], metadata: dict[str, Any],
              aliases: list[str] | None = None) -> None:
    """An artifact `<kind>-<run id>` of type `kind` holding the files that exist of `paths`."""
    import wandb

    present = [p for p in paths if p.is_file()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        log.warning("W&B artifact %s-%s: no file %s", kind, run.id, ", ".join(missing))
    if not present:
        return
    artifact = wandb.Artifact(f"{kind}-{run.id}", type=kind, metadata=metadata)
    for path in present:
        artifact.add_file(str(path), name=path.name)
    run.log_artifact(artifact, aliases=aliases or ["latest"])
