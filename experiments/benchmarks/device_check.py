"""Train MF-BPR on an accelerator, then test the same checkpoint there and on the CPU.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/device_check.py \
        [--accelerator gpu] [--epochs 5] [--precision 32-true]

Prints the epoch time on the accelerator and each test metric from both devices with their largest
difference: the evaluation must not depend on where it runs (up to float rounding of the scores).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import MF


def trainer(accelerator: str, root: str, epochs: int = 1, precision: str = "32-true",
            callbacks: list | None = None) -> L.Trainer:
    return L.Trainer(accelerator=accelerator, devices=1, max_epochs=epochs, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, precision=precision,
                     use_distributed_sampler=False, num_sanity_val_steps=0,
                     default_root_dir=root, callbacks=callbacks or [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accelerator", default="gpu")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--precision", default="32-true")
    args = ap.parse_args()
    L.seed_everything(0, verbose=False)
    dm = NegativeSamplingDataModule(dataset="ml-100k", num_negatives=4)
    model = MF(dm.num_users, dm.num_items, bias=False,
               optimizer=lambda p: torch.optim.Adam(p, lr=2e-3, weight_decay=1e-5))
    with tempfile.TemporaryDirectory() as root:
        ckpt = ModelCheckpoint(dirpath=root, monitor="val/ndcg@10", mode="max")
        fit = trainer(args.accelerator, root, args.epochs, args.precision, [ckpt])
        t0 = time.perf_counter()
        fit.fit(model, dm)
        seconds = time.perf_counter() - t0
        print(f"fit on {args.accelerator}: {args.epochs} epochs in {seconds:.1f} s "
              f"({seconds / args.epochs:.2f} s/epoch incl. validation)")
        results = {}
        for accelerator in (args.accelerator, "cpu"):
            tester = trainer(accelerator, root)
            results[accelerator] = tester.test(model, dm, ckpt_path=ckpt.best_model_path,
                                               verbose=False)[0]
    worst = 0.0
    for key in sorted(results["cpu"]):
        a, c = results[args.accelerator][key], results["cpu"][key]
        worst = max(worst, abs(a - c))
        if key.endswith("@10"):
            print(f"{key:<28} {args.accelerator}={a:.6f} cpu={c:.6f}")
    print(f"largest |{args.accelerator} - cpu| over {len(results['cpu'])} metrics: {worst:.2e}")


if __name__ == "__main__":
    main()
