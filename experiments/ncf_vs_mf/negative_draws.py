"""How much the sampled protocol's one draw of negatives moves a trained model's numbers.

    LIT_RECS_DATA=../shared/datasets python experiments/ncf_vs_mf/negative_draws.py \
        runs/ncf_vs_mf/neumf-42 runs/ncf_vs_mf/mf-42 ... [--draws 20 --first-seed 1000]

`loo-sampled99` ranks each test item against 99 negatives drawn once (the DataModule's seed), so
the table's figures hold for one draw. For each run folder (a `lit-recs fit` output: config.yaml and
checkpoints/best.ckpt) this scores the test users once and re-ranks the test item against
`--draws` other draws of 99 never-interacted items (seeds first-seed, first-seed + 1, ...). It
prints HR@10 / NDCG@10 on the run's own draw and the mean, sd, min and max over the other draws.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
from pathlib import Path

import numpy as np
import torch
import yaml

from lit_recs.data.sampling import eval_negatives


def named(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def hr_ndcg(scores: torch.Tensor, target: torch.Tensor, negatives: torch.Tensor) -> tuple[float, float]:
    """scores [U, I]; target [U]; negatives [U, N] -> HR@10 and NDCG@10 of the target among them."""
    pos = scores.gather(1, target[:, None])  # [U, 1]
    rank = (scores.gather(1, negatives) >= pos).sum(1)  # [U], 0 = first; ties rank ahead, as in
    # lit_recs.metrics (pessimistic)
    hit = rank < 10
    return float(hit.float().mean()), float((hit / torch.log2(rank + 2.0)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=1000)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    for run in args.runs:
        config = yaml.safe_load((run / "config.yaml").read_text())
        dm = named(config["data"]["class_path"])(**config["data"]["init_args"])
        model = named(config["model"]["class_path"]).load_from_checkpoint(
            run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True).eval()
        test = dm.eval_dataset("test")
        batch = test[np.arange(len(test))]  # every test user at once
        rows, target = batch.targets  # [T], [T]
        if batch.sampled is None or not torch.equal(rows, torch.arange(len(batch))):
            raise ValueError(f"{run}: needs the sampled protocol and one test item per user (loo)")
        scores = model.score(batch).float()  # [U, I]
        own_hr, own_ndcg = hr_ndcg(scores, target, batch.sampled)  # the run's own draw [U, N]
        everything, users = dm.data.binary_csr(), batch.users.numpy()
        draws = [hr_ndcg(scores, target, torch.from_numpy(eval_negatives(
            everything, users, batch.sampled.shape[1], "uniform", args.first_seed + k)))
            for k in range(args.draws)]
        hr, ndcg = zip(*draws)
        print(f"{run}: own draw HR@10 {own_hr:.4f} NDCG@10 {own_ndcg:.4f}; {args.draws} other "
              f"draws HR@10 mean "
              f"{statistics.mean(hr):.4f} sd {statistics.stdev(hr):.4f} (min {min(hr):.4f}, max "
              f"{max(hr):.4f}), NDCG@10 mean {statistics.mean(ndcg):.4f} sd "
              f"{statistics.stdev(ndcg):.4f}", flush=True)


if __name__ == "__main__":
    main()
