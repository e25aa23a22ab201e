"""iALS: lit_recs' conjugate-gradient and exact (Cholesky) sweeps vs implicit's ALS, side by side.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/ials.py
        [--data ml-100k|synthetic] [--shape small|ml20m] [--dims 64 128] [--sweeps 15]
        [--threads 2] [--methods cg cholesky implicit cg-cuda cholesky-cuda] [--seeds 42]
        [--implicit-alpha 5] [--implicit-reg 0.1] [--mapped]
        [--alpha0 1.0] [--reg 0.001] [--nu 1.0] [--cg-steps 3] [--no-eval] [--rounds 1]
        [--check-mapping]

Needs implicit (`pip install implicit`, or `pip install -e ".[bench]"`; CPU wheels for CPython
3.10-3.12 on Linux x86-64).

What runs. Each method fits `--sweeps` sweeps (users given items, then items given users) from its
own random start, for every grid point (the product of the hyper-parameter lists) x dim x seed:
- `cg`: `IALS(solver="cg", cg_steps)`, `cg_steps` conjugate-gradient steps per row from the
  current factors (implicit's algorithm, vectorised over all rows with sparse products);
- `cholesky`: `IALS(solver="cholesky")`, exact half-steps (batched per-row Gram matrices);
- `cg-cuda`, `cholesky-cuda`: the same on the GPU (timed up to `torch.cuda.synchronize()`);
- `implicit`: `implicit.cpu.als.AlternatingLeastSquares(factors=dim, alpha, regularization,
  use_cg=True, iterations=S)` (its default: 3 CG steps) on the same 0/1 training matrix.
The timed part is exactly the sweep: `IALSNet.sweep` for lit_recs; for implicit the seconds its
`fit` callback reports per iteration (both half-step solves, nothing else: the training loss is
not computed). Printed: the median and min seconds over sweeps 2..S (the first one warms up).
`--rounds R` fits every run R times in turn (timing only after the first) and prints the median,
min and max over all of them: on a shared machine other jobs come and go, and interleaving spreads
them over both libraries. The C heap keeps freed blocks, as under `lit-recs fit` (HeapPolicy).

Threads: `torch.set_num_threads(--threads)`; implicit's `num_threads=--threads`; numpy's BLAS
(used by implicit only for its D x D Gram matrix) limited to 1 thread during implicit's fits,
as implicit asks (threadpoolctl). The load average of the machine is printed before and after each
row: on a shared machine other jobs slow both sides.

Evaluation (identical for both): the factors go into an `IALS` module's `net.users` / `net.items`
buffers and the framework's own `Trainer.validate` / `Trainer.test` run: full-catalogue ranking,
items seen in training (and validation, at test time) masked, NDCG@10 / HR@10. Grid picks are made
on validation NDCG@10 per method and dim; the test figures of the pick are reported.

Hyper-parameters, implicit -> this objective. implicit 0.7 scales the 0/1 matrix by `alpha`, so an
observed pair has confidence c = alpha (not Hu et al.'s 1 + alpha r; implicit < 0.7 took c from the
matrix the user passed), and minimises

    sum_{observed} c (1 - s_ui)^2 + sum_{unobserved} s_ui^2 + reg (|X|^2 + |Y|^2).

For c > 1 this equals (c - 1) [sum_obs (s - t)^2 + 1/(c - 1) sum_all s^2] + reg (|X|^2 + |Y|^2)
+ const with t = c / (c - 1). Rescaling the factors by sqrt(t) (scores by t, rankings unchanged) and
dividing by (c - 1) t^2 gives lit_recs' objective with

    alpha0 = 1 / (alpha - 1),   reg_lit = reg / alpha,   nu = 0  (plain L2),

the minimisers related by X_implicit = sqrt(t) X_lit (same for Y). Hu et al.'s c = 1 + alpha
gives alpha0 = 1 / alpha, reg_lit = reg / (1 + alpha). alpha = 1 (implicit's default) is outside
the family: it fits the whole 0/1 matrix with equal weights, the limit alpha0 -> infinity.
`--check-mapping` verifies the map: from the same start, one exact sweep of implicit
(use_cg=False) and of lit_recs (cholesky, mapped hyper-parameters) give the same factors up to
the scale sqrt(t). `--mapped` adds lit_recs CG runs at the mapped grid points (same objectives
as implicit's grid) to those at its own (`--alpha0 --reg --nu`, Rendle et al.'s frequency-scaled
L2 when nu = 1).

Data: `--data ml-100k` is the `loo` split of ML-100K (`conf/data/ml-100k-loo.yaml`);
`--data synthetic` is `lit_recs.data.datasets.Synthetic` (seed 0), `loo`, at `--shape small`
(20,000 users x 26,744 items x 100 interactions per user: 2.0M, the ML-20M catalogue with a
seventh of its users) or `--shape ml20m` (138,493 x 26,744 x 144.4: 20M interactions, the ML-20M
shape of PROTOCOLS.md; heavy on two cores: time a few sweeps with `--no-eval`).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import sys
import time
import warnings

import lightning
import numpy as np
import torch

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import IALS
from lit_recs.runtime import hold_freed_memory

try:
    import implicit
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
except ImportError:  # depends on the environment
    sys.exit('experiments/benchmarks/ials.py needs implicit: pip install implicit '
             '(or pip install -e ".[bench]")')

SHAPES = {"small": (20_000, 26_744, 100.0), "ml20m": (138_493, 26_744, 144.4)}


def load(args: argparse.Namespace) -> tuple[NegativeSamplingDataModule, str]:
    if args.data == "synthetic":
        users, items, per_user = SHAPES[args.shape]
        source = Synthetic(num_users=users, num_items=items, interactions_per_user=per_user, seed=0)
        dm = NegativeSamplingDataModule(dataset=source, split="loo", eval_batch_size=1024,
                                        sampled_negatives=0)
        name = f"synthetic {users} users x {items} items x {per_user} per user, loo"
    else:
        dm = NegativeSamplingDataModule(dataset="ml-100k", split="loo", seed=42)
        name = "ml-100k, loo"
    dm.setup("fit")
    return dm, name


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def evaluate(model: IALS, dm: NegativeSamplingDataModule) -> dict[str, float]:
    trainer = lightning.Trainer(logger=False, enable_progress_bar=False, accelerator="cpu",
                                use_distributed_sampler=False, enable_model_summary=False,
                                enable_checkpointing=False)
    val = trainer.validate(model, datamodule=dm, verbose=False)[0]
    test = trainer.test(model, datamodule=dm, verbose=False)[0]
    return {"val_ndcg": float(val["val/ndcg@10"]), "ndcg": float(test["test/ndcg@10"]),
            "hr": float(test["test/hr@10"])}


def lit_model(dm: NegativeSamplingDataModule, dim: int, solver: str, alpha0: float, reg: float,
              nu: float, cg_steps: int, seed: int) -> IALS:
    torch.manual_seed(seed)
    model = IALS(dm.num_users, dm.num_items, dim=dim, alpha0=alpha0, reg=reg, nu=nu,
                 solver=solver, cg_steps=cg_steps)
    model.attach_data(dm.model_inputs("fit"))
    return model


def fit_lit(model: IALS, sweeps: int, device: str) -> list[float]:
    """Sweeps on `device` (the model and its training matrix moved there, as `fit` does); the
    model comes back on the CPU."""
    model.to(device)
    model.on_fit_start()  # moves the training matrix to the model's device
    seconds = []
    with torch.no_grad():
        for _ in range(sweeps):
            t0 = time.perf_counter()
            model.sweep()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
    model.cpu()
    return seconds


def fit_implicit(dm: NegativeSamplingDataModule, dim: int, alpha: float, reg: float, sweeps: int,
                 threads: int, seed: int, use_cg: bool = True
                 ) -> tuple[AlternatingLeastSquares, list[float]]:
    csr = dm.train.binary_csr().astype(np.float32)
    als = AlternatingLeastSquares(factors=dim, regularization=reg, alpha=alpha, iterations=sweeps,
                                  use_cg=use_cg, num_threads=threads, random_state=seed)
    seconds: list[float] = []
    with threadpool_limits(limits=1, user_api="blas"):
        als.fit(csr, show_progress=False, callback=lambda it, elapsed, loss: seconds.append(elapsed))
    return als, seconds


def implicit_as_lit(als: AlternatingLeastSquares, dm: NegativeSamplingDataModule) -> IALS:
    model = IALS(dm.num_users, dm.num_items, dim=als.factors)
    model.net.users.copy_(torch.from_numpy(np.asarray(als.user_factors)))
    model.net.items.copy_(torch.from_numpy(np.asarray(als.item_factors)))
    return model


def mapped(alpha: float, reg: float) -> tuple[float, float]:
    """implicit's (alpha, regularization) -> this objective's (alpha0, reg) with nu = 0."""
    return 1.0 / (alpha - 1.0), reg / alpha


def check_mapping(dm: NegativeSamplingDataModule, dim: int, alpha: float, reg: float,
                  threads: int) -> None:
    """One exact sweep each from the same start: implicit (Cholesky) and lit_recs (cholesky, the
    mapped hyper-parameters, nu = 0) give the same factors up to the scale sqrt(t)."""
    scale = (alpha / (alpha - 1.0)) ** 0.5  # sqrt(t)
    alpha0, reg_lit = mapped(alpha, reg)
    gen = np.random.default_rng(0)
    users0 = (gen.random((dm.num_users, dim), dtype=np.float32) * 0.01)
    items0 = (gen.random((dm.num_items, dim), dtype=np.float32) * 0.01)
    als = AlternatingLeastSquares(factors=dim, regularization=reg, alpha=alpha, iterations=1,
                                  use_cg=False, num_threads=threads)
    als.user_factors, als.item_factors = users0.copy(), items0.copy()
    with threadpool_limits(limits=1, user_api="blas"):
        als.fit(dm.train.binary_csr().astype(np.float32), show_progress=False)
    model = IALS(dm.num_users, dm.num_items, dim=dim, alpha0=alpha0, reg=reg_lit, nu=0.0,
                 solver="cholesky")
    model.attach_data(dm.model_inputs("fit"))
    model.net.users.copy_(torch.from_numpy(users0) / scale)
    model.net.items.copy_(torch.from_numpy(items0) / scale)
    with torch.no_grad():
        model.sweep()
    for name, ours, theirs in (("users", model.net.users, als.user_factors),
                               ("items", model.net.items, als.item_factors)):
        theirs = torch.from_numpy(np.asarray(theirs))
        err = float((ours * scale - theirs).norm() / theirs.norm())
        print(f"mapping check, dim {dim}, implicit alpha {alpha} reg {reg} -> alpha0 {alpha0:.4g} "
              f"reg {reg_lit:.4g} nu 0: {name} relative difference {err:.1e}")


def fit(dm: NegativeSamplingDataModule, method: str, dim: int, hp: dict, seed: int,
        args: argparse.Namespace) -> tuple[IALS, list[float]]:
    """One run: the fitted factors (in an IALS module) and the seconds of each sweep."""
    if method == "implicit":
        als, seconds = fit_implicit(dm, dim, hp["alpha"], hp["reg"], args.sweeps, args.threads, seed)
        return implicit_as_lit(als, dm), seconds
    solver, _, device = method.partition("-")
    model = lit_model(dm, dim, solver, hp["alpha0"], hp["reg"], hp["nu"], args.cg_steps, seed)
    return model, fit_lit(model, args.sweeps, device or "cpu")


def summary(s: list[float]) -> tuple[float, float]:
    rest = s[1:] if len(s) > 1 else s
    return float(np.median(rest)), float(min(rest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=("ml-100k", "synthetic"), default="ml-100k")
    ap.add_argument("--shape", choices=tuple(SHAPES), default="small")
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--sweeps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", nargs="+",
                    choices=("cg", "cholesky", "implicit", "cg-cuda", "cholesky-cuda"),
                    default=["cg", "cholesky", "implicit"],
                    help="-cuda: the lit_recs solver on the GPU (evaluation stays on the CPU)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42])
    ap.add_argument("--implicit-alpha", type=float, nargs="+", default=[5.0])
    ap.add_argument("--implicit-reg", type=float, nargs="+", default=[0.1])
    ap.add_argument("--mapped", action="store_true",
                    help="also run lit_recs CG at implicit's grid points, mapped (nu = 0)")
    ap.add_argument("--alpha0", type=float, nargs="+", default=[1.0])
    ap.add_argument("--reg", type=float, nargs="+", default=[0.001])
    ap.add_argument("--nu", type=float, nargs="+", default=[1.0])
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument("--no-eval", action="store_true", help="time the sweeps only")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat all fits this many times in turn and time them all (noisy hosts)")
    ap.add_argument("--check-mapping", action="store_true")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|optimizer|training_step|sparse|Sparse"
                                              "|OpenBLAS|threadpool).*")
    torch.set_num_threads(args.threads)
    heap = hold_freed_memory()  # as `lit-recs fit` does (HeapPolicy): no page faults per sweep

    dm, name = load(args)
    print(f"{name}: {dm.num_users} users x {dm.num_items} items, "
          f"{dm.train.binary_csr().nnz:,} training interactions")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), implicit "
          f"{implicit.__version__} (num_threads {args.threads}, numpy BLAS 1 thread), "
          f"{platform.machine()} {os.cpu_count()} cores; OMP/MKL/OPENBLAS_NUM_THREADS "
          f"{os.environ.get('OMP_NUM_THREADS')}/{os.environ.get('MKL_NUM_THREADS')}/"
          f"{os.environ.get('OPENBLAS_NUM_THREADS')}; {args.sweeps} sweeps per run; C heap holds freed "
          f"blocks (lit_recs.runtime.hold_freed_memory, as lit-recs fit): {heap}")
    if args.check_mapping:
        for dim in args.dims:
            check_mapping(dm, dim, args.implicit_alpha[0], args.implicit_reg[0], args.threads)

    runs = []  # (method, dim, hyper-parameters, seed)
    for method in args.methods:
        for dim, seed in itertools.product(args.dims, args.seeds):
            if method == "implicit":
                for alpha, reg in itertools.product(args.implicit_alpha, args.implicit_reg):
                    runs.append((method, dim, {"alpha": alpha, "reg": reg}, seed))
                continue
            for alpha0, reg, nu in itertools.product(args.alpha0, args.reg, args.nu):
                runs.append((method, dim, {"alpha0": alpha0, "reg": reg, "nu": nu}, seed))
            if args.mapped and method.startswith("cg"):
                for alpha, reg in itertools.product(args.implicit_alpha, args.implicit_reg):
                    if alpha <= 1.0:  # outside the family (see the docstring)
                        continue
                    alpha0, reg_lit = mapped(alpha, reg)
                    runs.append((method, dim, {"alpha0": round(alpha0, 6), "reg": round(reg_lit, 6),
                                               "nu": 0.0, "from": f"implicit {alpha}/{reg}"}, seed))

    print("| method | dim | hyper-parameters | seed | s/sweep median (min) | val NDCG@10 | "
          "test NDCG@10 | test HR@10 | load before/after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    results, timings = [], []
    for method, dim, hp, seed in runs:
        before = load_avg()
        model, seconds = fit(dm, method, dim, hp, seed, args)
        after = load_avg()
        timings.append(seconds[1:])
        med, low = summary(seconds)
        m = {} if args.no_eval else evaluate(model, dm)
        results.append((method, dim, hp, seed, med, m))
        hps = ", ".join(f"{k} {v}" for k, v in hp.items())
        fig = " | ".join(f"{m[k]:.4f}" if m else "-" for k in ("val_ndcg", "ndcg", "hr"))
        print(f"| {method} | {dim} | {hps} | {seed} | {med:.4f} ({low:.4f}) | {fig} | "
              f"{before} / {after} |", flush=True)

    if args.rounds > 1:  # the same fits again, in turn, for the timings only
        for _ in range(args.rounds - 1):
            for k, (method, dim, hp, seed) in enumerate(runs):
                timings[k] += fit(dm, method, dim, hp, seed, args)[1][1:]
        print(f"\nSeconds per sweep over {args.rounds} rounds (the runs above in turn, each "
              f"{args.sweeps} sweeps; sweeps 2..S of each), load now {load_avg()}:")
        print("| method | dim | hyper-parameters | median | min | max |")
        print("| --- | --- | --- | --- | --- | --- |")
        for (method, dim, hp, _), t in zip(runs, timings):
            hps = ", ".join(f"{k} {v}" for k, v in hp.items())
            print(f"| {method} | {dim} | {hps} | {np.median(t):.4f} | {min(t):.4f} | {max(t):.4f} |")
    if args.no_eval:
        return
    print("\nPicks on validation NDCG@10 (mean over seeds; ± the sd over seeds), per method and dim:")
    print("| method | dim | pick | s/sweep | val NDCG@10 | test NDCG@10 | test HR@10 | "
          "test NDCG@10 over the grid |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    groups: dict[tuple, list] = {}
    for method, dim, hp, _seed, med, m in results:
        kind = "mapped" if "from" in hp else method
        groups.setdefault((kind, dim), []).append((tuple(hp.items()), med, m))
    for (kind, dim), rows in groups.items():
        by_hp: dict[tuple, list] = {}
        for hp, med, m in rows:
            by_hp.setdefault(hp, []).append((med, m))
        means = {}
        for hp, v in by_hp.items():
            ndcg = [m["ndcg"] for _, m in v]
            means[hp] = {k: float(np.mean([m[k] for _, m in v])) for k in ("val_ndcg", "ndcg", "hr")}
            means[hp].update(s=float(np.median([s for s, _ in v])), n=len(v),
                             sd=float(np.std(ndcg, ddof=1)) if len(v) > 1 else 0.0)
        best = max(means, key=lambda hp: means[hp]["val_ndcg"])
        b = means[best]
        spread = [x["ndcg"] for x in means.values()]
        sd = f" ± {b['sd']:.4f} ({b['n']} seeds)" if b["n"] > 1 else ""
        print(f"| {kind} | {dim} | {', '.join(f'{k} {v}' for k, v in best)} | {b['s']:.4f} | "
              f"{b['val_ndcg']:.4f} | {b['ndcg']:.4f}{sd} | {b['hr']:.4f} | "
              f"{min(spread):.4f}-{max(spread):.4f} |")


if __name__ == "__main__":
    main()
