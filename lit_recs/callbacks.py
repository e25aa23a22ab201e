"""Callbacks: the run's results.json, top-K lists and embeddings written by `predict`, and the
hard-negative miner."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Literal

import lightning
import numpy as np
import polars as pl
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    EarlyStopping,
    ModelCheckpoint,
    Timer,
)
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import move_data_to_device, rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor

from lit_recs.data.datamodules import global_seed
from lit_recs.data.sampling import EvalShardSampler
from lit_recs.metrics import TIE_GAP_TOLERANCE, exclude_seen, tie_gaps
from lit_recs.runtime import hold_freed_memory, release_free_heap


def git_commit(path: str | Path | None = None) -> str | None:
    """The commit of the checkout that holds `path` (default: this package), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_dirty(path: str | Path | None = None) -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files (None outside git)."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def versions() -> dict[str, str]:
    import lit_recs

    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "numpy": np.__version__, "polars": pl.__version__,
        "lit_recs": lit_recs.__version__,
    }


class HeapPolicy(Callback):
    """The C heap during training: freed blocks are kept for reuse within an epoch
    (`lit_recs.runtime.hold_freed_memory`, set when fitting starts: faster CPU epochs, see the
    README's Speed section) and the free heap goes back to the OS after every training epoch
    (`lit_recs.runtime.release_free_heap`, which bounds the memory kept). The CLI adds it to every
    `fit`; add it to a Trainer of your own for the same CPU speed."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        hold_freed_memory()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        release_free_heap()


class StillImproving(Callback):
    """Warns when training ended on a limit (max_epochs, max_steps or max_time) while the monitored
    validation metric was still improving: its best value came in the last `last` evaluations and
    early stopping never fired. The warning names the limit that stopped the run. Under-trained
    models (BERT4Rec in most frameworks) are the commonest reason for weak results. The CLI adds it
    to every `fit`, watching the ModelCheckpoint's monitor; its history is in the checkpoint, so a
    resumed run judges all of its evaluations."""

    def __init__(self, monitor: str = "val/ndcg@10", mode: str = "max", last: int = 3) -> None:
        self.monitor, self.mode, self.last = monitor, mode, last
        self.history: list[float] = []
        self.warning: str | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and value is not None:
            self.history.append(float(value))

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [float(v) for v in state_dict.get("history", [])]

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        stopped = any(isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0
                      for cb in trainer.callbacks)
        if stopped or len(self.history) < 2:
            return
        values = np.array(self.history)
        best = int(np.argmax(values) if self.mode == "max" else np.argmin(values))
        if best > 0 and best >= len(values) - self.last:  # improved, and recently
            self.warning = (f"{self.monitor} was still improving when training ended (best "
                            f"{values[best]:.4f} at evaluation {best + 1} of {len(values)}): "
                            f"{stopping_limit(trainer)}")
            if trainer.is_global_zero:  # one line, once (results.json keeps it too)
                logging.getLogger(__name__).warning(self.warning)


def ties_summary(module: LightningModule | None, metrics: dict[str, float]
                 ) -> dict[str, Any] | None:
    """results.json's `ties`: the model's tie policy and, under `expected`, the metrics where it
    matters (`tie_gaps`); None for a module without a tie policy."""
    policy = getattr(module, "ties", None)
    if policy is None:
        return None
    if policy != "expected":
        return {"policy": policy}
    return {"policy": policy, "tolerance": TIE_GAP_TOLERANCE, "gaps": tie_gaps(metrics)}


def report_tie_gaps(module: LightningModule | None, metrics: dict[str, Any]) -> None:
    """Console lines, under the expected tie policy: each metric whose expected and pessimistic
    values differ by more than the tolerance, or one line saying that none does."""
    if getattr(module, "ties", None) != "expected":
        return
    gaps = tie_gaps(metrics)
    log = logging.getLogger("lit_recs")
    if not gaps:
        log.info("ties: expected and pessimistic metrics agree within %g", TIE_GAP_TOLERANCE)
        return
    width = max(len(key) for key in gaps)
    lines = [f"  {key:<{width}}  expected {gap['expected']:.4f}  pessimistic "
             f"{gap['pessimistic']:.4f}  tie_gap {gap['tie_gap']:+.4f}"
             for key, gap in gaps.items()]
    log.info("ties: %d metrics differ by more than %g between random order within ties "
             "(expected, reported) and ties ranked last (pessimistic):\n%s",
             len(gaps), TIE_GAP_TOLERANCE, "\n".join(lines))


def stopping_limit(trainer: Trainer) -> str:
    """Which of the Trainer's limits ended `fit`, as advice: max_time, max_steps or max_epochs."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    if timer is not None and timer._duration is not None and timer.time_remaining() <= 0:
        return f"trainer.max_time ({timer._duration:.0f} s) stopped it: raise trainer.max_time"
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
        return f"trainer.max_steps ({max_steps}) stopped it: raise trainer.max_steps"
    return f"trainer.max_epochs ({trainer.max_epochs}) stopped it: raise trainer.max_epochs"


class ResultsWriter(Callback):
    """Writes `results.json` into `trainer.default_root_dir` (beside the checkpoints).

    It holds the config (when given), every final logged metric keyed by its logged name
    (`test/ndcg@10`), epochs, the best checkpoint, wall times per stage, the dataset fingerprint,
    the git commit and package versions. Rewritten at the end of fit, validate and test, and when
    a command stops on an exception.

    `status` says how the command ended: `completed`, `interrupted` (SIGTERM, SIGINT: `epochs` is
    then the number of completed epochs, and `last_checkpoint` the file to continue from) or `failed`
    (`error` holds the exception). `best_val` holds every `val/*` metric of the evaluation with the
    best monitored value so far, and its epoch (kept in the checkpoint, so a resumed run continues
    it). `warnings` lists what the run should not pass over silently: the data's (e.g. ties in the
    split) and StillImproving's. `data_summary` states what the data became (the DataModule's
    `data_summary`: sizes before and after each preprocessing step and why rows went, density,
    events per user, the split's parts and the users each part lacks; null for a DataModule
    without one). `ties` names the model's tie policy (`RecModule.ties`); under `expected` it holds
    `gaps`: each final metric whose expected and pessimistic values (`stage/.../pessimistic/metric@k`
    in `metrics`) differ by more than `tolerance`, with both values and `tie_gap` = expected -
    pessimistic (`lit_recs.metrics.tie_gaps`), also printed at the end of each stage.
    """

    def __init__(self, config: dict[str, Any] | None = None, filename: str = "results.json"):
        self.config, self.filename = config, filename
        self.metrics: dict[str, float] = {}
        self.timings: dict[str, float] = {}
        self.status, self.error = "running", None
        self.best_val: dict[str, Any] = {}
        self._start: dict[str, float] = {}

    def _begin(self, stage: str) -> None:
        self._start[stage] = time.perf_counter()

    def _end(self, trainer: Trainer, stage: str) -> None:
        self.timings[f"{stage}_s"] = round(time.perf_counter() - self._start.pop(stage, 0.0), 3)
        for key, value in trainer.callback_metrics.items():
            self.metrics[key] = float(value)
        self.status = "completed"
        self.write(trainer)
        if trainer.is_global_zero:
            report_tie_gaps(trainer.lightning_module, trainer.callback_metrics)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._begin("fit")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, "fit")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._begin("test")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._end(trainer, "test")

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._begin("validate")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._track_best(trainer)
        if "validate" in self._start:
            self._end(trainer, "validate")

    def _track_best(self, trainer: Trainer) -> None:
        """Keep every val/* metric of the evaluation with the best monitored value so far."""
        ckpt = trainer.checkpoint_callback
        monitor = ckpt.monitor if isinstance(ckpt, ModelCheckpoint) else None
        value = trainer.callback_metrics.get(monitor) if monitor else None
        if value is None:
            return
        best = self.best_val.get("metrics", {}).get(monitor)
        if best is None or (float(value) > best if ckpt.mode == "max" else float(value) < best):
            self.best_val = {
                "epoch": trainer.current_epoch, "monitor": monitor,
                "metrics": {k: float(v) for k, v in sorted(trainer.callback_metrics.items())
                            if k.startswith("val/")},
            }

    def on_exception(self, trainer: Trainer, pl_module: LightningModule,
                     exception: BaseException) -> None:
        interrupted = isinstance(exception, KeyboardInterrupt | SIGTERMException)
        self.status = "interrupted" if interrupted else "failed"
        self.error = None if interrupted else f"{type(exception).__name__}: {exception}"
        for key, value in trainer.callback_metrics.items():
            self.metrics.setdefault(key, float(value))
        self.write(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"best_val": self.best_val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val = state_dict.get("best_val", {})

    @rank_zero_only
    def write(self, trainer: Trainer) -> None:
        path = Path(trainer.default_root_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.results(trainer), indent=2, default=str))

    def results(self, trainer: Trainer) -> dict[str, Any]:
        ckpt = trainer.checkpoint_callback
        best, last = None, None
        if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path:
            score = ckpt.best_model_score
            best = {"path": ckpt.best_model_path, "monitor": ckpt.monitor,
                    "score": None if score is None else float(score)}
        if isinstance(ckpt, ModelCheckpoint) and ckpt.last_model_path:
            last = ckpt.last_model_path
        datamodule = trainer.datamodule
        result = {
            "status": self.status,
            "config": self.config,
            "metrics": dict(sorted(self.metrics.items())),
            "best_val": self.best_val or None,
            "epochs": trainer.current_epoch,
            "global_steps": trainer.global_step,
            "best_checkpoint": best,
            "last_checkpoint": last,
            "timings": self.timings,
            "data_fingerprint": getattr(datamodule, "fingerprint", None),
            "data_summary": getattr(datamodule, "data_summary", None),
            "git_commit": git_commit(),
            "git_dirty": git_dirty(),
            "world_size": trainer.world_size,
            "warnings": [*getattr(datamodule, "data_warnings", []),
                         *(cb.warning for cb in trainer.callbacks
                           if isinstance(cb, StillImproving) and cb.warning)],
            "ties": ties_summary(trainer.lightning_module, self.metrics),
            "versions": versions(),
            "threads": {"torch": torch.get_num_threads(),
                        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")},
        }
        if self.error is not None:
            result["error"] = self.error
        return result


class RandomState(Callback):
    """Keeps torch's random generators (the CPU's, and each CUDA device's once CUDA is in use) in
    every checkpoint and restores them when `fit` resumes from one, so that a run continued from
    `last.ckpt` draws the same dropout masks (and any other torch draws) as a run that was never
    stopped. The data's draws need nothing: they are seeded per (seed, epoch, rank, batch). The
    CLI adds it to every `fit`."""

    def state_dict(self) -> dict[str, Any]:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
        return {"torch": torch.get_rng_state(), "cuda": cuda}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class EpochSummary(Callback):
    """One console line per training epoch when the progress bar is off (a log redirected to a
    file): the epoch, the mean training loss, the monitored validation metric (and its best so
    far) and the epoch's wall time, validation included. The CLI adds it to `fit` when
    `trainer.enable_progress_bar` is false."""

    def __init__(self, monitor: str | None = "val/ndcg@10", mode: str = "max") -> None:
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self._loss: Tensor | None = None
        self._steps, self._start = 0, 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._loss, self._steps, self._start = None, 0, time.perf_counter()

    def _best(self, trainer: Trainer, value: float) -> float:
        """The best monitored value so far, this epoch's included (the checkpoint callback's best,
        restored on resume, is updated only after this hook)."""
        ckpt = trainer.checkpoint_callback
        score = getattr(ckpt, "best_model_score", None)
        if getattr(ckpt, "monitor", None) == self.monitor and score is not None:
            self.best = float(score) if self.best is None else self.best
        pick = max if self.mode == "max" else min
        self.best = value if self.best is None else pick(self.best, value)
        return self.best

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor):  # summed on the device: no synchronisation per step
            self._loss = loss.detach() if self._loss is None else self._loss + loss.detach()
            self._steps += 1

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        if self._loss is not None:
            parts.append(f"train/loss {float(self._loss) / self._steps:.4f}")
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is not None:
            best = self._best(trainer, float(value))
            parts.append(f"{self.monitor} {float(value):.4f} (best {best:.4f})")
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        if trainer.is_global_zero:
            logging.getLogger("lit_recs").info("  ".join(parts))


class TopKWriter(BasePredictionWriter):
    """Writes `predict`'s top-K lists with raw ids to `<default_root_dir>/predictions.parquet`.

    Columns: user, rank (1 = best), item, score; seen items never appear (a user with fewer than K
    unseen items gets a shorter list). With several processes each writes
    `predictions-rank<r>.parquet` (every user is in exactly one of them).

    Models with item-item weights (`item_weights()`: SLIM, EASE, ItemKNN) also get
    `neighbours.parquet`: item, rank, neighbour, weight - each item's top-K neighbours (the items
    that add most to its score, positive weights only), written once (rank 0).

    Embedding models (predict_step returns `user_vectors`, the model has `item_embeddings()`:
    TwoTower) also get `user_embeddings` and `item_embeddings` (`embeddings: parquet`: columns
    user / item and vector; `npz`: arrays ids and vectors) for an ANN index: the dot product of a
    user's and an item's vectors is the model's score.
    """

    def __init__(self, filename: str = "predictions.parquet",
                 embeddings: Literal["parquet", "npz"] = "parquet") -> None:
        super().__init__(write_interval="batch")
        if embeddings not in ("parquet", "npz"):
            raise ValueError(f"embeddings must be 'parquet' or 'npz', got {embeddings!r}")
        self.filename, self.embeddings = filename, embeddings
        self._parts: list[dict[str, np.ndarray]] = []

    def write_on_batch_end(self, trainer: Trainer, pl_module: LightningModule, prediction: Any,
                           batch_indices: Any, batch: Any, batch_idx: int,
                           dataloader_idx: int = 0) -> None:
        self._parts.append({k: v.detach().cpu().numpy() for k, v in prediction.items()})

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._parts:
            return
        parts, self._parts = self._parts, []
        users = np.concatenate([p["users"] for p in parts])  # [U]
        items = np.concatenate([p["items"] for p in parts])  # [U, K]
        scores = np.concatenate([p["scores"] for p in parts])  # [U, K]
        data = trainer.datamodule.data
        k = items.shape[1]
        real = np.isfinite(scores.reshape(-1))  # users with < K unseen items: -inf fill dropped
        frame = pl.DataFrame({
            "user": data.user_ids[np.repeat(users, k)][real],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users))[real],
            "item": data.item_ids[items.reshape(-1)][real],
            "score": scores.reshape(-1).astype(np.float32)[real],
        })
        name = self.filename
        if trainer.world_size > 1:
            name = name.replace(".parquet", f"-rank{trainer.global_rank}.parquet")
        path = Path(trainer.default_root_dir) / name
        os.makedirs(path.parent, exist_ok=True)
        frame.write_parquet(path)
        weights = pl_module.item_weights() if hasattr(pl_module, "item_weights") else None
        if weights is not None and trainer.global_rank == 0:
            self.write_neighbours(weights, data, k, path.parent / "neighbours.parquet")
        if "user_vectors" in parts[0]:
            vectors = np.concatenate([p["user_vectors"] for p in parts])  # [U, D]
            suffix = "" if trainer.world_size == 1 else f"-rank{trainer.global_rank}"
            self.write_embeddings(path.parent / f"user_embeddings{suffix}", "user",
                                  data.user_ids[users], vectors)
        if hasattr(pl_module, "item_embeddings") and trainer.global_rank == 0:
            with torch.no_grad():
                items = pl_module.item_embeddings().float().cpu().numpy()  # [I, D]
            self.write_embeddings(path.parent / "item_embeddings", "item", data.item_ids, items)

    def write_embeddings(self, stem: Path, key: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """ids [n] (raw) and vectors [n, D] -> <stem>.parquet (key, vector) or <stem>.npz."""
        if self.embeddings == "npz":
            np.savez(stem.with_suffix(".npz"), ids=ids, vectors=vectors.astype(np.float32))
            return
        pl.DataFrame({key: ids, "vector": vectors.astype(np.float32)}).write_parquet(
            stem.with_suffix(".parquet"))

    @staticmethod
    def write_neighbours(weights: torch.Tensor, data: Any, k: int, path: Path) -> None:
        """Top-k rows i of each column j of W [I, I] (dense or sparse COO) with W[i, j] > 0, as raw
        ids: the positive entries sorted by (column, -weight, row), the first k of each column."""
        w = weights.detach().float().cpu()
        w = (w if w.is_sparse else w.to_sparse()).coalesce()
        rows, cols = w.indices().numpy()  # [nnz] each
        vals = w.values().numpy()
        pos = vals > 0
        rows, cols, vals = rows[pos], cols[pos], vals[pos]
        order = np.lexsort((rows, -vals, cols))  # by column, then weight descending, then row
        rows, cols, vals = rows[order], cols[order], vals[order]
        starts = np.searchsorted(cols, cols, side="left")  # first entry of each entry's column
        rank = np.arange(len(cols)) - starts + 1  # 1 = the column's largest weight
        keep = rank <= k
        pl.DataFrame({
            "item": data.item_ids[cols[keep]],
            "rank": rank[keep].astype(np.int32),
            "neighbour": data.item_ids[rows[keep]],
            "weight": vals[keep],
        }).write_parquet(path)


class HardNegativeMiner(Callback):
    """Refreshes the DataModule's hard-negative pool at the end of every `every_n_epochs`-th
    training epoch: each user's `pool_size` highest-scored items that are not training positives,
    under the model as it is then, after skipping the `skip_top` highest (the very top of a small
    catalogue holds the user's held-out items: false negatives). With
    `negative_distribution: hard`, the next epochs draw their negatives uniformly from that pool
    (the first epoch, before any pool, draws uniformly). `uniform_share` mixes easy negatives in:
    that share of each user's pool is filled with items drawn uniformly (afresh at every refresh;
    a draw that is a positive is redrawn by the sampler), so a negative is hard with probability
    1 - uniform_share.

    Each process scores its share of the users; the pools are gathered so every process holds the
    same [U, K] table. Works with any model whose `score(EvalBatch)` ranks the catalogue.
    """

    def __init__(self, pool_size: int = 50, every_n_epochs: int = 1, batch_size: int = 512,
                 skip_top: int = 0, uniform_share: float = 0.0) -> None:
        if pool_size < 1 or every_n_epochs < 1 or batch_size < 1 or skip_top < 0:
            raise ValueError("pool_size, every_n_epochs and batch_size must be >= 1 and skip_top "
                             f">= 0, got {pool_size}, {every_n_epochs}, {batch_size}, {skip_top}")
        if not 0.0 <= uniform_share < 1.0:
            raise ValueError(f"uniform_share must be in [0, 1), got {uniform_share}")
        self.pool_size, self.every_n_epochs, self.batch_size = pool_size, every_n_epochs, batch_size
        self.skip_top, self.uniform_share = skip_top, uniform_share
        self._refreshes = 0
        self._pool: np.ndarray | None = None  # [U, K'] the pool in use
        self._pool_epoch = -1  # the epoch at whose end it was mined
        self._restored = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.register(trainer.datamodule)

    def register(self, datamodule: Any) -> None:
        """Tells the DataModule the width of the pools to expect (it checks num_negatives)."""
        width = self.pool_width(datamodule.num_items)
        origin = f"HardNegativeMiner pool_size={self.pool_size}" + (
            f", skip_top={self.skip_top}" if self.skip_top else "") + (
            f", uniform_share={self.uniform_share}"
            if width > self.mined_width(datamodule.num_items) else "")
        datamodule.expect_hard_negatives(width, origin)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self.refresh(trainer, pl_module, trainer.current_epoch)

    def refresh(self, trainer: Trainer, pl_module: LightningModule, epoch: int) -> None:
        pool = self.mine(pl_module, trainer.datamodule, trainer.world_size, trainer.global_rank)
        self._pool, self._pool_epoch = self.mix(pool, pl_module.num_items), epoch
        trainer.datamodule.set_hard_negatives(self._pool)

    # ------------------------------------------------------------ resuming from a checkpoint
    def state_dict(self) -> dict[str, Any]:
        pool = None if self._pool is None else torch.from_numpy(self._pool.astype(np.int32))
        return {"refreshes": self._refreshes, "pool": pool, "pool_epoch": self._pool_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._refreshes = int(state_dict.get("refreshes", 0))
        pool = state_dict.get("pool")
        self._pool = None if pool is None else pool.numpy().astype(np.int64)
        self._pool_epoch = int(state_dict.get("pool_epoch", -1))
        self._restored = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After a resume: the pool the interrupted run was using. A checkpoint written before that
        epoch's refresh (saved at validation end) gets the refresh redone from its weights, which are
        the ones the interrupted run mined with (validation does not change them)."""
        if not self._restored:
            return
        self._restored = False
        epoch = trainer.current_epoch  # the first epoch to run now
        due = [e for e in range(epoch) if (e + 1) % self.every_n_epochs == 0]
        if due and due[-1] != self._pool_epoch:
            self.refresh(trainer, pl_module, due[-1])
        elif self._pool is not None:
            trainer.datamodule.set_hard_negatives(self._pool)

    def mined_width(self, num_items: int) -> int:
        """Items per user that `mine` returns: ranks skip_top .. skip_top + pool_size - 1 of the
        catalogue, at least 1."""
        top = min(self.skip_top + self.pool_size, num_items)
        return top - min(self.skip_top, top - 1)

    def extra_width(self, mined: int) -> int:
        """Uniform items `mix` adds to a pool of `mined` items: R / (mined + R) ~ uniform_share."""
        return round(mined * self.uniform_share / (1.0 - self.uniform_share))

    def pool_width(self, num_items: int) -> int:
        """Items per user of the pools this miner hands the DataModule (mined + uniform)."""
        mined = self.mined_width(num_items)
        return mined + self.extra_width(mined)

    def mix(self, pool: np.ndarray, num_items: int) -> np.ndarray:
        """Hard pool [U, K] -> [U, K + R] with R uniform items, R / (K + R) ~ uniform_share;
        the same draws on every process (seeded by the global seed and the refresh count)."""
        self._refreshes += 1
        extra = self.extra_width(pool.shape[1])
        if extra == 0:
            return pool
        rng = np.random.default_rng([global_seed(0), self._refreshes])
        easy = rng.integers(0, num_items, size=(len(pool), extra))  # [U, R]
        return np.concatenate([pool, easy], axis=1)

    @torch.no_grad()
    def mine(self, model: LightningModule, datamodule: Any, world_size: int, rank: int
             ) -> np.ndarray:
        """[U, K] item indices: each user's scored items of ranks skip_top .. skip_top + K - 1
        outside the training positives."""
        dataset = datamodule.scoring_dataset()
        sampler = EvalShardSampler(len(dataset), self.batch_size, world_size, rank)
        top = min(self.skip_top + self.pool_size, model.num_items)
        k = self.mined_width(model.num_items)  # the last k of the top ranks
        was_training = model.training
        model.eval()
        tops = []
        try:
            with model.evaluation_pass():  # what the model precomputes for scoring, once
                for rows in sampler:
                    batch = move_data_to_device(dataset[rows], model.device)
                    scores = exclude_seen(model.score(batch).float(), batch.seen)  # [B, I]
                    tops.append(scores.topk(top, dim=1).indices[:, top - k :])  # [B, K]
        finally:
            model.train(was_training)
        mine = torch.cat(tops)  # [n, K] rows rank, rank + W, ... (padding rows last)
        if world_size > 1:
            mine = model.all_gather(mine).transpose(0, 1).reshape(-1, k)  # [n W, K] row order
        return mine[: len(dataset)].cpu().numpy()

