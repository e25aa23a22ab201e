"""SLIM: lit_recs' FISTA fit vs the reference per-column scikit-learn ElasticNet, same objective.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/slim.py [--split random|loo]
        [--synthetic-items 10000 --synthetic-users 20000] [--device cpu|cuda] [--columns N]
        [--alpha 0.2 --l1-ratio 0.02 --max-iter 100 --tol 1e-4] [--lit-max-iter M --lit-tol T]
        [--repeats R]

Needs scikit-learn: `pip install scikit-learn` (or `pip install -e ".[bench]"`).

Objective. lit_recs.models.SLIM minimises, with A the 0/1 training matrix [n users, I items],

    f(W) = 1/2 ||A - A W||_F^2 + l2/2 ||W||_F^2 + l1 ||W||_1,   W >= 0, diag(W) = 0.

scikit-learn documents ElasticNet's objective as

    1/(2 n) ||y - X w||^2 + alpha * l1_ratio ||w||_1 + 0.5 * alpha * (1 - l1_ratio) ||w||^2

(n = n_samples = rows of X). With y = A[:, j], X = A with column j zeroed (so w_j only meets the
penalty and is 0 at the optimum: the diag(W) = 0 constraint) and positive=True, multiplying by n
(which does not move the minimiser) gives column j of f with

    l1 = n * alpha * l1_ratio,   l2 = n * alpha * (1 - l1_ratio),   n = number of users (rows of A)

and the columns are independent, so the per-column fits minimise f. RecBole's defaults (alpha 0.2,
l1_ratio 0.02) on ML-100K (n = 943): l1 = 3.77, l2 = 184.8.

Reference (scikit-learn, CPU, one process): as RecBole's SLIMElastic and the paper, one
ElasticNet(alpha, l1_ratio, positive=True, fit_intercept=False, copy_X=False, precompute=False,
selection="random", random_state=0, max_iter, tol) fit per item column, the target column zeroed in
X while it is fitted (then restored), ConvergenceWarning silenced. X is a float64 CSC matrix whose
column is zeroed in place (its stored values set to 0; RecBole goes through a LIL matrix, which
sklearn converts on every fit: slower). Choices measured on ML-100K (100 columns, this machine):
sparse CSC 2.3-4.4 ms per column; dense X 34-53 ms (precompute=False) and 83-85 ms (precompute=True,
a fresh X^T X per fit); for sparse X scikit-learn ignores `precompute` (forces False), so
precompute=False is stated and is the fastest setting. selection="random" needs half the epochs of
"cyclic" (13.7 vs 27.6 per column) and is RecBole's choice. Stopping rules differ: sklearn stops a
column when its coordinate updates are small and its duality gap <= tol * ||y||^2 / n; FISTA stops
the whole block when no entry moves by more than tol * max|W| in a proximal step (an earlier
version: when f decreases by less than tol, relative). The same --max-iter / --tol go to both by
default; --lit-max-iter / --lit-tol set FISTA's alone (SLIM's own defaults are 200 / 3e-3). Hence
f(W) is printed for both: it says how far each stopping rule left its W from the optimum.

lit_recs: `SLIM(l1, l2, max_iter, tol, solver).fit_interactions(dm.train)`, the timed part being
exactly that call (Gram matrix A^T A + FISTA, W stored sparse), torch threads at torch's default.
`--solver auto` (SLIM's default) picks the dense-Gram FISTA on dense logs such as ML-100K and the
screened per-column FISTA (lit_recs.nn.slim_screened) on sparse catalogues; `--device cuda` puts
the solver on the GPU (sklearn stays on the CPU); the CUDA context is warmed first.

Evaluation: each W goes into a SLIM module's `layer.weight` and the framework's own test loop runs
(`lightning.Trainer(...).test(model, datamodule=dm)`, CPU), identical for both: full-catalogue
ranking with seen items masked, test NDCG@10 and HR@10. f(W) is `lit_recs.nn.slim.slim_objective`
on the float64 Gram matrix.

`--lil-loop` also times the loop exactly as RecBole's SLIMElastic writes it (float32 LIL X, column
zeroed by assignment, precompute=True: scikit-learn converts X on every fit), which is what the
reference system's 11.7 s fit on ML-100K measures; only its time is printed (same objective).

`--columns N` fits sklearn on a random subset S of N columns only and extrapolates its time linearly
to all I columns (time * I / N, printed as "extrapolated"); its W is then incomplete, so its ranking
metrics are not computed, and f is compared on the columns S for both methods (f_S).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
import warnings

import lightning
import numpy as np
import scipy
import scipy.sparse as sp
import torch

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import SLIM
from lit_recs.models.ease import gram
from lit_recs.nn.slim import slim_objective

try:
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import ElasticNet
except ImportError:  # depends on the environment
    sys.exit('experiments/benchmarks/slim.py needs scikit-learn: pip install scikit-learn '
             '(or pip install -e ".[bench]")')


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def load(args: argparse.Namespace) -> tuple[NegativeSamplingDataModule, str]:
    if args.synthetic_items:
        source = Synthetic(num_users=args.synthetic_users, num_items=args.synthetic_items,
                           interactions_per_user=args.synthetic_per_user, seed=args.seed)
        dm = NegativeSamplingDataModule(dataset=source, split=args.split)
        name = f"synthetic {args.synthetic_users} users x {args.synthetic_items} items"
    else:
        dm = NegativeSamplingDataModule(dataset="ml-100k", split=args.split)
        name = "ml-100k"
    protocol = "random811" if args.split == "random" else args.split
    return dm, f"{name}, {protocol}"


def fit_sklearn(a: sp.csr_matrix, columns: np.ndarray, args: argparse.Namespace
                ) -> tuple[sp.csc_matrix, float]:
    """Per-column ElasticNet on the columns given. Returns W [I, I] (other columns 0) and seconds
    (the best of args.repeats fits)."""
    best, w = float("inf"), None
    for _ in range(args.repeats):
        w_r, seconds = _fit_sklearn_once(a, columns, args)
        if seconds < best:
            best, w = seconds, w_r
    return w, best


def _fit_sklearn_once(a: sp.csr_matrix, columns: np.ndarray, args: argparse.Namespace
                      ) -> tuple[sp.csc_matrix, float]:
    x = sp.csc_matrix(a, dtype=np.float64)  # [U, I]
    x.sort_indices()
    n_users, n_items = x.shape
    model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, positive=True, fit_intercept=False,
                       copy_X=False, precompute=False, selection="random", random_state=0,
                       max_iter=args.max_iter, tol=args.tol)
    rows, cols, vals = [], [], []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j in columns:
            lo, hi = x.indptr[j], x.indptr[j + 1]
            y = np.zeros(n_users)  # [U] the target column
            y[x.indices[lo:hi]] = x.data[lo:hi]
            saved = x.data[lo:hi].copy()
            x.data[lo:hi] = 0.0  # hide the target item from its own regression
            model.fit(x, y)
            x.data[lo:hi] = saved
            nz = np.flatnonzero(model.coef_)
            rows.append(nz)
            cols.append(np.full(len(nz), j))
            vals.append(model.coef_[nz])
    seconds = time.perf_counter() - t0
    w = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(n_items, n_items))
    return w, seconds


def fit_sklearn_lil(a: sp.csr_matrix, columns: np.ndarray, args: argparse.Namespace) -> float:
    """Seconds of the per-column loop as RecBole's SLIMElastic writes it (X a float32 LIL matrix
    whose column is zeroed and restored by assignment, precompute=True, which scikit-learn converts
    on every fit); only its time is kept, its objective is the same as `fit_sklearn`'s."""
    x = sp.lil_matrix(a, dtype=np.float32)  # [U, I]
    model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, positive=True, fit_intercept=False,
                       copy_X=False, precompute=True, selection="random", random_state=0,
                       max_iter=args.max_iter, tol=args.tol)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for j in columns:
            target = x[:, j]
            x[:, j] = 0
            model.fit(x, np.asarray(target.todense()).ravel())
            x[:, j] = target
    return time.perf_counter() - t0


def fit_lit_recs(dm: NegativeSamplingDataModule, l1: float, l2: float, args: argparse.Namespace
                 ) -> tuple[torch.Tensor, float, list[int]]:
    """lit_recs' SLIM fit (Gram + FISTA) on args.device. Returns W [I, I] on the CPU and seconds."""
    best, w, steps = float("inf"), None, []
    max_iter = args.lit_max_iter or args.max_iter
    tol = args.tol if args.lit_tol is None else args.lit_tol
    for _ in range(args.repeats):
        model = SLIM(dm.num_users, dm.num_items, l1=l1, l2=l2, max_iter=max_iter,
                     tol=tol, solver=args.solver).to(args.device)
        sync(args.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            model.fit_interactions(dm.train)
        sync(args.device)
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, w, steps = seconds, model.dense_weight().cpu(), model.fit_steps
            args.fitted_solver = model.fitted_solver
        del model
    return w, best, steps


def evaluate(dm: NegativeSamplingDataModule, w: torch.Tensor, l1: float, l2: float
             ) -> tuple[float, float]:
    """Test NDCG@10 and HR@10 of W through the framework's own test loop (identical for both)."""
    model = SLIM(dm.num_users, dm.num_items, l1=l1, l2=l2)
    model.weight = w.to_sparse().coalesce()
    trainer = lightning.Trainer(logger=False, enable_progress_bar=False,
                                use_distributed_sampler=False, accelerator="cpu",
                                enable_model_summary=False)
    out = trainer.test(model, datamodule=dm, verbose=False)[0]
    return float(out["test/ndcg@10"]), float(out["test/hr@10"])


def objective(g: torch.Tensor, w: torch.Tensor, l1: float, l2: float, columns: np.ndarray | None
              ) -> float:
    """f(W) (columns None) or f_S = the terms of the columns S, in float64 on g's device."""
    if columns is None:
        return slim_objective(g, w.to(g.device, torch.float64), l2, l1)
    cols = torch.as_tensor(columns, device=g.device)
    return slim_objective(g, w[:, columns].to(g.device, torch.float64), l2, l1, columns=cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=("random", "loo"), default="random")
    ap.add_argument("--synthetic-items", type=int, default=0, help="0: ML-100K")
    ap.add_argument("--synthetic-users", type=int, default=20_000)
    ap.add_argument("--synthetic-per-user", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic log and of --columns")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="lit_recs side only")
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--l1-ratio", type=float, default=0.02)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--columns", type=int, default=0,
                    help="fit sklearn on N random columns and extrapolate its time (0: all)")
    ap.add_argument("--solver", choices=("auto", "gram", "screened"), default="auto",
                    help="SLIM's solver (auto: screened when its work is below 4 I^2)")
    ap.add_argument("--lit-max-iter", type=int, default=0, help="FISTA's max_iter (0: --max-iter)")
    ap.add_argument("--lit-tol", type=float, default=None, help="FISTA's tol (default: --tol)")
    ap.add_argument("--lil-loop", action="store_true",
                    help="also time the per-column loop as RecBole writes it (LIL X, precompute)")
    ap.add_argument("--repeats", type=int, default=1, help="fits timed per method; the best is kept")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners from Trainer
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning on recent torch
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device visible")

    load_before = os.getloadavg()
    dm, name = load(args)
    train = dm.train
    a = train.binary_csr()  # [U, I]
    n_users, n_items = a.shape
    l1 = n_users * args.alpha * args.l1_ratio
    l2 = n_users * args.alpha * (1.0 - args.l1_ratio)
    print(f"{name}: {n_users} users, {n_items} items, {a.nnz} training interactions")
    print(f"alpha {args.alpha}, l1_ratio {args.l1_ratio} -> l1 = n*alpha*l1_ratio = {l1:.4g}, "
          f"l2 = n*alpha*(1-l1_ratio) = {l2:.4g} (n = {n_users}); sklearn max_iter "
          f"{args.max_iter}, tol {args.tol}; FISTA max_iter {args.lit_max_iter or args.max_iter}, "
          f"tol {args.tol if args.lit_tol is None else args.lit_tol}; best of {args.repeats}")

    if args.device == "cuda":  # CUDA context and kernels warmed before timing
        warm = torch.ones(256, 256, device="cuda")
        (warm @ warm).sum().item()

    w_lit, t_lit, steps = fit_lit_recs(dm, l1, l2, args)
    print(f"lit_recs SLIM ({args.device}, {args.fitted_solver} solver): {t_lit:.2f} s, FISTA steps "
          f"per block: max {max(steps, default=0)}, {len(steps)} blocks")

    subset = args.columns and args.columns < n_items
    rng = np.random.default_rng(args.seed)
    columns = (np.sort(rng.choice(n_items, args.columns, replace=False)) if subset
               else np.arange(n_items))
    w_sk, t_sk = fit_sklearn(a, columns, args)
    t_sk_all = t_sk * n_items / len(columns)
    print(f"sklearn ElasticNet: {t_sk:.2f} s for {len(columns)} columns"
          + (f" -> {t_sk_all:.1f} s extrapolated to {n_items}" if subset else ""))
    t_lil_all = None
    if args.lil_loop:
        t_lil = fit_sklearn_lil(a, columns, args)
        t_lil_all = t_lil * n_items / len(columns)
        print(f"sklearn ElasticNet, RecBole's LIL loop: {t_lil:.2f} s for {len(columns)} columns"
              + (f" -> {t_lil_all:.1f} s extrapolated to {n_items}" if subset else ""))
    w_sk_dense = torch.as_tensor(w_sk.toarray(), dtype=torch.float32)  # [I, I]
    del w_sk

    g = torch.as_tensor(gram(train), device=args.device)  # [I, I] float64
    f_cols = columns if subset else None
    f_sk = objective(g, w_sk_dense, l1, l2, f_cols)
    f_lit = objective(g, w_lit, l1, l2, f_cols)
    f_lit_all = objective(g, w_lit, l1, l2, None) if subset else f_lit
    del g

    m_lit = evaluate(dm, w_lit, l1, l2)
    m_sk = evaluate(dm, w_sk_dense, l1, l2) if not subset else (float("nan"), float("nan"))
    nnz_sk = float((w_sk_dense[:, columns] > 0).sum()) / len(columns)
    nnz_lit = float((w_lit > 0).sum()) / n_items
    nnz_lit_s = float((w_lit[:, columns] > 0).sum()) / len(columns)
    load_after = os.getloadavg()

    f_name = f"f_S(W), {len(columns)} cols" if subset else "f(W)"
    sk_time = f"{t_sk_all:.2f} (extrap.)" if subset else f"{t_sk:.2f}"
    print()
    print(f"| method | fit wall time (s) | NDCG@10 | HR@10 | nnz per item | {f_name} |")
    print("|---|---|---|---|---|---|")
    sk_ndcg = "n/a" if subset else f"{m_sk[0]:.4f}"
    sk_hr = "n/a" if subset else f"{m_sk[1]:.4f}"
    sk_label = "sklearn ElasticNet per column (CPU, 1 process)"
    print(f"| {sk_label} | {sk_time} | {sk_ndcg} | {sk_hr} | {nnz_sk:.1f} | {f_sk:.6g} |")
    if t_lil_all is not None:
        lil_time = f"{t_lil_all:.2f}" + (" (extrap.)" if subset else "")
        print(f"| same, RecBole's loop (LIL X, precompute=True) | {lil_time} | same objective "
              "| | | |")
    lit_label = f"lit_recs SLIM, FISTA {args.fitted_solver} ({args.device})"
    lit_nnz = f"{nnz_lit:.1f}" + (f" ({nnz_lit_s:.1f} on S)" if subset else "")
    print(f"| {lit_label} | {t_lit:.2f} | {m_lit[0]:.4f} | {m_lit[1]:.4f} | {lit_nnz} "
          f"| {f_lit:.6g} |")
    print()
    ratio = t_sk_all / t_lit
    print(f"speed ratio sklearn / lit_recs: {ratio:.1f}x"
          + (" (sklearn time extrapolated from "
             f"{len(columns)} of {n_items} columns: {t_sk:.2f} s measured)" if subset else ""))
    if t_lil_all is not None:
        print(f"speed ratio RecBole's loop / lit_recs: {t_lil_all / t_lit:.1f}x")
    print(f"relative objective gap (f_lit - f_sk) / f_sk: {(f_lit - f_sk) / f_sk:+.2e}")
    if subset:
        print(f"lit_recs f(W) on all {n_items} columns: {f_lit_all:.6g}")
    print()
    gpu = f", GPU {torch.cuda.get_device_name()}" if args.device == "cuda" else ""
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch threads "
          f"{torch.get_num_threads()}{gpu}; load average (1/5/15 min) before "
          f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.2f}' for x in load_after)}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, "
          f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, "
          f"scipy {scipy.__version__}, "
          f"lightning {lightning.__version__}")


if __name__ == "__main__":
    main()
