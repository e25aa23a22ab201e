"""Time the ML-20M-sized synthetic log and its binary CSR; print wall times and peak RSS.

python experiments/benchmarks/synthetic_scale.py [--users 138493 --items 26744 --per-user 144.4]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np

from lit_recs.data.datasets.synthetic import Synthetic


def peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=138_493)
    ap.add_argument("--items", type=int, default=26_744)
    ap.add_argument("--per-user", type=float, default=144.4)  # ~20.0M interactions
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    print(f"baseline peak RSS {peak_rss_mib():.0f} MiB")
    source = Synthetic(args.users, args.items, args.per_user, seed=args.seed)
    t0 = time.perf_counter()
    inter = source.load()
    t1 = time.perf_counter()
    out_mib = sum(a.nbytes for a in (inter.users, inter.items, inter.ratings, inter.timestamps))
    print(inter.summary())
    print(
        f"generate: {t1 - t0:.1f} s, peak RSS {peak_rss_mib():.0f} MiB "
        f"(output arrays {out_mib / 2**20:.0f} MiB)"
    )
    t2 = time.perf_counter()
    mat = inter.binary_csr()
    t3 = time.perf_counter()
    print(f"binary_csr: {t3 - t2:.1f} s, nnz {mat.nnz:,}, peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
