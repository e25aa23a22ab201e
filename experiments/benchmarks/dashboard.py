"""What the W&B `recommendations` table costs at scale: the pieces `WandbDashboard` runs after a
test, on a random log of 10^7 interactions over 10^6 users and 10^6 items (Popularity scores).

    python experiments/benchmarks/dashboard.py [--interactions 10000000] [--items 1000000]

Prints wall seconds of: the users' last training items (one pass over the log), the sample's
top 10 by the evaluation's ranking (the whole catalogue as one [20, I] block, and in chunks as a
model with a small `score_cells` ranks it), the table's rows, and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from lit_recs.dashboard import last_items, recommendation_rows, split_rows, top_items
from lit_recs.data.datamodules import EvalDataset
from lit_recs.data.interactions import Interactions
from lit_recs.models.popularity import Popularity


def timed(what: str, fn):  # noqa: ANN001, ANN201 - a benchmark's helper
    start = time.perf_counter()
    out = fn()
    print(f"{what:<58} {time.perf_counter() - start:8.3f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=20)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, num_users, num_items = args.interactions, args.users, args.items
    log = Interactions(users=rng.integers(0, num_users, n), items=rng.integers(0, num_items, n),
                       num_users=num_users, num_items=num_items,
                       user_ids=np.arange(num_users), item_ids=np.arange(num_items),
                       timestamps=rng.integers(0, 10**9, n))
    seen = log.binary_csr()  # every interaction known; the targets: each user's first one
    dataset = EvalDataset(np.arange(num_users), seen, seen, None)
    rows = np.sort(rng.choice(num_users, args.sample, replace=False))
    batch = dataset[rows]
    users = batch.users.numpy()
    recent = timed(f"last 5 items of {args.sample} users in {n:,} interactions",
                   lambda: last_items(log, users, 5))
    whole = Popularity(num_users, num_items)
    whole.counts.copy_(torch.as_tensor(log.item_counts(), dtype=torch.float32))
    chunked = Popularity(num_users, num_items, score_cells=args.sample * 65_536)
    chunked.counts.copy_(whole.counts)
    assert whole.chunk_width(batch) is None and chunked.chunk_width(batch) == 65_536
    scores, items = timed(f"top 10 of {num_items:,} items, one [{args.sample}, I] block",
                          lambda: top_items(whole, batch, 10))
    again = timed(f"top 10 of {num_items:,} items, chunks of 65,536",
                  lambda: top_items(chunked, batch, 10))
    assert torch.equal(again[0], scores)  # the same top scores (tied items may differ)
    held = split_rows(batch.targets.numpy(), len(users))
    columns, table = timed("table rows", lambda: recommendation_rows(
        log, users, items.numpy(), scores.numpy(), held, recent))
    print(f"{len(table)} rows, {len(columns)} columns; {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
