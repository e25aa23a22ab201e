"""Torch CPU threads on a shared machine: the quickstart's MF fit with 1 and 2 threads and with
OpenMP's waiting threads spinning (libgomp's default) or sleeping (OMP_WAIT_POLICY=PASSIVE), on idle
cores and with one busy process beside it (a pure-Python loop, as another job would be).

    python experiments/benchmarks/threads.py [--epochs 10] [--repeats 1]

Prints wall seconds of `lit-recs fit --config conf/quickstart.yaml --trainer.max_epochs N` per
setting (start-up included, no logger), and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HOG = "while True: pass"


def fit_seconds(threads: int, policy: str | None, epochs: int, root: Path) -> float:
    env = dict(os.environ, WANDB_MODE="disabled")
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    command = ["lit-recs", "fit", "--config", "conf/quickstart.yaml", "--trainer.max_epochs",
               str(epochs), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--torch_num_threads", str(threads), "--trainer.default_root_dir", str(root)]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--root", type=Path, default=Path("/tmp/lit_recs_threads"))
    args = ap.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average before "
          f"{os.getloadavg()[0]:.1f}; quickstart MF, {args.epochs} epochs, wall s (start-up "
          "included)")
    print("| load | threads | OMP_WAIT_POLICY | wall s |\n| --- | --- | --- | --- |")
    for load in ("idle", "1 busy process"):
        hog = subprocess.Popen([sys.executable, "-c", HOG]) if load != "idle" else None
        try:
            for threads in (1, 2):
                for policy in (None, "PASSIVE"):
                    times = [fit_seconds(threads, policy, args.epochs, args.root / str(k))
                             for k in range(args.repeats)]
                    shown = " / ".join(f"{t:.1f}" for t in times)
                    print(f"| {load} | {threads} | {policy or 'default (spin)'} | {shown} |",
                          flush=True)
        finally:
            if hog is not None:
                hog.kill()


if __name__ == "__main__":
    main()
