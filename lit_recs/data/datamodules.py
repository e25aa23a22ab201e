"""DataModules: `RecDataModule` loads, filters and splits once and serves the evaluation loaders;
each subclass only decides how training batches are made.

Evaluation (validation, test, predict) and training loaders shard their rows themselves, so the
Trainer runs with `use_distributed_sampler=False` (set in conf/base.yaml).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_recs.data.batches import EvalBatch, PairBatch, RowBatch
from lit_recs.data.datasets.base import COLUMNS, DataSource, resolve
from lit_recs.data.inputs import ModelInputs
from lit_recs.data.interactions import Interactions, binarize, deduplicate, k_core
from lit_recs.data.sampling import (
    DISTRIBUTIONS,
    EpochBatchSampler,
    EvalShardSampler,
    NegativeSampler,
    check_drawable,
    check_eval_negatives,
    drawable,
    eval_negatives,
    support,
)
from lit_recs.data.splits import SPLITS, Split, split
from lit_recs.runtime import uses_distributed_sampler

log = logging.getLogger(__name__)

Stage = Literal["val", "test", "predict"]


def gather_rows(mat: sp.csr_matrix, users: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(row, col) pairs [2, P] of the CSR rows `users` [B]; rows with valid=False contribute none."""
    starts = mat.indptr[users]  # [B]
    counts = np.where(valid, mat.indptr[users + 1] - starts, 0)  # [B]
    rows = np.repeat(np.arange(len(users)), counts)  # [P]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # [P]
    cols = mat.indices[np.repeat(starts, counts) + offsets]  # [P]
    return np.stack([rows, cols]).astype(np.int64)  # [2, P]


def check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"negative_distribution must be one of {DISTRIBUTIONS}, got "
                         f"{distribution!r}")


def global_seed(default: int) -> int:
    """The global seed when set (seed_everything, PL_GLOBAL_SEED), else `default`."""
    return int(os.environ.get("PL_GLOBAL_SEED", default))


def process_layout(trainer: object | None) -> tuple[int, int]:
    """(number of processes, this process's rank) for loaders that shard their rows themselves."""
    if trainer is None:
        return 1, 0
    if trainer.world_size > 1 and uses_distributed_sampler(trainer):
        raise ValueError("lit_recs loaders shard themselves: run the Trainer with "
                         "use_distributed_sampler=False (conf/base.yaml sets it)")
    return trainer.world_size, trainer.global_rank


class EvalDataset(Dataset):
    """Index arrays of evaluation rows (-1 = padding) -> EvalBatch, built a batch at a time.

    `sampled` [U, N] (the sampled protocol's negatives) comes with `sampled_key`, the protocol's
    name that the batches carry (`RecDataModule.sampled_protocol`).
    """

    def __init__(
        self,
        users: np.ndarray,
        seen: sp.csr_matrix,
        targets: sp.csr_matrix | None,
        sampled: np.ndarray | None,
        sampled_key: str | None = None,
    ) -> None:
        if sampled is not None and not sampled_key:
            raise ValueError("the sampled protocol's negatives need its key (sampled_key), e.g. "
                             "RecDataModule.sampled_protocol")
        self.users, self.seen, self.targets, self.sampled = users, seen, targets, sampled
        self.sampled_key = None if sampled is None else sampled_key

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, rows: np.ndarray) -> EvalBatch:
        valid = rows >= 0  # [B]
        users = np.where(valid, self.users[np.maximum(rows, 0)], 0)  # [B]
        empty = np.zeros((2, 0), dtype=np.int64)
        targets = empty if self.targets is None else gather_rows(self.targets, users, valid)
        sampled = None if self.sampled is None else torch.from_numpy(self.sampled[users])  # [B, N]
        return EvalBatch(
            users=torch.from_numpy(users),
            weights=torch.from_numpy(valid.astype(np.float32)),
            seen=torch.from_numpy(gather_rows(self.seen, users, valid)),
            targets=torch.from_numpy(targets),
            sampled=sampled,
            sampled_key=self.sampled_key,
        )


class RecDataModule(LightningDataModule):
    """Loads a dataset, turns it into implicit feedback, filters, splits and serves evaluation.

    Args:
        dataset: `ml-100k`, `ml-1m`, `ml-20m`, `synthetic`, the path of your own file, or a
            DataSource (class_path in the config) for full control over loading. A file
            (`lit_recs.data.datasets.resolve`): `.csv` / `.tsv` / `.parquet` / `.pq` and gzip'd
            `.csv.gz` / `.tsv.gz` are tables with named columns (`Tabular`); `.txt` / `.txt.gz`
            hold one `user item` pair per line, each user's lines in time order, no header
            (`SequenceFile`, the format of SASRec's data files). A relative path is relative to
            the working directory, also in a YAML file.
        data_dir: where MovieLens files are (or are downloaded to); default `$LIT_RECS_DATA`, else
            the user cache dir.
        user_col: a table's user id column.
        item_col: a table's item id column.
        rating_col: a table's rating column; at its default name it may be missing from the
            file (no ratings), any other name must exist; null leaves the column out.
        time_col: a table's time column: integer seconds, dates or datetimes. At its default name
            it may be missing from the file (no time: file order is time), any other name must
            exist; null leaves the column out.
        file_format: `auto` (by the file's suffix, above), `table` or `sequence` for a file name
            with another suffix.
        text_ids: read every id as text, verbatim. By default a column of numbers gives integer
            ids (`1.0` is 1), zero-padded codes stay text (`007` and `7` are two ids), and a
            column that mixes numbers and text is an error naming its first odd value
            (`lit_recs.data.datasets.ids`).
        rating_threshold: keep interactions with rating >= threshold (None keeps all).
        dedup: repeated (user, item) events: keep the `first` or `last` in time, or `all`.
        min_user_interactions / min_item_interactions: k-core filtering (0 = off).
        split: `random` (per-user ratios), `loo` (temporal leave-one-out), `temporal` (global),
            `global_random` (over all interactions: the CTR protocol) or `fold` (test = fold
            `fold` of `num_folds` blocks in file order: ML-100K's u1..u5 splits).
        split_ratios: train / validation / test shares for `random`, `temporal` and
            `global_random`; `fold` takes its validation share from the second.
        fold / num_folds: the test fold of split='fold' (1-based) and the number of folds.
        seed: seeds the split and the sampled protocol's negatives (the protocol). Training batches
            and their negatives follow the global seed (`seed_everything`, i.e. PL_GLOBAL_SEED)
            when one is set, else this seed: vary `seed_everything` for seeds on a fixed split.
        batch_size / eval_batch_size: training rows per batch / evaluation users per batch.
        sampled_negatives: negatives per user for the sampled protocol (0 turns it off): N
            distinct items the user never interacted with in the whole log, so at most
            num_items (popularity: the items with an interaction) minus the user's interactions,
            for every user; checked at `setup`, before anything is drawn.
        sampled_distribution: `uniform` or `popularity` for those negatives.
        predict_ranking: what `predict` writes. `unseen` (default): every user's top items among
            those they never interacted with (train, validation and test masked): recommendations.
            `test`: the ranking the test metrics saw: the test users, train and validation items
            masked, test items kept, so the written lists re-score to results.json's test/*.

    The sampled protocol's key (`sampled_protocol`, carried by every EvalBatch as `sampled_key`,
    the prefix its metrics are logged under: `val/<key>/ndcg@10`) names N and the distribution:
    `sampled<N>` for uniform negatives (`sampled99`: `val/sampled99/ndcg@10`), `sampled<N>pop`
    for negatives drawn by popularity (`sampled100pop`); None when the protocol is off.

    `setup` checks the options against the data (vectorised over the users, seconds at 10^7
    interactions) and raises a ValueError naming the option and its limit: `sampled_negatives`
    at every stage that evaluates, the training negatives (`num_negatives` of the subclasses that
    sample, see `training_negatives`) at fit. At fit it then logs what the data became
    (`data_summary`, once, on the first process); results.json keeps the same dict.
    """

    def __init__(
        self,
        # `Path` keeps a path a path: with `str | DataSource` alone, jsonargparse (LightningCLI)
        # loads a string that names an existing file as a sub-config and passes the file's
        # contents (any type hint that admits a class does so, unless it also admits a path)
        dataset: DataSource | str | Path = "ml-100k",
        data_dir: str | None = None,
        user_col: str = COLUMNS["user_col"],
        item_col: str = COLUMNS["item_col"],
        rating_col: str | None = COLUMNS["rating_col"],
        time_col: str | None = COLUMNS["time_col"],
        file_format: Literal["auto", "table", "sequence"] = "auto",
        text_ids: bool = False,
        rating_threshold: float | None = None,
        dedup: Literal["first", "last", "all"] = "first",
        min_user_interactions: int = 0,
        min_item_interactions: int = 0,
        split: Literal["random", "loo", "temporal", "global_random", "fold"] = "random",
        split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
        fold: int = 1,
        num_folds: int = 5,
        seed: int = 42,
        batch_size: int = 1024,
        eval_batch_size: int = 512,
        sampled_negatives: int = 99,
        sampled_distribution: Literal["uniform", "popularity"] = "uniform",
        num_workers: int = 0,
        predict_ranking: Literal["unseen", "test"] = "unseen",
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if sampled_distribution not in ("uniform", "popularity"):
            raise ValueError("sampled_distribution must be 'uniform' or 'popularity', got "
                             f"{sampled_distribution!r}")
        self.source = resolve(dataset, data_dir, user_col=user_col, item_col=item_col,
                              rating_col=rating_col, time_col=time_col, file_format=file_format,
                              text_ids=text_ids)
        self.rating_threshold, self.dedup = rating_threshold, dedup
        self.min_user, self.min_item = min_user_interactions, min_item_interactions
        self.split_how, self.split_ratios, self.seed = split, tuple(split_ratios), seed
        self.fold, self.num_folds = fold, num_folds
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.sampled_negatives, self.sampled_distribution = sampled_negatives, sampled_distribution
        self.num_workers = num_workers
        if predict_ranking not in ("unseen", "test"):
            raise ValueError(f"predict_ranking must be 'unseen' or 'test', got {predict_ranking!r}")
        self.predict_ranking = predict_ranking
        self._data: Interactions | None = None
        self._loaded: dict[str, int] = {}  # the raw log's size (data_summary)
        self._removed: list[dict[str, Any]] = []  # what each preprocessing step removed
        self._split: Split | None = None
        self._eval: dict[str, EvalDataset] = {}
        self._sampled: np.ndarray | None = None  # [U, N] the sampled protocol's negatives
        self.hard_negatives: np.ndarray | None = None  # [U, K] pool of negative_distribution=hard
        self.hard_pool_promise: tuple[int, str] | None = None  # (width, by whom): see below
        self._train_sampler: NegativeSampler | None = None

    # ------------------------------------------------------------ data, lazily
    def prepare_data(self) -> None:
        self.source.prepare()  # downloads once, on one process

    @property
    def data(self) -> Interactions:
        """The whole preprocessed log (implicit, deduplicated, filtered), contiguous ids."""
        if self._data is None:
            inter = self.source.load()
            self._loaded, self._removed = _size(inter), []
            steps = []
            if self.rating_threshold is not None:
                steps.append(("rating_threshold", f"keep ratings >= {self.rating_threshold}",
                              lambda x: binarize(x, self.rating_threshold)))
            if self.dedup != "all":
                steps.append(("dedup", f"one event per (user, item): the {self.dedup} in time",
                              lambda x: deduplicate(x, self.dedup)))
            if self.min_user > 1 or self.min_item > 1:
                steps.append(("k_core", f"users with >= {self.min_user} and items with >= "
                              f"{self.min_item} interactions, repeated until stable",
                              lambda x: k_core(x, self.min_user, self.min_item)))
            for step, rule, apply in steps:
                out = apply(inter)
                before, after = _size(inter), _size(out)
                self._removed.append({"step": step, "rule": rule,
                                      **{k: before[k] - after[k] for k in before}})
                inter = out
            log.info("%s", inter.summary())
            self._data = inter
        return self._data

    @property
    def data_summary(self) -> dict[str, Any] | None:
        """What the data became, for the console (at fit) and results.json; None before loading.

        `source`; `loaded` (interactions, users, items of the raw log); `removed`: one entry per
        preprocessing step that is on (`rating_threshold`, `dedup`, `k_core`: its rule and the
        interactions, users and items it removed); the resulting `interactions`, `users`,
        `items`, `density`; `user_length`: quantiles of the events per user (min, q10, q25,
        median, q75, q90, max: lengths that occur; and the mean); `log_fingerprint`: the content
        hash of the resulting log (equal for equal data from any file or loader); `split`, once
        split: its rule and, per part (train / val / test), interactions and users; for val and
        test also `users_without` (users with none there) and `why`, and `cold_users` (users
        there with no training event).
        """
        if self._data is None:
            return None
        data = self._data
        counts = data.user_counts()
        summary: dict[str, Any] = {
            "dataset": data.name,
            "source": repr(self.source),
            "loaded": dict(self._loaded),
            "removed": [dict(r) for r in self._removed],
            **_size(data),
            "density": round(len(data) / max(1, data.num_users * data.num_items), 6),
            "user_length": _lengths(counts),
            "log_fingerprint": data.fingerprint(),
        }
        if self._split is not None:
            summary["split"] = self._split_summary(counts)
        return summary

    def _split_summary(self, counts: np.ndarray) -> dict[str, Any]:
        s, how = self._split, self.split_how
        out: dict[str, Any] = {"how": how}
        if how in ("random", "temporal", "global_random"):
            out["ratios"] = list(self.split_ratios)
        if how == "fold":
            out["fold"], out["num_folds"] = self.fold, self.num_folds
        in_train = s.train.user_counts() > 0
        for part, inter in (("train", s.train), ("val", s.val), ("test", s.test)):
            has = inter.user_counts() > 0
            entry: dict[str, Any] = {"interactions": len(inter), "users": int(has.sum())}
            if part != "train":
                without = int((~has & (counts > 0)).sum())
                entry["users_without"] = without
                entry["why"] = self._why_without(part) if without else None
                entry["cold_users"] = int((has & ~in_train).sum())
            out[part] = entry
        return out

    def _why_without(self, part: str) -> str:
        """Why a user can have no event in the validation / test part of this split."""
        r_val, r_test = self.split_ratios[1], self.split_ratios[2]
        r = r_val if part == "val" else r_test
        return {
            "loo": {"test": "fewer than 2 events (a single event trains)",
                    "val": "fewer than 3 events (the last tests, the rest trains)"}[part],
            "random": f"too few events: floor({r} x events) is 0, and one is held out only while "
                      "2 stay in training",
            "temporal": "none of their events falls in the " + (
                f"last {r_test:.0%} of the log in time" if part == "test" else
                f"{r_val:.0%} of the log in time before the test part"),
            "global_random": f"none of their events was drawn ({r:.0%} of all events, seed "
                             f"{self.seed})",
            "fold": f"none of their events is in fold {self.fold} of {self.num_folds} (file order)"
                    if part == "test" else
                    f"none of their events was drawn ({r_val:.0%} of all events, seed {self.seed})",
        }[self.split_how]

    def log_data_summary(self) -> None:
        """Logs `data_summary` as a few lines (on the first process only)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None and not trainer.is_global_zero:
            return
        summary = self.data_summary
        if summary is not None:
            log.info("%s", summary_text(summary))

    @property
    def splits(self) -> Split:
        if self._split is None:
            self._split = split(self.data, self.split_how, self.split_ratios, self.seed,
                                self.fold, self.num_folds)
        return self._split

    @property
    def train(self) -> Interactions:
        return self.splits.train

    @property
    def num_users(self) -> int:
        return self.data.num_users

    @property
    def num_items(self) -> int:
        return self.data.num_items

    @property
    def fingerprint(self) -> str:
        """Names the exact data a run saw: source, preprocessing, split and the resulting log."""
        spec = (f"{self.source.name}|{self.rating_threshold}|{self.dedup}|{self.min_user}|"
                f"{self.min_item}|{self.split_how}|{self.split_ratios}|{self.seed}|"
                f"{self.fold_spec}"
                f"{self.sampled_negatives}|{self.sampled_distribution}|{self.data.fingerprint()}")
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    @property
    def fold_spec(self) -> str:
        return f"{self.fold}/{self.num_folds}|" if self.split_how == "fold" else ""

    @property
    def sampled_protocol(self) -> str | None:
        """The sampled protocol's key: `sampled<N>` (uniform), `sampled<N>pop` (popularity), None
        when off. EvalBatch.sampled_key carries it; metrics are logged as `stage/<key>/...`."""
        if self.sampled_negatives <= 0:
            return None
        suffix = {"uniform": "", "popularity": "pop"}[self.sampled_distribution]
        return f"sampled{self.sampled_negatives}{suffix}"

    def model_inputs(self, stage: str) -> ModelInputs:
        """What the model receives besides batches (`RecModule.attach_data`): the training split.
        Subclasses add their own (feature tables, item vectors, ...)."""
        return ModelInputs(train=self.train)

    # ------------------------------------------------------------ option limits
    def setup(self, stage: str | None = None) -> None:
        """Checks the options against the data before anything is drawn (`check_limits`); at
        fit, then logs what the data became (`log_data_summary`)."""
        self.check_limits(stage)
        if stage == "fit":
            _ = self.splits  # the summary states the split too
            self.log_data_summary()

    def check_limits(self, stage: str | None = None) -> None:
        """Raises a ValueError naming the option and its limit: `sampled_negatives` unless
        predicting, the training negatives when fitting (stage None: both)."""
        if stage != "predict":
            self.check_sampled_negatives()
        if stage in (None, "fit"):
            self.check_training_negatives()

    def check_sampled_negatives(self) -> None:
        """sampled_negatives <= num_items (popularity: items with an interaction) minus the
        user's interactions in the whole log, for every user (the protocol draws for all)."""
        protocol = self.sampled_protocol
        if protocol is not None:
            check_eval_negatives(self.data.binary_csr(), self.sampled_negatives,
                                 self.sampled_distribution, protocol=protocol,
                                 ids=self.data.user_ids)

    def training_negatives(self) -> tuple[int, str] | None:
        """(num_negatives, negative_distribution) of the training batches; None: none drawn."""
        return None

    def check_training_negatives(self) -> None:
        """num_negatives <= the distinct items every user can draw: the distribution's support
        (uniform and hard: num_items; popularity: the items with a training interaction) minus
        the user's training positives. A row's negatives are independent draws (they may repeat),
        but past that limit every row of the user would repeat items. `hard` draws from the
        user's pool of mined items (uniform before the first pool, and for rejected draws):
        num_negatives <= the pool's width too."""
        spec = self.training_negatives()
        if spec is None:
            return
        n, distribution = spec
        positives = self.train.binary_csr()
        items = support(positives, distribution)
        pool = f"all {items} items" if distribution != "popularity" else \
            f"the {items} items with a training interaction (popularity draws no other)"
        check_drawable("num_negatives", n, drawable(positives, distribution, items),
                       f"training negatives (negative_distribution={distribution!r})",
                       f"{pool} minus the user's training positives", ids=self.data.user_ids)
        width, origin = self._hard_pool_width() if distribution == "hard" else (None, "")
        if width is not None and n > width:
            raise ValueError(
                f"num_negatives={n} is more than the hard-negative pool holds: "
                f"negative_distribution='hard' draws each row's negatives from the user's pool of "
                f"{width} items ({origin}), so every row would repeat items. The limit is "
                f"num_negatives <= {width}: lower num_negatives or raise HardNegativeMiner's "
                "pool_size"
            )

    def _hard_pool_width(self) -> tuple[int | None, str]:
        """Items per user of the hard pool: the pool's own when set, else what the registered
        miner promised (`expect_hard_negatives`)."""
        if self.hard_negatives is not None:
            return self.hard_negatives.shape[1], "the current pool"
        return self.hard_pool_promise or (None, "")

    def expect_hard_negatives(self, width: int, origin: str) -> None:
        """A hard-negative miner (`lit_recs.callbacks.HardNegativeMiner`, at its `setup`) says it
        will hand over pools of `width` items per user; `origin` names it and its options in
        errors. The training negatives are checked against that width at once."""
        self.hard_pool_promise = (width, origin)
        self.check_training_negatives()

    def train_seed(self) -> int:
        """Seed of the training batches: the global seed when set (seed_everything), else `seed`."""
        return global_seed(self.seed)

    # ------------------------------------------------------------ training negatives
    def negative_sampler(self, distribution: str, alpha: float) -> NegativeSampler:
        """The training negatives' sampler (subclasses that sample call it in train_dataloader).

        `hard` draws from `hard_negatives`, which `lit_recs.callbacks.HardNegativeMiner` refreshes
        at the end of every epoch (uniform before the first refresh).
        """
        self.check_training_negatives()
        if distribution == "hard":
            miner = self.hard_pool_promise is not None or self.hard_negatives is not None
            if self.trainer is not None and not miner:
                raise ValueError("negative_distribution='hard' samples among the previous "
                                 "epoch's top-scored items: add the callback "
                                 "lit_recs.callbacks.HardNegativeMiner to trainer.callbacks")
        sampler = NegativeSampler(self.train.binary_csr(), distribution, alpha)
        sampler.hard_pool = self.hard_negatives
        self._train_sampler = sampler
        return sampler

    def set_hard_negatives(self, pool: np.ndarray) -> None:
        """Each user's pool of hard negatives [U, K] (item indices) for the next epochs."""
        if pool.ndim != 2 or len(pool) != self.num_users:
            raise ValueError(f"hard negative pool must be [num_users={self.num_users}, K], got "
                             f"{pool.shape}")
        self.hard_negatives = pool
        if self._train_sampler is not None:
            self._train_sampler.hard_pool = pool

    def scoring_dataset(self) -> EvalDataset:
        """Every user with their training items as `seen` (what a hard-negative miner scores)."""
        return EvalDataset(np.arange(self.num_users), self.train.binary_csr(), None, None)

    # ------------------------------------------------------------ process layout
    def _world(self) -> tuple[int, int]:
        return process_layout(getattr(self, "trainer", None))

    # ------------------------------------------------------------ evaluation
    def eval_dataset(self, stage: Stage) -> EvalDataset:
        if stage not in self._eval:
            self._eval[stage] = self._build_eval(stage)
        return self._eval[stage]

    def known(self, stage: Stage) -> Interactions:
        """What a user is known to have at `stage`: train (val), + val (test), + test (predict)."""
        s = self.splits
        parts = {"val": [s.train], "test": [s.train, s.val], "predict": [s.train, s.val, s.test]}
        return Interactions.concat(parts[stage])

    def _build_eval(self, stage: Stage) -> EvalDataset:
        s = self.splits
        seen = self.known(stage).binary_csr()
        if stage == "predict":
            return EvalDataset(np.arange(self.num_users), seen, None, None)
        targets = (s.val if stage == "val" else s.test).binary_csr()
        users = np.flatnonzero(np.diff(targets.indptr) > 0)  # users with something to find
        return EvalDataset(users, seen, targets, self._sampled_negatives(), self.sampled_protocol)

    def _sampled_negatives(self) -> np.ndarray | None:
        if self.sampled_protocol is None:
            return None
        if self._sampled is None:
            users = np.arange(self.num_users)
            self._sampled = eval_negatives(  # checked there first, the message naming the protocol
                self.data.binary_csr(), users, self.sampled_negatives, self.sampled_distribution,
                self.seed, protocol=self.sampled_protocol, ids=self.data.user_ids,
            )
        return self._sampled

    def _eval_loader(self, stage: Stage) -> DataLoader:
        dataset = self.eval_dataset(stage)
        replicas, rank = self._world()
        sampler = EvalShardSampler(len(dataset), self.eval_batch_size, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        stage: Stage = "test" if self.predict_ranking == "test" else "predict"
        return RecDataModule._eval_loader(self, stage)  # rankings, also for labelled-row data

    @property
    def data_warnings(self) -> list[str]:
        """What the data preparation decided that a run should not pass over silently (e.g. ties
        that file order broke in the split); results.json lists them."""
        return list(self._split.warnings) if self._split is not None else []

    def train_dataloader(self) -> DataLoader:
        raise NotImplementedError(
            f"{type(self).__name__} serves no training batches: use a subclass such as "
            "lit_recs.data.datamodules.NegativeSamplingDataModule"
        )


def _size(inter: Interactions) -> dict[str, int]:
    return {"interactions": len(inter), "users": inter.num_users, "items": inter.num_items}


QUANTILES = {"min": 0.0, "q10": 0.1, "q25": 0.25, "median": 0.5, "q75": 0.75, "q90": 0.9,
             "max": 1.0}


def _lengths(counts: np.ndarray) -> dict[str, float | int]:
    """Quantiles of the events per user (lengths that occur: inverted CDF) and their mean."""
    counts = counts[counts > 0]
    if len(counts) == 0:
        return {}
    qs = np.quantile(counts, list(QUANTILES.values()), method="inverted_cdf")
    out: dict[str, float | int] = {k: int(q) for k, q in zip(QUANTILES, qs)}
    out["mean"] = round(float(counts.mean()), 2)
    return out


def summary_text(summary: dict[str, Any]) -> str:
    """`RecDataModule.data_summary` as the lines the console shows at fit."""
    def count(n: int, what: str) -> str:
        return f"{n:,} {what}{'s' if n != 1 else ''}"

    def size(d: dict[str, int]) -> str:
        return ", ".join(count(d[k], k[:-1]) for k in ("interactions", "users", "items"))

    lines = [f"data {summary['dataset']}: loaded {size(summary['loaded'])} ({summary['source']})"]
    for r in summary["removed"]:
        lines.append(f"  {r['step']} ({r['rule']}): removed {size(r)}")
    length = summary["user_length"]
    quantiles = ", ".join(f"{k} {length[k]:,}" for k in QUANTILES if k in length)
    lines.append(f"  kept {size(summary)}, density {summary['density']:.4%}; events per user: "
                 f"{quantiles}, mean {length.get('mean', 0):,}")
    split = summary.get("split")
    if split:
        train = split["train"]
        parts = [f"train {train['interactions']:,} ({count(train['users'], 'user')})"]
        for part in ("val", "test"):
            p = split[part]
            text = f"{part} {p['interactions']:,} ({count(p['users'], 'user')}"
            if p["users_without"]:
                text += f"; {count(p['users_without'], 'user')} with none: {p['why']}"
            if p["cold_users"]:
                text += f"; {count(p['cold_users'], 'user')} here without a training event"
            parts.append(text + ")")
        lines.append(f"  split {split['how']}: " + " | ".join(parts))
    return "\n".join(lines)


class PairDataset(Dataset):
    """(epoch, batch, rows) -> PairBatch of training positives with sampled negatives."""

    def __init__(
        self,
        train: Interactions,
        sampler: NegativeSampler,
        num_negatives: int,
        seed: int,
        rank: int,
    ) -> None:
        self.users, self.items = train.users, train.items
        self.sampler, self.num_negatives = sampler, num_negatives
        self.seed, self.rank = seed, rank

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> PairBatch:
        epoch, batch, rows = key
        rng = np.random.default_rng([self.seed, epoch, self.rank, batch])
        users = self.users[rows]  # [B]
        neg = self.sampler.sample(users, self.num_negatives, rng)  # [B, N]
        return PairBatch(
            users=torch.from_numpy(users),
            pos_items=torch.from_numpy(self.items[rows]),
            neg_items=torch.from_numpy(neg),
        )


class NegativeSamplingDataModule(RecDataModule):
    """Training batches of (user, positive item, N sampled negatives).

    Negatives exclude the user's training positives and are drawn per batch, vectorised, from
    `uniform`, `popularity` (count ** negative_alpha) or `hard` (the previous epoch's top-scored
    non-positives, with `lit_recs.callbacks.HardNegativeMiner`); seeded per epoch, process and
    batch. A row's N negatives are independent draws (a row may repeat an item); `setup` checks
    that N <= the distinct items every user can draw (`check_training_negatives`: num_items,
    popularity: the items with a training interaction, minus the user's training positives;
    hard: also the pool's width).
    """

    def __init__(
        self,
        *args,
        num_negatives: int = 1,
        negative_distribution: Literal["uniform", "popularity", "hard"] = "uniform",
        negative_alpha: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
        check_distribution(negative_distribution)
        self.num_negatives = num_negatives
        self.negative_distribution, self.negative_alpha = negative_distribution, negative_alpha

    def training_negatives(self) -> tuple[int, str] | None:
        return self.num_negatives, self.negative_distribution

    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        train = self.train
        sampler = self.negative_sampler(self.negative_distribution, self.negative_alpha)
        seed = self.train_seed()
        dataset = PairDataset(train, sampler, self.num_negatives, seed, rank)
        batches = EpochBatchSampler(len(train), self.batch_size, seed, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=self.num_workers)


class UserRowsDataset(Dataset):
    """(epoch, batch, user indices) -> RowBatch: the users' training rows as a dense [B, I] block."""

    def __init__(self, train: sp.csr_matrix) -> None:
        self.train = train

    def __len__(self) -> int:
        return self.train.shape[0]

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> RowBatch:
        _, _, users = key
        pairs = gather_rows(self.train, users, np.ones(len(users), dtype=bool))  # [2, P]
        rows = torch.zeros(len(users), self.train.shape[1])  # [B, I]
        rows[torch.from_numpy(pairs[0]), torch.from_numpy(pairs[1])] = 1.0
        return RowBatch(users=torch.from_numpy(users), rows=rows)


class UserRowsDataModule(RecDataModule):
    """Training batches of whole user rows of the interaction matrix (SLIM, autoencoders).

    Each epoch visits every user once, in a fresh seeded order, sharded across processes; a batch
    is a CSR row block of `batch_size` users densified to [B, I].
    """

    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        users = EpochBatchSampler(self.num_users, self.batch_size, self.train_seed(), replicas,
                                  rank)
        return DataLoader(UserRowsDataset(self.train.binary_csr()), batch_size=None,
                          sampler=users, num_workers=self.num_workers)
