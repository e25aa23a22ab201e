"""Item-item models at a real catalogue size: scoring from the sparse history, and EASE's memory.

    python experiments/benchmarks/item_item.py [--items 24000 --users 31000 --per-user 9]
        [--batch 512] [--threads 2] [--ease] [--sparse-density 0.003]

1. Scoring: a batch of users times item-item weights W [I, I], as dense rows [B, I] @ W (what
   EASE / ItemKNN / SLIM did before issue 18) and as the sparse history @ W
   (`lit_recs.nn.item_item.history_scores`), for a dense W (EASE) and a sparse one (SLIM,
   ItemKNN); the two agree, and the script prints seconds per batch and for all users.
2. `--ease`: EASE fitted on a synthetic log of that shape: fit seconds, peak RSS against
   3 x I^2 x 4 bytes (the float32 Gram matrix, its Cholesky inverse and the solver's workspace),
   and a full-ranking test pass of every test user through the framework's test loop.

The default shape is the sequential dataset of issue 18 (about 31k users, 24k items, 290k
actions): there a dense-row evaluation pass took 10-11 minutes per EASE evaluation.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import lightning
import torch

from lit_recs.nn.item_item import by_column, history_scores


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def random_history(users: int, items: int, per_user: int, gen: torch.Generator) -> torch.Tensor:
    """(row, item) pairs [2, S] sorted by row then item: per_user distinct items per user."""
    picks = torch.rand(users, items, generator=gen).argsort(1)[:, :per_user].sort(1).values
    rows = torch.arange(users).repeat_interleave(per_user)
    return torch.stack([rows, picks.reshape(-1)])


def timed(fn, repeat: int = 3) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def scoring(args: argparse.Namespace) -> None:
    gen = torch.Generator().manual_seed(0)
    seen = random_history(args.batch, args.items, args.per_user, gen)  # [2, B * per_user]
    dense_rows = torch.zeros(args.batch, args.items)
    dense_rows[seen[0], seen[1]] = 1.0  # [B, I]
    batches = -(-args.users // args.batch)
    weights = {"dense W (EASE)": torch.randn(args.items, args.items, generator=gen)}
    keep = torch.rand(args.items, args.items, generator=gen) < args.sparse_density
    sparse = (weights["dense W (EASE)"] * keep).to_sparse()
    weights[f"sparse W, density {args.sparse_density} (SLIM, ItemKNN)"] = sparse
    print(f"scoring {args.batch} users x {args.items:,} items, {args.per_user} known items each; "
          f"{batches} batches for {args.users:,} users")
    print("| W | dense rows @ W (s / batch) | sparse history @ W (s / batch) | all users, "
          "sparse (s) | max abs difference |")
    print("| --- | --- | --- | --- | --- |")
    for name, w in weights.items():
        t_dense, t_sparse, diff = compare(w, dense_rows, seen, args.batch)
        print(f"| {name} | {t_dense:.3f} | {t_sparse:.4f} | {t_sparse * batches:.1f} | "
              f"{diff:.1e} |")


def compare(w: torch.Tensor, dense_rows: torch.Tensor, seen: torch.Tensor, batch: int
            ) -> tuple[float, float, float]:
    """(s per batch through dense rows, s through the sparse history, max abs difference)."""
    dense_w = w if w.layout == torch.strided else w.to_dense()
    t_dense, expected = timed(lambda: dense_rows @ dense_w, repeat=1)
    operand = w if w.layout == torch.strided else by_column(w)
    t_sparse, got = timed(lambda: history_scores(seen, batch, operand))
    return t_dense, t_sparse, float((got - expected).abs().max())


def ease(args: argparse.Namespace) -> None:
    from lit_recs.data.datamodules import NegativeSamplingDataModule
    from lit_recs.data.datasets import Synthetic
    from lit_recs.models import EASE

    data = Synthetic(num_users=args.users, num_items=args.items,
                     interactions_per_user=args.per_user, seed=1)
    dm = NegativeSamplingDataModule(dataset=data, split="loo", sampled_negatives=0,
                                    eval_batch_size=args.batch)
    before = peak_rss_gib()
    model = EASE(dm.num_users, dm.num_items, l2=args.l2)
    trainer = lightning.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, use_distributed_sampler=False,
                                num_sanity_val_steps=0, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - start
    peak = peak_rss_gib()
    start = time.perf_counter()
    metrics = trainer.test(model, datamodule=dm, verbose=False)[0]
    test_s = time.perf_counter() - start
    bound = 3 * dm.num_items**2 * 4 / 2**30
    print(f"EASE on {dm.num_users:,} users x {dm.num_items:,} items ({len(dm.data):,} "
          f"interactions, loo): fit {fit_s:.1f} s; peak RSS {peak:.2f} GiB (before the model: "
          f"{before:.2f}; 3 x I^2 x 4 bytes = {bound:.2f} GiB); test pass over "
          f"{dm.num_users:,} users {test_s:.1f} s, NDCG@10 {metrics['test/ndcg@10']:.4f}, "
          f"HR@10 {metrics['test/hr@10']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=24_000)
    parser.add_argument("--users", type=int, default=31_000)
    parser.add_argument("--per-user", type=int, default=9)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--sparse-density", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--l2", type=float, default=500.0)
    parser.add_argument("--ease", action="store_true", help="also fit EASE on synthetic data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {args.threads} threads (other jobs may share the cores)")
    scoring(args)
    if args.ease:
        ease(args)


if __name__ == "__main__":
    main()
