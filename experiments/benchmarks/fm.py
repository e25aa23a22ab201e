"""FM and FFM training speed: seconds per epoch and rows per second, through Lightning's Trainer
(the real training path: DataModule batches, compute_loss, Adam) and as a bare torch loop over the
same batches (what the framework adds), on

- ML-100K, CTR protocol (conf/data/ml-100k-ctr.yaml: 80,000 training rows, 7 fields), against
  RecBole 1.2.1 on this machine (PROTOCOLS.md): FM 0.38 s/epoch, FFM 1.18 s/epoch;
- a synthetic CTR set: `--rows` rows (default 1M) of `--fields` categorical fields (default 20),
  skewed feature frequencies, labels from a planted FM.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/fm.py [--epochs 5]
        [--batch-size 2048] [--threads 2] [--rows 1000000 --fields 20] [--skip-synthetic]

Printed per (data, model): median seconds per training epoch (epochs 2.., validation excluded),
rows/s, the validation AUC after the epochs, the bare torch loop's seconds per epoch (ML-100K),
and the ratio to the RecBole figure; the synthetic set runs 2 epochs and reports the second.
ML-100K trains dense tables with Adam (conf/model/fm.yaml, ffm.yaml); the synthetic set's 260k
features train with sparse gradients and Adagrad (`sparse: true`): a dense Adam step would update
all 260k x 20 x 8 FFM factors for every batch.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import numpy as np
import torch
from clock import timed_fit  # experiments/benchmarks/clock.py

from lit_recs.data.feature_rows import FeatureDataModule, LibFFMDataModule
from lit_recs.data.libffm import FieldRows
from lit_recs.models import FFM, FM

RECBOLE_S = {"FM": 0.38, "FFM": 1.18}  # s/epoch on ML-100K CTR, 2 CPU cores (PROTOCOLS.md)
SETTINGS = {"FM": {"dim": 16, "lr": 0.01, "l2": 0.02}, "FFM": {"dim": 8, "lr": 0.003, "l2": 0.01}}


def synthetic_rows(rows: int, fields: int, seed: int) -> FieldRows:
    """Categorical fields of 10..100k features (log-spaced), skewed draws; labels from a planted
    FM (per-feature weights plus 4-dimensional factors), the same model for every seed."""
    rng = np.random.default_rng(seed)
    sizes = np.resize(np.unique(np.geomspace(10, 100_000, fields).astype(np.int64)), fields)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    index = offsets + (sizes * rng.random((rows, fields)) ** 3).astype(np.int64)  # [n, F] skewed
    truth = np.random.default_rng(0)
    weight = truth.normal(0, 0.3, int(sizes.sum())).astype(np.float32)  # [features]
    factors = truth.normal(0, 0.15, (int(sizes.sum()), 4)).astype(np.float32)  # [features, 4]
    v = factors[index]  # [n, F, 4]
    pairwise = 0.5 * (v.sum(1) ** 2 - (v**2).sum(1)).sum(1)  # [n]
    logit = weight[index].sum(1) + pairwise - 0.5  # [n]
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    field = np.broadcast_to(np.arange(fields), (rows, fields)).copy()
    return FieldRows(labels, index, np.ones((rows, fields), np.float32), field,
                     int(sizes.sum()), fields)


def lightning_epochs(model, dm, epochs: int) -> tuple[list[float], float]:
    """Seconds of each training epoch through the Trainer, and the validation AUC after them."""
    epoch_s, trainer = timed_fit(model, dm, epochs)
    trainer.limit_val_batches = 1.0
    auc = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/auc"]
    return epoch_s, auc


def torch_loop(model, dm, epochs: int, optimizer) -> list[float]:
    """The same steps without Lightning: batches from the DataModule, compute_loss, optimizer."""
    loader = dm.train_dataloader()
    times = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        start = time.perf_counter()
        for batch in loader:
            loss = model.compute_loss(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, dm, epochs: int, sparse: bool, loop: bool = True) -> None:
    """Dense tables with Adam (ML-100K), or sparse gradients with Adagrad (large feature spaces)."""
    for cls in (FM, FFM):
        s = SETTINGS[cls.__name__]

        def make_optimizer(params, lr=s["lr"]):
            if sparse:
                return torch.optim.Adagrad(params, lr=0.05)
            return torch.optim.Adam(params, lr=lr, foreach=True)

        def build(s=s, cls=cls):
            torch.manual_seed(0)
            return cls(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, dim=s["dim"],
                       l2=s["l2"], sparse=sparse, optimizer=make_optimizer)

        rows = len(dm.train) if hasattr(dm, "splits") else len(dm.rows["train"])
        epoch_s, auc = lightning_epochs(build(), dm, epochs)
        fit_s = statistics.median(epoch_s[1:])
        loop_s = float("nan")
        if loop:
            model = build()
            loop_s = statistics.median(torch_loop(model, dm, epochs, make_optimizer(
                model.parameters()))[1:])
        ref = RECBOLE_S[cls.__name__] if name.startswith("ML-100K") else None
        vs = f"{ref / fit_s:5.1f}x RecBole ({ref} s)" if ref else ""
        print(f"{name:<30} {cls.__name__:<4} {fit_s:8.3f} s/epoch {rows / fit_s:12,.0f} rows/s "
              f"| val AUC {auc:.4f} after {epochs} epochs | torch loop {loop_s:7.3f} s/epoch "
              f"| {vs}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size}, "
          f"median of epochs 2..{args.epochs}")
    ctr = FeatureDataModule(dataset="ml-100k", task="ctr", split="global_random",
                            categorical=["user_id", "item_id", "gender", "occupation", "age",
                                         "year"], multi_hot=["genres"], multi_hot_weight="one",
                            batch_size=args.batch_size)
    measure("ML-100K CTR (80k rows, 7 fields)", ctr, args.epochs, sparse=False)
    if not args.skip_synthetic:
        start = time.perf_counter()
        train = synthetic_rows(args.rows, args.fields, seed=1)
        val = synthetic_rows(10_000, args.fields, seed=2)
        print(f"synthetic: {args.rows:,} rows, {args.fields} fields, {train.num_features:,} "
              f"features, {train.labels.mean():.2f} positive (built in "
              f"{time.perf_counter() - start:.1f} s)")
        dm = LibFFMDataModule.from_rows(train, val, batch_size=args.batch_size)
        measure(f"synthetic ({args.rows // 1000}k rows, {args.fields} fields)", dm,
                2, sparse=True, loop=False)


if __name__ == "__main__":
    main()
