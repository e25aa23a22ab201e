"""BERT4Rec (or SASRec) on ML-100K (seq-loo): time per epoch, time to the final best validation
NDCG@10, peak memory and test metrics, with the reference system's sizes and seen-item masking off.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/bert4rec.py [--seed 42]
        [--model bert4rec|sasrec]
        [--max-epochs 400 --patience 20] [--mask-seen] [--device cpu|cuda] [--precision 32|bf16-mixed]
        [--mask-prob 0.2 [--mask-replace] --last-only 0.0 --stride 50]
        [--dim 64 --heads 2 --dropout 0.1 --batch-size 128]
        [--lr 1e-3 --weight-decay 0 --plateau 0 --plateau-patience 5 --decay 0] [--threads N]
        [--synthetic-items 0 --sampled 0]

The reference (RecBole 1.2.1 on this machine, PROTOCOLS.md): 2 layers, 2 heads, hidden 64, L = 50,
no seen-item masking: test HR@10 0.1135 / NDCG@10 0.0502 after 12 epochs = 2,242 s of training
(187 s per epoch), peak memory 4.6 GB. Same sizes here (conf/data/ml-100k-seq.yaml and
conf/model/bert4rec.yaml: mask probability 0.2, batch 128, Adam lr 1e-3, dropout 0.1), trained with
early stopping on validation NDCG@10 (computed with the same masking as the test). Printed: seconds
per training epoch (mean, excluding validation), the training time until the epoch whose
checkpoint is tested (the best validation NDCG@10), the whole fit, tokens per second (non-padding
input tokens of the training batches), peak RSS, and the test metrics of the best checkpoint.
`--synthetic-items N` trains on a synthetic catalogue of N items instead (with `--sampled K`: the
sampled softmax with K negatives), e.g. to measure tokens/s at 100k items on a GPU.
`--model sasrec` trains SASRec on next-item batches instead (windows of 50 items, stride 49 unless
`--stride` says otherwise; mask options do not apply), e.g. an epoch at 100k items with
`--synthetic-items 100000 --sampled 1000 --max-epochs 1`.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import time
import warnings

import lightning
import torch
from clock import EpochClock  # experiments/benchmarks/clock.py
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_recs import losses
from lit_recs.callbacks import HeapPolicy
from lit_recs.checkpoints import load_checkpoint
from lit_recs.data.cloze import ClozeDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.data.sequential import NextItemDataModule
from lit_recs.models import BERT4Rec, SASRec


class Clock(EpochClock):
    """EpochClock (validation excluded) that also counts the non-padding tokens trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.tokens += int((batch.tokens > 0).sum())


def optimizer(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if weight_decay > 0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr)


def plateau(factor: float, patience: int):
    """ReduceLROnPlateau on validation NDCG@10 (None when factor is 0)."""
    if factor <= 0:
        return None

    def make(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=factor,
                                                          patience=patience)
    return make


def linear_decay(epochs: int):
    """The learning rate falls linearly to 1% of its start over `epochs` epochs (None when 0)."""
    if epochs <= 0:
        return None

    def make(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LinearLR:
        return torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.01,
                                                 total_iters=epochs)
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--model", choices=("bert4rec", "sasrec"), default="bert4rec")
    ap.add_argument("--max-epochs", type=int, default=400)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--mask-seen", action="store_true", help="mask seen items (off: as the reference)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--precision", default="32-true")
    ap.add_argument("--synthetic-items", type=int, default=0)
    ap.add_argument("--synthetic-users", type=int, default=20_000)
    ap.add_argument("--sampled", type=int, default=0, help="sampled-softmax negatives (0: full)")
    ap.add_argument("--mask-prob", type=float, default=0.2)
    ap.add_argument("--mask-replace", action="store_true", help="BERT's 80/10/10 rule")
    ap.add_argument("--last-only", type=float, default=0.0, help="share of last-item-only masks")
    ap.add_argument("--stride", type=int, default=None,
                    help="sliding-window stride (0: last L only; default 50, SASRec 49)")
    ap.add_argument("--dim", type=int, default=64, help="hidden size (the reference's: 64)")
    ap.add_argument("--heads", type=int, default=2, help="attention heads (the reference's: 2)")
    ap.add_argument("--dropout", type=float, default=None, help="default 0.1, SASRec 0.2")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.0, help="> 0: AdamW with this decay")
    ap.add_argument("--plateau", type=float, default=0.0,
                    help="> 0: ReduceLROnPlateau on validation NDCG@10 with this factor")
    ap.add_argument("--plateau-patience", type=int, default=5)
    ap.add_argument("--decay", type=int, default=0,
                    help="> 0: learning rate falls linearly to 1%% over this many epochs")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|num_workers|does not have many).*")
    lightning.seed_everything(args.seed, verbose=False)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.synthetic_items:
        data = Synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                         interactions_per_user=50, seed=0)
        name = f"synthetic {args.synthetic_users} users x {args.synthetic_items} items"
    else:
        data, name = "ml-100k", "ml-100k"
    if args.stride is None:
        args.stride = 49 if args.model == "sasrec" else 50
    if args.dropout is None:  # the configs' (conf/model/bert4rec.yaml, sasrec.yaml)
        args.dropout = 0.2 if args.model == "sasrec" else 0.1
    loss = losses.SampledCE(args.sampled) if args.sampled else losses.full_ce
    common = dict(window_stride=args.stride or None, batch_size=args.batch_size,
                  sampled_negatives=0)
    if args.model == "sasrec":
        dm = NextItemDataModule(dataset=data, max_len=50, **common)
    else:
        dm = ClozeDataModule(dataset=data, max_len=50, mask_prob=args.mask_prob,
                             mask_replace=args.mask_replace, last_only_prob=args.last_only,
                             **common)
    model = (SASRec if args.model == "sasrec" else BERT4Rec)(
        dm.num_users, dm.num_items, max_len=dm.max_len, dim=args.dim, layers=2, heads=args.heads,
        dropout=args.dropout, loss=loss, mask_seen=args.mask_seen,
        optimizer=lambda p: optimizer(p, args.lr, args.weight_decay),
        lr_scheduler=plateau(args.plateau, args.plateau_patience) or linear_decay(args.decay))
    clock = Clock()
    ckpt = ModelCheckpoint(monitor="val/ndcg@10", mode="max", save_top_k=1,
                           dirpath=f"/tmp/lit_recs_bench_bert4rec_{os.getpid()}")
    trainer = lightning.Trainer(
        max_epochs=args.max_epochs, accelerator=args.device, devices=1,
        precision=args.precision, logger=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
        callbacks=[clock, ckpt, HeapPolicy(), EarlyStopping(monitor="val/ndcg@10", mode="max",
                                              patience=args.patience)])
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0
    best_epoch = int(load_checkpoint(ckpt.best_model_path)["epoch"])  # 0-based
    to_best = sum(clock.epoch_s[: best_epoch + 1])
    test = trainer.test(model, datamodule=dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    epochs = len(clock.epoch_s)
    mean_epoch = sum(clock.epoch_s) / epochs
    seen = "masked" if args.mask_seen else "not masked"
    print(f"{args.model}, {name}, seq-loo, seen items {seen}, seed "
          f"{args.seed}: {dm.num_users} users, {dm.num_items} items, {len(dm.train)} training "
          f"interactions; dim {args.dim}, heads {args.heads}, mask_prob {args.mask_prob}, "
          f"last-only share {args.last_only}, window "
          f"stride {args.stride or None}, dropout {args.dropout}, "
          f"batch {args.batch_size}, lr "
          f"{args.lr}, weight decay {args.weight_decay}, plateau {args.plateau}, decay {args.decay}")
    ref = dict(epochs="12", epoch_s="187", to_best="2,242 s", memory="4.6 GB",
               test="0.1135 / 0.0502")
    if args.synthetic_items:  # the reference figures are ML-100K's
        ref = dict.fromkeys(ref, "")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    peak = f"{rss:.2f} GB RSS" + (f", {torch.cuda.max_memory_allocated() / 1e9:.2f} GB GPU"
                                  if args.device == "cuda" else "")
    print("| what | lit_recs | reference (RecBole 1.2.1, same machine) |")
    print("|---|---|---|")
    print(f"| training epochs (best epoch tested) | {epochs} ({best_epoch + 1}) | {ref['epochs']} |")
    print(f"| seconds per training epoch | {mean_epoch:.2f} | {ref['epoch_s']} |")
    print(f"| training time to the tested epoch | {to_best:.1f} s | {ref['to_best']} |")
    print(f"| whole fit incl. validation and patience | {fit_s:.1f} s | |")
    print(f"| tokens per second (training) | {clock.tokens / sum(clock.epoch_s):,.0f} | |")
    print(f"| peak memory | {peak} | {ref['memory']} |")
    print(f"| best validation NDCG@10 | {float(ckpt.best_model_score):.4f} | |")
    print(f"| test HR@10 / NDCG@10 | {test['test/hr@10']:.4f} / {test['test/ndcg@10']:.4f} "
          f"| {ref['test']} |")
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}{gpu}, precision {args.precision}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
