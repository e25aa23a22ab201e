"""SLIM on a catalogue where a dense W does not fit: 50k synthetic items, W kept sparse throughout.

    python experiments/benchmarks/slim_large.py [--items 50000 --users 100000 --per-user 20]
        [--l1 3.77 --l2 184.8 --max-iter 200 --tol 3e-3] [--split loo|random] [--no-eval]

A dense W (or Gram matrix, or EASE's B) of 50k items is 50,000^2 float32 = 10 GB; `SLIM(solver=
"screened")` never builds one: the Gram matrix stays sparse (scipy CSR), each column is solved on its
candidate set {k : G_kj > l1} (exact: entries outside it are 0 at the optimum, see
lit_recs/nn/slim_screened.py), columns go through in chunks of bounded memory (blocks of columns of
similar candidate counts), and only the non-zeros of W are kept. Printed: the fit's wall time and
peak memory (RSS), the candidate work, the chunks, W's size against the dense one, and the test
NDCG@10 / HR@10 of SLIM and Popularity on the same split (`loo` by default; full ranking, seen items
masked, the framework's own test loop).
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
import numpy as np
import torch

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import SLIM, Popularity
from lit_recs.nn.slim_screened import candidates, sparse_gram


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def test_metrics(model: lightning.LightningModule, dm: NegativeSamplingDataModule
                 ) -> tuple[float, float, float]:
    trainer = lightning.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu",
                                use_distributed_sampler=False, enable_model_summary=False,
                                enable_checkpointing=False, max_epochs=1)
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    return float(out["test/ndcg@10"]), float(out["test/hr@10"]), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--per-user", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--l1", type=float, default=3.77)
    ap.add_argument("--l2", type=float, default=184.8)
    ap.add_argument("--max-iter", type=int, default=200)
    ap.add_argument("--tol", type=float, default=3e-3)
    ap.add_argument("--split", choices=("loo", "random"), default="loo",
                    help="loo: one held-out item per user (the cheaper evaluation at 50k items)")
    ap.add_argument("--no-eval", action="store_true", help="fit only")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|optimizer|training_step).*")

    source = Synthetic(num_users=args.users, num_items=args.items,
                       interactions_per_user=args.per_user, seed=args.seed)
    dm = NegativeSamplingDataModule(dataset=source, split=args.split)
    dm.setup("fit")
    a = dm.train.binary_csr()
    print(f"synthetic, {args.split}: {dm.num_users} users x {dm.num_items} items, {a.nnz} training "
          f"interactions; l1 {args.l1}, l2 {args.l2}, max_iter {args.max_iter}, tol {args.tol}")
    g = sparse_gram(a)
    cand = candidates(g, args.l1)
    sizes = cand.sizes
    print(f"Gram matrix: {g.nnz} non-zeros (sparse CSR, {g.data.nbytes + g.indices.nbytes:,} B); "
          f"candidate sets: {len(cand.rows)} entries, per item median {int(np.median(sizes))}, "
          f"99% {int(np.quantile(sizes, 0.99))}, max {int(sizes.max())}; work per FISTA step "
          f"sum |S_j|^2 = {cand.work():,}")
    del g, cand

    model = SLIM(dm.num_users, dm.num_items, l1=args.l1, l2=args.l2, max_iter=args.max_iter,
                 tol=args.tol, solver="screened")
    rss_before = peak_rss_gb()
    t0 = time.perf_counter()
    with torch.no_grad():
        model.fit_interactions(dm.train)
    seconds = time.perf_counter() - t0
    stats = model.sparsity()
    w = model.weight
    w_bytes = w.values().nbytes + w.indices().nbytes
    dense_bytes = 4 * dm.num_items**2
    print(f"fit: {seconds:.1f} s, {len(model.fit_steps)} chunks of columns, FISTA steps per chunk "
          f"max {max(model.fit_steps)}, median {int(np.median(model.fit_steps))}; peak RSS "
          f"{peak_rss_gb():.2f} GB (before the fit {rss_before:.2f} GB)")
    print(f"W: {stats['nnz']:.0f} non-zeros ({stats['nnz_per_item']:.1f} per item, density "
          f"{stats['density']:.2e}); {w_bytes / 1e6:.1f} MB as COO (int64 indices) vs "
          f"{dense_bytes / 1e9:.1f} GB dense float32")
    if not args.no_eval:
        ndcg, hr, s = test_metrics(model, dm)  # refits inside fit: one more SLIM solve
        p_ndcg, p_hr, _ = test_metrics(Popularity(dm.num_users, dm.num_items), dm)
        print("| model | test NDCG@10 | test HR@10 |")
        print("|---|---|---|")
        print(f"| SLIM (screened, sparse W) | {ndcg:.4f} | {hr:.4f} |")
        print(f"| Popularity | {p_ndcg:.4f} | {p_hr:.4f} |")
        print(f"(SLIM fit + validation + test through the Trainer: {s:.1f} s)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}, torch {torch.__version__}; peak RSS {peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
