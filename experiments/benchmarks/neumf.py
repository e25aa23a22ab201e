"""NeuMF on ML-100K `loo`: seconds per training epoch and training time to the best validation
NDCG@10, with RecBole 1.2.1's default NeuMF sizes (GMF 64 factors, MLP embeddings 64 + 64, layers
128-64, dropout 0.1) and the reference figure of PROTOCOLS.md (1.1 s per epoch, 2 CPU cores).
Adam with fused=True (one kernel per parameter instead of torch's foreach ops: ~0.5 ms less per
step here).

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/neumf.py [--negatives 1 4]
        [--batch-size 2048] [--threads 2] [--dropout 0.1] [--max-epochs 100 --patience 10]
        [--precision 32-true | bf16-mixed] [--timed-epochs 11] [--epochs-only]

Printed per number of negatives: the median training epoch (validation excluded) through
Lightning's Trainer, rows (positives) per second, the ratio to RecBole's epoch, and (unless
--epochs-only) a full fit with early stopping: the best validation NDCG@10, its epoch, the training
seconds up to it, and the test metrics of that checkpoint (full ranking and sampled99).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import warnings

import lightning
import torch
from clock import EpochClock, timed_fit  # experiments/benchmarks/clock.py
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_recs.callbacks import HeapPolicy
from lit_recs.checkpoints import load_checkpoint
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import NeuMF

RECBOLE_EPOCH_S = 1.1


def build(dm: NegativeSamplingDataModule, lr: float, dropout: float) -> NeuMF:
    torch.manual_seed(0)
    return NeuMF(dm.num_users, dm.num_items, gmf_dim=64, mlp_dims=(128, 128, 64), dropout=dropout,
                 optimizer=lambda p: torch.optim.Adam(p, lr=lr, fused=True))


def trainer(max_epochs: int, callbacks: list, root: str, precision: str) -> lightning.Trainer:
    return lightning.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                             precision=precision,
                             enable_model_summary=False, num_sanity_val_steps=0,
                             use_distributed_sampler=False, callbacks=[*callbacks, HeapPolicy()],
                             default_root_dir=root, accelerator="cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--negatives", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--precision", default="32-true",
                        help="bf16-mixed: matrix products in bfloat16 (CPU autocast); ranking "
                             "is always computed in float32")
    parser.add_argument("--timed-epochs", type=int, default=11,
                        help="epochs timed for the s/epoch figure (the median after the first)")
    parser.add_argument("--epochs-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch_size} positives, "
          f"dropout {args.dropout}, precision {args.precision}")
    for n in args.negatives:
        dm = NegativeSamplingDataModule(dataset="ml-100k", split="loo", num_negatives=n,
                                        batch_size=args.batch_size)
        epoch_s, _ = timed_fit(build(dm, args.lr, args.dropout), dm, args.timed_epochs,
                               args.precision)
        epoch = statistics.median(epoch_s[1:])
        print(f"{n} negatives: {epoch:.3f} s/epoch, {len(dm.train) / epoch:,.0f} positives/s, "
              f"{RECBOLE_EPOCH_S / epoch:.1f}x RecBole's {RECBOLE_EPOCH_S} s", flush=True)
        if args.epochs_only:
            continue
        clock = EpochClock()
        ckpt = ModelCheckpoint(monitor="val/ndcg@10", mode="max", filename="best")
        stop = EarlyStopping(monitor="val/ndcg@10", mode="max", patience=args.patience)
        with tempfile.TemporaryDirectory() as root:
            t = trainer(args.max_epochs, [clock, ckpt, stop], root, args.precision)
            model = build(dm, args.lr, args.dropout)
            t.fit(model, datamodule=dm)
            best_epoch = int(load_checkpoint(ckpt.best_model_path)["epoch"])
            test = t.test(model, datamodule=dm, ckpt_path="best", verbose=False)[0]
        print(f"  best val NDCG@10 {float(ckpt.best_model_score):.4f} at epoch {best_epoch + 1}, "
              f"{sum(clock.epoch_s[:best_epoch + 1]):.1f} s of training; test HR@10 "
              f"{test['test/hr@10']:.4f} NDCG@10 {test['test/ndcg@10']:.4f}, sampled99 HR@10 "
              f"{test['test/sampled99/hr@10']:.4f} NDCG@10 {test['test/sampled99/ndcg@10']:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
