"""Foundation speed figures: batch building, MF-BPR epoch time, full-ranking evaluation throughput.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/foundation_speed.py [--threads N]
        [--device cpu|cuda] [--synthetic-users 20000 --synthetic-items 26744]

Prints, for ML-100K (random811 and loo) and a synthetic catalogue of ML-20M width:
- training batches per second built by NegativeSamplingDataModule (negatives included);
- MF-BPR seconds per epoch (the Lightning-free inner loop: loader + forward/backward/step);
- evaluation users per second: score all items, mask seen items, update every metric (full ranking
  and the sampled protocol), i.e. what one validation epoch costs per user.
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import MF


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def epoch_time(dm: NegativeSamplingDataModule, model: MF, device: str) -> tuple[float, float, int]:
    loader = dm.train_dataloader()
    t0 = time.perf_counter()
    batches = list(loader)
    build = time.perf_counter() - t0
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for batch in loader:
        batch = model.transfer_batch_to_device(batch, torch.device(device), 0)
        loss = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync(device)
    return build, time.perf_counter() - t0, len(batches)


@torch.no_grad()
def eval_throughput(dm: NegativeSamplingDataModule, model: MF, device: str) -> tuple[float, int]:
    batches = [model.transfer_batch_to_device(b, torch.device(device), 0)
               for b in dm.test_dataloader()]
    users = int(sum(b.weights.sum() for b in batches))
    model._evaluate(batches[0], "test")  # warm-up
    model.metrics["test"].reset()
    model.metrics["test_sampled"].reset()
    sync(device)
    t0 = time.perf_counter()
    for b in batches:
        model._evaluate(b, "test")
    model.metrics["test"].compute()
    sync(device)
    return users / (time.perf_counter() - t0), users


def report(name: str, dm: NegativeSamplingDataModule, device: str) -> None:
    model = MF(dm.num_users, dm.num_items, dim=64).to(device)
    build, train, steps = epoch_time(dm, model, device)
    ups, users = eval_throughput(dm, model, device)
    print(f"{name:<28} {len(dm.train):>10,} {steps:>6} {steps / build:>10,.0f} {train:>9.2f} "
          f"{users:>8,} {ups:>12,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--synthetic-users", type=int, default=20_000)
    ap.add_argument("--synthetic-items", type=int, default=26_744)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"{'data':<28} {'train rows':>10} {'steps':>6} {'batches/s':>10} {'epoch s':>9} "
          f"{'users':>8} {'eval users/s':>12}")
    for split in ("random", "loo"):
        dm = NegativeSamplingDataModule(dataset="ml-100k", split=split, batch_size=1024,
                                        eval_batch_size=512)
        report(f"ml-100k {split}", dm, args.device)
    synth = Synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                      interactions_per_user=100, seed=0)
    dm = NegativeSamplingDataModule(dataset=synth, split="loo", batch_size=4096,
                                    eval_batch_size=1024)
    report(f"synthetic {args.synthetic_users}x{args.synthetic_items} loo", dm, args.device)


if __name__ == "__main__":
    main()
