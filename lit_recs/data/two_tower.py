"""`TwoTowerDataModule`: (user, item) pairs with histories, negatives and features (`TowerBatch`).

The two towers read the user's and the item's feature slots (the field encoding of
`FeatureDataModule`, attached to the model as tables) plus, for the user, the history: the last
`history_length` training items *before* the interaction, so no row sees its own item or the
future. Evaluation users read their last `history_length` known items (train; + validation at
test time).

Tasks:
- `topn`: every training interaction is a positive pair; `num_negatives` sampled items per row
  (`uniform`, `popularity` ** alpha or `hard`, never a training positive of the user). For
  sampled losses (BCE, BPR, hinge, sampled softmax) they are the row's negatives; for in-batch
  softmax they are extra candidates shared by the whole batch (mixed negatives; 0 = in-batch
  only). Validation / test are the shared full-catalogue ranking (EvalBatch, `sequences` holding
  the histories).
- `ctr`: labelled rows (rating >= label_threshold) for a classifier; AUC / LogLoss.

`item_vectors` adds pre-computed item vectors (text or image embeddings) to the item tower's
input: a `.npz` with arrays `item_id` [n] and `vectors` [n, d], or a `.parquet` with columns
`item_id` and `vector` (a list of floats); catalogue items missing from the file get zeros (and a
logged count).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset

from lit_recs.data.batches import TowerBatch
from lit_recs.data.cloze import SequenceEvalDataset, right_aligned
from lit_recs.data.datamodules import EvalDataset, Stage
from lit_recs.data.feature_rows import FeatureDataModule
from lit_recs.data.fields import FeatureTables
from lit_recs.data.inputs import ModelInputs
from lit_recs.data.interactions import Interactions
from lit_recs.data.sampling import EpochBatchSampler, EvalShardSampler, NegativeSampler

log = logging.getLogger(__name__)


class Histories:
    """The training log as per-user, time-ordered item histories: [B, L] right-aligned tokens
    (`lit_recs.data.tokens`: padding on the left, item + 1)."""

    def __init__(self, train: Interactions, length: int) -> None:
        self.length, self.users = length, train.users
        order = train.time_order()  # by (user, time), stable
        self.indptr, self.flat = train.sequences()  # [U + 1], [n]
        self.position = np.empty(len(train), np.int64)  # training row -> place in `flat`
        self.position[order] = np.arange(len(train))
        self._keys: np.ndarray | None = None  # [n] (user, time) keys, sorted; None: no times
        if train.timestamps is not None:
            times = train.timestamps[order]  # [n]
            self._lo = int(times.min(initial=0))
            self._span = int(times.max(initial=0)) - self._lo + 2  # offsets 1 .. span - 1
            self._keys = train.users[order] * self._span + (times - self._lo + 1)

    def _tokens(self, users: np.ndarray, end: np.ndarray) -> np.ndarray:
        start = np.maximum(self.indptr[users], end - self.length)  # [B]
        return right_aligned(self.flat, start, end - start, self.length)  # [B, L]

    def of_rows(self, rows: np.ndarray) -> np.ndarray:
        """Training rows [B] -> the user's training items before each row (in time order)."""
        return self._tokens(self.users[rows], self.position[rows])

    def before(self, users: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
        """(user, time) [B] -> the user's training items strictly before that time."""
        if self._keys is None or timestamps is None:
            raise ValueError("histories of held-out rows need timestamps: the data has none "
                             "(set history_length: 0)")
        offset = np.clip(timestamps - self._lo + 1, 0, self._span)  # 0: before every item
        end = np.searchsorted(self._keys, users * self._span + offset, side="left")  # [B]
        return self._tokens(users, end)


def last_items(known: Interactions, length: int) -> np.ndarray:
    """Each user's last `length` known items as right-aligned tokens [U, L] (no [mask])."""
    indptr, flat = known.sequences()
    count = np.minimum(np.diff(indptr), length)
    return right_aligned(flat, indptr[1:] - count, count, length).astype(np.int64)


def read_item_vectors(path: str, data: Interactions) -> np.ndarray:
    """Pre-computed item vectors keyed by raw item id -> [I, d] float32 in index order."""
    file = Path(path)
    if file.suffix == ".npz":
        with np.load(file) as arrays:
            missing = {"item_id", "vectors"} - set(arrays.files)
            if missing:
                raise ValueError(f"{path}: needs arrays item_id and vectors, missing {missing}")
            ids, vectors = arrays["item_id"], np.asarray(arrays["vectors"], np.float32)
    elif file.suffix == ".parquet":
        frame = pl.read_parquet(file)
        missing = {"item_id", "vector"} - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: needs columns item_id and vector, missing {missing}")
        ids = frame["item_id"].to_numpy()
        vectors = np.asarray(frame["vector"].to_list(), np.float32)
    else:
        raise ValueError(f"{path}: item vectors must be a .npz or a .parquet file")
    if vectors.ndim != 2 or len(vectors) != len(ids):
        raise ValueError(f"{path}: vectors must be [n, d] with one row per item_id, got "
                         f"{vectors.shape} for {len(ids)} ids")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{path}: vectors hold NaN or infinite values")
    index = {str(raw): i for i, raw in enumerate(data.item_ids)}
    rows = np.array([index.get(str(raw), -1) for raw in ids], np.int64)  # [n]
    table = np.zeros((data.num_items, vectors.shape[1]), np.float32)
    table[rows[rows >= 0]] = vectors[rows >= 0]
    unknown, absent = int((rows < 0).sum()), data.num_items - len(np.unique(rows[rows >= 0]))
    if unknown or absent:
        log.warning("%s: %d vectors of unknown items ignored; %d catalogue items have no vector "
                    "(zeros)", path, unknown, absent)
    return table


class TowerPairsDataset(Dataset):
    """(epoch, batch, rows) -> TowerBatch of training positives, histories and negatives."""

    def __init__(self, train: Interactions, histories: Histories | None,
                 sampler: NegativeSampler | None, num_negatives: int, seed: int, rank: int) -> None:
        self.train, self.histories, self.sampler = train, histories, sampler
        self.num_negatives, self.seed, self.rank = num_negatives, seed, rank

    def __len__(self) -> int:
        return len(self.train)

    def __getitem__(self, key: tuple[int, int, np.ndarray]) -> TowerBatch:
        epoch, batch, rows = key
        users = self.train.users[rows]  # [B]
        negatives = None
        if self.sampler is not None and self.num_negatives > 0:
            rng = np.random.default_rng([self.seed, epoch, self.rank, batch])
            negatives = torch.from_numpy(self.sampler.sample(users, self.num_negatives, rng))
        history = None if self.histories is None else \
            torch.from_numpy(self.histories.of_rows(rows))  # [B, L]
        return TowerBatch(users=torch.from_numpy(users),
                          items=torch.from_numpy(self.train.items[rows]), history=history,
                          negatives=negatives, task="topn")


class TowerRowsDataset(Dataset):
    """Labelled rows (ctr) of one split part; keys as for LabelledRowsDataset. Training rows read
    the history before their place in the log, held-out rows the history before their time."""

    def __init__(self, tables: FeatureTables, part: Interactions, labels: np.ndarray,
                 histories: Histories | None, training: bool) -> None:
        self.tables, self.part, self.labels = tables, part, labels
        self.histories, self.training = histories, training

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, key: tuple[int, int, np.ndarray] | np.ndarray) -> TowerBatch:
        rows = key[2] if isinstance(key, tuple) else key[key >= 0]  # [R]
        users = self.part.users[rows]
        ts = None if self.part.timestamps is None else self.part.timestamps[rows]
        history = None
        if self.histories is not None:
            tokens = self.histories.of_rows(rows) if self.training else \
                self.histories.before(users, ts)
            history = torch.from_numpy(tokens)  # [R, L]
        context = None
        if self.tables.side("context"):
            context = torch.from_numpy(self.tables.context(ts).index)  # [R, Sc]
        return TowerBatch(users=torch.from_numpy(users),
                          items=torch.from_numpy(self.part.items[rows]), history=history,
                          labels=torch.from_numpy(self.labels[rows]), context=context, task="ctr")


class TwoTowerDataModule(FeatureDataModule):
    """Pairs for two-tower / DSSM models (see the module docstring).

    Args (besides FeatureDataModule's, whose `task` is `topn` or `ctr` here):
        history_length: L, the items of history the user tower reads (0 = none).
        num_negatives: sampled negatives per row (0 allowed: in-batch softmax alone); at most
            the distinct items every user can draw, checked at `setup` (see
            NegativeSamplingDataModule).
        item_vectors: optional path of pre-computed item vectors (.npz / .parquet).
    """

    min_negatives = 0

    def __init__(self, *args, history_length: int = 0, num_negatives: int = 0,
                 item_vectors: str | None = None, **kwargs) -> None:
        kwargs.setdefault("task", "topn")
        super().__init__(*args, num_negatives=num_negatives, **kwargs)
        if self.task not in ("topn", "ctr"):
            raise ValueError(f"TwoTowerDataModule serves task 'topn' or 'ctr', got {self.task!r}")
        if history_length < 0:
            raise ValueError(f"history_length must be >= 0, got {history_length}")
        self.history_length, self.item_vectors_path = history_length, item_vectors
        self._item_vectors: np.ndarray | None = None
        self._histories: Histories | None = None

    @property
    def fingerprint(self) -> str:
        spec = f"{super().fingerprint}|{self.history_length}|{self.item_vectors_path}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    @property
    def item_vectors(self) -> np.ndarray | None:
        """[I, d] pre-computed item vectors, or None."""
        if self._item_vectors is None and self.item_vectors_path is not None:
            self._item_vectors = read_item_vectors(self.item_vectors_path, self.data)
        return self._item_vectors

    @property
    def item_vector_dim(self) -> int:
        vectors = self.item_vectors
        return 0 if vectors is None else vectors.shape[1]

    @property
    def histories(self) -> Histories | None:
        if self.history_length and self._histories is None:
            self._histories = Histories(self.train, self.history_length)
        return self._histories

    def sampling_probabilities(self) -> dict[str, np.ndarray]:
        """Item distributions [I] of the candidates: `positives` (the training log's item
        frequencies: in-batch candidates) and `negatives` (the extra negatives' sampler)."""
        counts = self.train.item_counts().astype(np.float64)
        negatives = NegativeSampler(self.train.binary_csr(), self.negative_distribution,
                                    self.negative_alpha).probabilities()
        return {"positives": counts / counts.sum(), "negatives": negatives}

    def model_inputs(self, stage: str) -> ModelInputs:
        """FeatureDataModule's, the item vectors and, when fitting, the sampling probabilities."""
        inputs = super().model_inputs(stage)
        inputs.item_vectors = self.item_vectors
        if stage == "fit":
            inputs.sampling_probabilities = self.sampling_probabilities()
        return inputs

    # ------------------------------------------------------------ loaders
    def train_dataloader(self) -> DataLoader:
        replicas, rank = self._world()
        train, seed = self.train, self.train_seed()
        if self.task == "topn":
            sampler = self.negative_sampler(self.negative_distribution, self.negative_alpha) \
                if self.num_negatives else None
            dataset: Dataset = TowerPairsDataset(train, self.histories, sampler,
                                                 self.num_negatives, seed, rank)
        else:
            dataset = TowerRowsDataset(self.features, train, self.labels(train), self.histories,
                                       training=True)
        batches = EpochBatchSampler(len(train), self.batch_size, seed, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=batches, num_workers=self.num_workers)

    def _with_history(self, base: EvalDataset, known: Interactions) -> EvalDataset:
        if not self.history_length:
            return base
        return SequenceEvalDataset(base, last_items(known, self.history_length))

    def _build_eval(self, stage: Stage) -> EvalDataset:
        return self._with_history(super()._build_eval(stage), self.known(stage))

    def scoring_dataset(self) -> EvalDataset:
        return self._with_history(super().scoring_dataset(), self.train)

    def _eval_loader(self, stage: Stage) -> DataLoader:
        if self.task == "topn" or stage == "predict":
            return super()._eval_loader(stage)
        part = self.splits.val if stage == "val" else self.splits.test
        dataset = TowerRowsDataset(self.features, part, self.labels(part), self.histories,
                                   training=False)
        replicas, rank = self._world()
        sampler = EvalShardSampler(len(part), self.eval_batch_size, replicas, rank)
        return DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=self.num_workers)
