"""Loading at scale: a 20M-row parquet file -> a split `Interactions`, timed stage by stage.

    python experiments/benchmarks/load.py [--shape ml20m|longtail] [--cache /tmp/lit_recs_scale]
        [--stages read setup] [--sampled-negatives 0] [--repeat 1]

Data (generated once with vectorised numpy, then cached as `<cache>/<shape>.parquet`; columns
user_id, item_id, rating (float64), timestamp (int64 seconds), ids int64, as pandas writes them):
- `ml20m`: ML-20M's shape: 138,493 users (ids 1..U, each with >= 20 events, a log-normal
  tail capped at 9,254), 26,744 items (ids spread over 1..131,262 as MovieLens' are, so the id
  map is a lookup table), 20,000,000 rows; items drawn Zipf-like (p ~ 1 / (rank + 10)^1.1), so
  the popular ones repeat within a user: repeated (user, item) pairs occur and dedup removes
  them; rows grouped by user (as ratings.csv is), timestamps uniform over ML-20M's 1995-2015.
- `longtail`: 1,000,000 users and 1,000,000 items, each with >= 1 event, 20,000,000 rows;
  users' lengths Pareto-tailed (most have a handful of events), items Zipf (p ~ 1 / rank) over
  the rest; ids are random 62-bit integers (hashed ids: no lookup table, the id map joins on
  them); rows in time order (an event log).

Measured, each in a fresh Python process, so that its peak RSS is its own. On Linux a child's
`ru_maxrss` starts at its parent's RSS at the fork, so the parent here imports nothing heavy and
holds no data (it is ~30 MiB); the child's VmHWM (/proc/self/status, never inherited) is
printed beside it as a check.
- `read`: `lit_recs.data.datasets.resolve(path).load()`: parquet -> `Interactions` (id maps,
  checks of every value);
- `setup`: what `lit-recs fit` does with `NegativeSamplingDataModule(dataset=path, split="loo",
  sampled_negatives=N)` before its first batch, step by step: `prepare_data`; the log (`data`:
  the read above, then the preprocessing, dedup `first`); the split (`splits`); `setup("fit")`
  (option limits: the training matrix CSR; the data summary with its quantiles and
  fingerprints); `train_dataloader` (the negative sampler's keys); `val_dataloader` (the
  evaluation dataset: train CSR, validation CSR, and with N > 0 the sampled protocol's
  negatives); and `test_dataloader`, which `fit` builds only for its test after fit.
`to split` adds up the steps up to the split; `total` all of them. The process's peak RSS is read
after each step (it only grows). Torch runs with 1 thread (`torch.set_num_threads(1)`); polars
uses its own thread pool (its size is printed). The fingerprints of the log and of the three
parts are printed: equal fingerprints mean bit-identical data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = 20_000_000
SHAPES = {  # users, items
    "ml20m": (138_493, 26_744),
    "longtail": (1_000_000, 1_000_000),
}
ML20M_TIME = (789_652_009, 1_427_784_002)  # ML-20M's first and last timestamp
CHUNK = 2_000_000  # rows drawn per step (bounds the generator's memory)


def peak_rss_mib() -> float:
    """This process's peak RSS (ru_maxrss; on Linux it starts at the parent's RSS at the fork)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def high_water_mib() -> float | None:
    """VmHWM (Linux): the peak RSS of this program's own memory, nothing inherited."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib[0]) / 2**10 if kib else None


# ------------------------------------------------------------------ data
def _fill_to(counts: np.ndarray, total: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """counts [U] raised one by one at random users below `cap` until they sum to `total`."""
    while (short := total - int(counts.sum())) > 0:
        room = np.flatnonzero(counts < cap)
        np.add.at(counts, rng.choice(room, size=min(short, len(room))), 1)
        counts = np.minimum(counts, cap)
    return counts


def _zipf_draws(n: int, num: int, exponent: float, offset: float, rng: np.random.Generator
                ) -> np.ndarray:
    """n draws [n] int64 of ranks 0..num-1 with p(rank) ~ 1 / (rank + offset) ** exponent."""
    cdf = np.cumsum(1.0 / (np.arange(num) + offset) ** exponent)  # [num]
    cdf /= cdf[-1]
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        out[start:stop] = np.searchsorted(cdf, rng.random(stop - start), side="right")
    return np.minimum(out, num - 1)


def _ratings(n: int, rng: np.random.Generator) -> np.ndarray:
    """n ratings [n] float64 on ML-20M's half-star scale, roughly its histogram."""
    stars = np.arange(1, 11) / 2
    p = np.array([1.1, 3.4, 1.6, 7.0, 4.4, 19.8, 11.0, 26.6, 7.6, 14.5])  # % of ML-20M's ratings
    return stars[rng.choice(10, size=n, p=p / p.sum())]


def _ml20m(rng: np.random.Generator) -> dict[str, np.ndarray]:
    users, items = SHAPES["ml20m"]
    extra = rng.lognormal(0.0, 1.0, users)  # [U]
    counts = 20 + np.floor(extra / extra.sum() * (ROWS - 20 * users)).astype(np.int64)  # [U]
    counts = _fill_to(np.minimum(counts, 9_254), ROWS, 9_254, rng)
    item_ids = np.sort(rng.choice(np.arange(1, 131_263), size=items, replace=False))  # [I]
    by_rank = item_ids[rng.permutation(items)]  # popularity rank -> raw id
    return {
        "user_id": np.repeat(np.arange(1, users + 1, dtype=np.int64), counts),  # grouped by user
        "item_id": by_rank[_zipf_draws(ROWS, items, 1.1, 10.0, rng)],
        "rating": _ratings(ROWS, rng),
        "timestamp": rng.integers(*ML20M_TIME, size=ROWS, dtype=np.int64),
    }


def _distinct_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct random 62-bit ids [n] int64, in random order."""
    ids = np.unique(rng.integers(0, 2**62, size=n + n // 100 + 16, dtype=np.int64))
    return rng.permutation(ids)[:n]


def _longtail(rng: np.random.Generator) -> dict[str, np.ndarray]:
    users, items = SHAPES["longtail"]
    extra = rng.pareto(1.2, users)  # [U] heavy tail: most users a few events
    counts = 1 + np.floor(extra / extra.sum() * (ROWS - users)).astype(np.int64)  # [U]
    counts = _fill_to(np.minimum(counts, items), ROWS, items, rng)
    user_rows = rng.permutation(np.repeat(np.arange(users, dtype=np.int64), counts))  # [n]
    # every item once, the rest by a Zipf law over popularity ranks
    item_rows = rng.permutation(np.concatenate(
        [np.arange(items, dtype=np.int64), _zipf_draws(ROWS - items, items, 1.0, 1.0, rng)]))
    timestamps = np.sort(rng.integers(*ML20M_TIME, size=ROWS, dtype=np.int64))  # time order
    return {
        "user_id": _distinct_ids(users, rng)[user_rows],
        "item_id": _distinct_ids(items, rng)[item_rows],
        "rating": _ratings(ROWS, rng),
        "timestamp": timestamps,
    }


def dataset_file(shape: str, cache: Path) -> Path:
    """The cached parquet file of `shape`, generated (seed 0) when missing."""
    path = cache / f"{shape}.parquet"
    if path.exists():
        return path
    import polars as pl

    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    columns = {"ml20m": _ml20m, "longtail": _longtail}[shape](np.random.default_rng(0))
    tmp = path.with_suffix(".tmp")
    pl.DataFrame(columns).write_parquet(tmp)
    tmp.rename(path)
    print(f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
          f"{time.perf_counter() - t0:.0f} s")
    return path


# ------------------------------------------------------------------ measurements (child process)
class Steps:
    """Seconds and the process's peak RSS after each named step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float | str]] = []

    def run(self, name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        self.rows.append({"step": name, "s": time.perf_counter() - t0, "rss": peak_rss_mib()})
        return out


def _fingerprints(dm) -> dict[str, str]:
    s = dm.splits
    return {"log": dm.data.fingerprint(), "train": s.train.fingerprint(),
            "val": s.val.fingerprint(), "test": s.test.fingerprint()}


def measure_read(path: str, steps: Steps) -> dict[str, object]:
    from lit_recs.data.datasets import resolve

    inter = steps.run("read (resolve(path).load())", lambda: resolve(path).load())
    return {"summary": inter.summary(), "fingerprint": inter.fingerprint()}


def measure_setup(path: str, steps: Steps, sampled_negatives: int) -> dict[str, object]:
    from lit_recs.data.datamodules import NegativeSamplingDataModule

    dm = NegativeSamplingDataModule(dataset=path, split="loo", sampled_negatives=sampled_negatives)
    load = dm.source.load
    read_s: list[float] = []

    def timed_load():
        t0 = time.perf_counter()
        out = load()
        read_s.append(time.perf_counter() - t0)
        return out

    dm.source.load = timed_load
    steps.run("prepare_data", dm.prepare_data)
    steps.run("data: read + preprocess", lambda: dm.data)
    steps.rows[-1]["step"] = f"data: read {read_s[0]:.1f} s + preprocess"
    steps.run("split (loo)", lambda: dm.splits)
    steps.run('setup("fit"): limits, summary', lambda: dm.setup("fit"))
    steps.run("train_dataloader", dm.train_dataloader)
    steps.run("val_dataloader", dm.val_dataloader)
    steps.run("test_dataloader (test after fit)", dm.test_dataloader)
    summary = dm.data_summary
    removed = {r["step"]: r["interactions"] for r in summary["removed"]}
    return {"summary": dm.data.summary(), "loaded": summary["loaded"], "removed": removed,
            "split": dm.splits.describe(), "fingerprints": _fingerprints(dm),
            "user_length": summary["user_length"]}


def child(args: argparse.Namespace) -> None:
    import polars as pl
    import scipy
    import torch

    import lit_recs

    torch.set_num_threads(1)
    steps = Steps()
    info: dict[str, object] = {
        "baseline_rss": peak_rss_mib(),
        "versions": f"numpy {np.__version__}, polars {pl.__version__}, scipy {scipy.__version__}, "
                    f"torch {torch.__version__}, lit_recs from {Path(lit_recs.__file__).parent}",
        "threads": f"torch {torch.get_num_threads()} (torch.set_num_threads(1)), polars "
                   f"{pl.thread_pool_size()} (its own pool)",
    }
    if args.child == "read":
        info.update(measure_read(args.path, steps))
    else:
        info.update(measure_setup(args.path, steps, args.sampled_negatives))
    info["steps"] = steps.rows
    info["vmhwm"] = high_water_mib()
    print("RESULT " + json.dumps(info))


# ------------------------------------------------------------------ report (parent process)
def run_child(stage: str, path: Path, args: argparse.Namespace) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", stage, "--path", str(path),
           "--sampled-negatives", str(args.sampled_negatives)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{stage} failed:\n{done.stderr[-4000:]}")
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def report(stage: str, results: list[dict[str, object]]) -> None:
    first = results[0]
    print(f"\n{stage}: {first['summary']}  (peak RSS after imports {first['baseline_rss']:.0f} MiB)")
    print(f"  {'step':<44} {'seconds':>16} {'peak RSS MiB':>13}")
    names = [r["step"] for r in first["steps"]]
    for i, name in enumerate(names):
        secs = [r["steps"][i]["s"] for r in results]
        spread = f" ({min(secs):.1f}-{max(secs):.1f})" if len(secs) > 1 else ""
        print(f"  {name:<44} {np.median(secs):>8.1f}{spread:>8} "
              f"{max(r['steps'][i]['rss'] for r in results):>13,.0f}")
    totals = [sum(s["s"] for s in r["steps"]) for r in results]
    peak = max(r["steps"][-1]["rss"] for r in results)
    if stage == "setup":
        upto = [sum(s["s"] for s in r["steps"][:3]) for r in results]
        rss = max(r["steps"][2]["rss"] for r in results)
        print(f"  {'to split (prepare + data + split)':<44} {np.median(upto):>8.1f}{'':>8} "
              f"{rss:>13,.0f}")
    print(f"  {'total':<44} {np.median(totals):>8.1f}{'':>8} {peak:>13,.0f}")
    hwm = max(r["vmhwm"] or 0 for r in results)
    print(f"  peak RSS: ru_maxrss {peak:,.0f} MiB, VmHWM {hwm:,.0f} MiB")
    if stage == "setup":
        print(f"  loaded {first['loaded']}, removed {first['removed']}; {first['split']}")
        print(f"  events per user {first['user_length']}")
        print(f"  fingerprints {first['fingerprints']}")
    else:
        print(f"  fingerprint {first['fingerprint']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="ml20m")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lit_recs_scale"))
    ap.add_argument("--stages", nargs="+", choices=["read", "setup"], default=["read", "setup"])
    ap.add_argument("--sampled-negatives", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="fresh processes per stage (median)")
    ap.add_argument("--child", choices=["generate", "read", "setup"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "generate":
        dataset_file(args.shape, args.cache)
    elif args.child:
        child(args)
    else:  # no heavy import here: a child's ru_maxrss starts at this process's RSS
        path = args.cache / f"{args.shape}.parquet"
        if not path.exists():
            subprocess.run([sys.executable, __file__, "--child", "generate", "--shape", args.shape,
                            "--cache", str(args.cache)], check=True)
        print(f"{args.shape}: {path} ({path.stat().st_size / 2**20:.0f} MiB); machine "
              f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
              f"python {platform.python_version()}, this process {peak_rss_mib():.0f} MiB")
        for i, stage in enumerate(args.stages):
            results = [run_child(stage, path, args) for _ in range(args.repeat)]
            if i == 0:
                print(f"{results[0]['versions']}; threads: {results[0]['threads']}")
            report(stage, results)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
