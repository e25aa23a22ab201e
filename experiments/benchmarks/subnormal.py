"""Subnormal weights and CPU speed: NeuMF ranking a catalogue with healthy MLP weights, with a few
weights at 1e-39 (what weight decay leaves on dead units: the long-tail scale run's NeuMF had 2-5%
of each MLP layer's weights below 1.2e-38 after 5 minutes of training), and with those weights
while the CPU flushes subnormals to zero (`torch.set_flush_denormal(True)`, which the `lit-recs`
command sets unless `--flush_denormal false`).

    python experiments/benchmarks/subnormal.py [--items 50000] [--users 512] [--share 0.03]

Prints seconds per evaluation batch for each case, the largest score difference flushing makes,
the machine, the thread setting and the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from lit_recs.data.batches import EvalBatch
from lit_recs.models.neumf import NeuMF

TINY = 1e-39  # below float32's smallest normal number, 1.18e-38


def batch_seconds(model: NeuMF, batch: EvalBatch, repeats: int) -> tuple[float, torch.Tensor]:
    """Best of `repeats` wall times of scoring the whole catalogue for the batch, and the scores."""
    best, scores = float("inf"), torch.empty(0)
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            scores = model.item_scorer(batch)(slice(None))  # [B, I]
            best = min(best, time.perf_counter() - start)
    return best, scores


def make_subnormal(model: NeuMF, share: float, seed: int) -> int:
    """Sets `share` of every MLP weight matrix's entries to +-1e-39; returns how many."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for layer in [model.net.first_user, model.net.first_item,
                      *(m for m in model.net.mlp if isinstance(m, torch.nn.Linear))]:
            pick = torch.rand(layer.weight.shape, generator=generator) < share
            layer.weight[pick] = TINY * layer.weight[pick].sign()
            count += int(pick.sum())
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--share", type=float, default=0.03)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    model = NeuMF(10_000, args.items).eval()
    users = torch.randint(0, 10_000, (args.users,))
    none = torch.empty(2, 0, dtype=torch.long)
    batch = EvalBatch(users, torch.ones(args.users), none, none)
    print(f"NeuMF (gmf 8, mlp 64-32-16-8), {args.users} users x {args.items:,} items per batch")
    torch.set_flush_denormal(False)
    healthy, _ = batch_seconds(model, batch, args.repeats)
    print(f"  healthy weights:                        {healthy:6.2f} s")
    count = make_subnormal(model, args.share, seed=1)
    slow, kept = batch_seconds(model, batch, args.repeats)
    print(f"  {count} MLP weights at 1e-39:              {slow:6.2f} s")
    torch.set_flush_denormal(True)
    flushed, scores = batch_seconds(model, batch, args.repeats)
    torch.set_flush_denormal(False)
    print(f"  the same, subnormals flushed to zero:   {flushed:6.2f} s")
    print(f"  largest score difference from flushing: {(scores - kept).abs().max().item():.2e}")
    print(f"  slowdown {slow / healthy:.1f}x, flushing recovers {slow / flushed:.1f}x")


if __name__ == "__main__":
    main()
