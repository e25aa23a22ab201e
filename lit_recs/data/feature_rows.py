"""`FeatureDataModule`: interactions plus side features as field-encoded rows (`FeatureBatch`).

One DataModule for the three tasks of factorization machines (PROTOCOLS.md):

- `ctr`: every rating is a row, label = rating >= `label_threshold`; validation and test are
  labelled rows too (metrics `auc`, `logloss`). The CTR protocol: `split: global_random`.
- `rating`: label = the rating (metrics `rmse`, `mae`); ML-100K's u1..u5: `split: fold`.
- `topn`: every (thresholded) interaction is a positive row followed by `num_negatives` sampled
  negative rows (label 0, never a training positive of the user); validation and test are the
  shared full-catalogue ranking (`EvalBatch`), scored by the model from `features` (the per-user
  and per-item slots, see `lit_recs.data.fields`).

Which columns become which fields is configuration (`categorical`, `multi_hot`, `numeric`,
`context`); `num_features` and `num_fields` are linked into the model by the CLI.

`LibFFMDataModule` serves CTR rows read from libffm text files (Criteo / Avazu-style data, no user
or item ids): the same `FeatureBatch`, the same models and metrics.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lit_recs.data.batches import FeatureBatch
from lit_recs.data.datamodules import (
    RecDataModule,
    Stage,
    check_distribution,
    global_seed,
    process_layout,
)
from lit_recs.data.fields import FeatureTables, Slots, encode_fields
from lit_recs.data.inputs import ModelInputs
from lit_recs.data.interactions import Interactions
from lit_recs.data.libffm import FieldRows, read_libffm
from lit_recs.data.sampling import EpochBatchSampler, EvalShardSampler, NegativeSampler

Task = Literal["ctr", "rating", "topn"]


def initial_bias(task: str, label_mean: float | None) -> float | None:
    """Where a model's global bias starts: the mean rating (rating), the log-odds of the click
    rate (ctr), None for sampled labels (topn)."""
    if label_mean is None or task == "topn":
        return None
    if task == "ctr":  # in float32, as the bias it starts
        return float(torch.tensor(label_mean).clamp(1e-6, 1 - 1e-6).logit())
    return label_mean


def feature_batch(tables: FeatureTables, users: np.ndarray, items: np.ndarray,
                  timestamps: np.ndarray | None, labels: np.ndarray, task: str, group: int = 1
                  ) -> FeatureBatch:
    """Rows of (user, item[, time]) [R] with their labels -> FeatureBatch [R, S]."""
    slots: Slots = tables.rows(users, items, timestamps)
    return FeatureBatch(
        users=torch.from_numpy(users), items=torch.from_numpy(items),
        index=torch.from_numpy(slots.index), value=torch.from_numpy(slots.value),
        field=torch.from_numpy(slots.field), labels=torch.from_numpy(labels), task=task,
        group=group,
    )


class LabelledRowsDataset(Dataset):
    """Rows of one split part with labels. Keys: training (epoch, batch, rows) or evaluation rows
    (index arrays, -1 = padding, dropped)."""

    def __init__(self, tables: FeatureTables, part: Interactions, labels: np.ndarray, task: Task
                 ) -> None:
        self.tables, self.part, self.labels, self.task = tables, part, labels, task

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, key: tuple[int, int, np.ndarray] | np.ndarray) -> FeatureBatch:
        rows = key[2] if isinstance(key, tuple) else key[key >= 0]  # [R]
        ts = None if self.part.timestamps is None else self.part.timestamps[rows]
        return feature_batch(self.tables, self.part.users[rows], self.part.items[rows], ts,
                             self.labels[rows], self.task)


class SampledRowsDataset(Dataset):
    """(epoch, batch, rows) -> each positive row followed by its N sampled negative rows."""

    def __init__(self, tables: FeatureTables, train: Interactions, sampler: NegativeSampler,
                 num_negatives: int, seed: int, rank: int) -> None:
        self.tables, self.train, self.sampler = tables, train, sampler
        self.num_negatives, self.seed, self.rank = num_negatives, seed, rank

    def __len__(self) -> int:
        return len(self.train)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> FeatureBatch:
        epoch, batch, rows = key
        rng = np.random.default_rng([self.seed, epoch, self.rank, batch])
        users = self.train.users[rows]  # [B]
        neg = self.sampler.sample(users, self.num_negatives, rng)  # [B, N]
        items = np.concatenate([self.train.items[rows][:, None], neg], 1)  # [B, 1 + N]
        group = items.shape[1]
        labels = np.zeros(items.shape, np.float32)  # [B, 1 + N]
        labels[:, 0] = 1.0
        return feature_batch(self.tables, np.repeat(users, group), items.reshape(-1), None,
                             labels.reshape(-1), "topn", group)  # R = B (1 + N)


class FeatureDataModule(RecDataModule):
    """Field-encoded rows for CTR, rating regression and top-N (see the module docstring).

    Args (besides RecDataModule's):
        task: `ctr`, `rating` or `topn`.
        label_threshold: ctr label = rating >= label_threshold.
        categorical / multi_hot / numeric / context / text: the columns that become fields (see
            lit_recs.data.fields); `user_id` and `item_id` are the indices.
        text_buckets: hash buckets of the `text` fields' words.
        multi_hot_weight: value of each element of a multi-hot field: `mean` (1/n) or `one`.
        num_negatives / negative_distribution / negative_alpha: top-N training negatives
            (`uniform`, `popularity` ** alpha or `hard`, see NegativeSamplingDataModule): at most
            the distinct items every user can draw, checked at `setup` (`check_training_negatives`).
    """

    min_negatives = 1

    def __init__(
        self,
        *args,
        task: Task = "ctr",
        label_threshold: float = 4.0,
        categorical: list[str] = ("user_id", "item_id"),  # type: ignore[assignment]
        multi_hot: list[str] = (),  # type: ignore[assignment]
        numeric: list[str] = (),  # type: ignore[assignment]
        context: list[str] = (),  # type: ignore[assignment]
        multi_hot_weight: Literal["mean", "one"] = "mean",
        text: list[str] = (),  # type: ignore[assignment]
        text_buckets: int = 4096,
        num_negatives: int = 4,
        negative_distribution: Literal["uniform", "popularity", "hard"] = "uniform",
        negative_alpha: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if task not in ("ctr", "rating", "topn"):
            raise ValueError(f"task must be 'ctr', 'rating' or 'topn', got {task!r}")
        if task != "topn" and self.rating_threshold is not None:
            raise ValueError(f"task={task!r} labels every rating: set rating_threshold to null "
                             f"(got {self.rating_threshold}); the ctr label uses label_threshold")
        if task == "topn" and context:
            raise ValueError(f"task='topn' ranks items for a user with no interaction time: drop "
                             f"the context fields {list(context)}")
        if num_negatives < self.min_negatives:
            raise ValueError(f"num_negatives must be >= {self.min_negatives}, got {num_negatives}")
        check_distribution(negative_distribution)
        self.task, self.label_threshold = task, label_threshold
        self.field_spec = {"categorical": list(categorical), "multi_hot": list(multi_hot),
                           "numeric": list(numeric), "context": list(context), "text": list(text),
                           "text_buckets": text_buckets}
        self.multi_hot_weight = multi_hot_weight
        self.num_negatives = num_negatives
        self.negative_distribution, self.negative_alpha = negative_distribution, negative_alpha
        self._features: FeatureTables | None = None

    # ------------------------------------------------------------ fields
    @property
    def features(self) -> FeatureTables:
        if self._features is None:
            self._features = encode_fields(self.data, **self.field_spec,
                                           multi_hot_weight=self.multi_hot_weight,
                                           counts_from=self.train)
        return self._features

    @property
    def num_features(self) -> int:
        return self.features.num_features

    @property
    def num_fields(self) -> int:
        return self.features.num_fields

    @property
    def fingerprint(self) -> str:
        spec = f"{super().fingerprint}|{self.task}|{self.label_threshold}|{self.field_spec}|" \
               f"{self.multi_hot_weight}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    @property
    def sampled_protocol(self) -> str | None:
        """The sampled protocol ranks for `topn` only (ctr and rating evaluate labelled rows)."""
        return super().sampled_protocol if self.task == "topn" else None

    def training_negatives(self) -> tuple[int, str] | None:
        if self.task != "topn" or self.num_negatives <= 0:
            return None
        return self.num_negatives, self.negative_distribution

    def label_mean(self) -> float | None:
        """Mean training label (ctr, rating); None for sampled labels (topn)."""
        return None if self.task == "topn" else float(self.labels(self.train).mean())

    def model_inputs(self, stage: str) -> ModelInputs:
        """The training split, the feature tables and, when fitting, the global bias's start."""
        inputs = super().model_inputs(stage)
        inputs.features = self.features
        if stage == "fit":
            inputs.initial_bias = initial_bias(self.task, self.label_mean())
        return inputs

    def labels(self, part: Interactions) -> np.ndarray:
        """ctr: rating >= label_threshold (1 / 0); rating: the rating itself. [n] float32."""
        if part.ratings is None:
            raise ValueError(f"task={self.task!r} needs ratings and {self.data.name} has none")
        if self.task == "ctr":
            return (part.ratings >= self.label_threshold).astype(np.float32)
        return part.ratings.astype(np.float32)

    # ------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        train, seed = self.train, self.train_seed()
        if self.task == "topn":
            sampler = self.negative_sampler(self.negative_distribution, self.negative_alpha)
            dataset: Dataset = SampledRowsDataset(self.features, train, sampler,
                                                  self.num_negatives, seed, rank)
        else:
            dataset = LabelledRowsDataset(self.features, train, self.labels(train), self.task)
        batches = EpochBatchSampler(len(train), self.batch_size, seed, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=self.num_workers)

    def _eval_loader(self, stage: Stage) -> DataLoader:
        if self.task == "topn" or stage == "predict":
            return super()._eval_loader(stage)  # full-catalogue ranking / top-K lists
        part = self.splits.val if stage == "val" else self.splits.test
        dataset = LabelledRowsDataset(self.features, part, self.labels(part), self.task)
        replicas, rank = self._world()
        sampler = EvalShardSampler(len(part), self.eval_batch_size, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)


class FieldRowsDataset(Dataset):
    """Padded libffm rows -> FeatureBatch (task ctr); keys as for LabelledRowsDataset."""

    def __init__(self, rows: FieldRows) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int, np.ndarray] | np.ndarray) -> FeatureBatch:
        pick = key[2] if isinstance(key, tuple) else key[key >= 0]  # [R]
        zeros = torch.zeros(len(pick), dtype=torch.long)  # no user / item ids in libffm data
        return FeatureBatch(
            users=zeros, items=zeros, index=torch.from_numpy(self.rows.index[pick]),
            value=torch.from_numpy(self.rows.value[pick]),
            field=torch.from_numpy(self.rows.field[pick]),
            labels=torch.from_numpy(self.rows.labels[pick]), task="ctr")


class LibFFMDataModule(LightningDataModule):
    """CTR rows from libffm files (`label field:index:value ...`, labels 0 / 1).

    Args:
        train / val / test: paths of the three parts (test optional).
        batch_size / eval_batch_size: rows per training / evaluation batch.
        seed: seeds the order of training rows (the global seed wins when set).

    There are no user or item ids (`num_users` = `num_items` = 0): ranking metrics and `predict`
    do not apply; `fit`, `validate` and `test` report AUC and LogLoss. `from_rows` builds one from
    parsed (or generated) `FieldRows`.
    """

    task = "ctr"
    num_users = 0
    num_items = 0

    def __init__(self, train: str, val: str, test: str | None = None, batch_size: int = 2048,
                 eval_batch_size: int = 8192, seed: int = 42, num_workers: int = 0) -> None:
        super().__init__()
        self.paths = {"train": train, "val": val, "test": test}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed, self.num_workers = seed, num_workers
        self._rows: dict[str, FieldRows] | None = None

    @classmethod
    def from_rows(cls, train: FieldRows, val: FieldRows, test: FieldRows | None = None,
                  **kwargs) -> LibFFMDataModule:
        dm = cls("<memory>", "<memory>", None if test is None else "<memory>", **kwargs)
        dm._rows = {k: v for k, v in (("train", train), ("val", val), ("test", test))
                    if v is not None}
        return dm

    @property
    def rows(self) -> dict[str, FieldRows]:
        if self._rows is None:
            rows = {k: read_libffm(p) for k, p in self.paths.items() if p is not None}
            for part, parsed in rows.items():
                bad = ~np.isin(parsed.labels, (0.0, 1.0))
                if bad.any():
                    raise ValueError(f"{self.paths[part]}: CTR labels must be 0 or 1, found "
                                     f"{parsed.labels[bad][0]} ({int(bad.sum())} such rows)")
            self._rows = rows
        return self._rows

    @property
    def num_features(self) -> int:
        return max(r.num_features for r in self.rows.values())

    @property
    def num_fields(self) -> int:
        return max(r.num_fields for r in self.rows.values())

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for part in sorted(self.rows):
            for array in ("labels", "index", "value", "field"):
                digest.update(np.ascontiguousarray(getattr(self.rows[part], array)).tobytes())
        return digest.hexdigest()[:16]

    def label_mean(self) -> float:
        return float(self.rows["train"].labels.mean())

    def model_inputs(self, stage: str) -> ModelInputs:
        """No user / item tables: only the global bias's start when fitting."""
        return ModelInputs(initial_bias=initial_bias("ctr", self.label_mean())
                           if stage == "fit" else None)

    def _world(self) -> tuple[int, int]:
        return process_layout(getattr(self, "trainer", None))

    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        seed = global_seed(self.seed)
        rows = self.rows["train"]
        batches = EpochBatchSampler(len(rows), self.batch_size, seed, replicas, rank)
        return DataLoader(FieldRowsDataset(rows), batch_size=None, sampler=batches,
                          num_workers=self.num_workers)

    def _eval_loader(self, part: str) -> DataLoader:
        if part not in self.rows:
            raise ValueError(f"LibFFMDataModule has no {part} file (set `{part}`)")
        replicas, rank = self._world()
        sampler = EvalShardSampler(len(self.rows[part]), self.eval_batch_size, replicas, rank)
        return DataLoader(FieldRowsDataset(self.rows[part]), batch_size=None, sampler=sampler,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
