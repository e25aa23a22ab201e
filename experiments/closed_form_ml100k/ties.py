"""How much ties decide the closed-form models' results on ML-100K (issue 19): SLIM, ItemKNN, EASE
and Popularity on `loo` (full ranking) and `loo-sampled99`, each metric under the pessimistic
policy (a held-out item ranks after every item scored the same) and its exact expectation under a
random order within ties.

    LIT_RECS_DATA=../shared/datasets python experiments/closed_form_ml100k/ties.py [--out DIR]

Each (model, protocol) is one `lit-recs fit` with `--model.init_args.ties expected` (which logs
both policies: the expected values under the usual names, the pessimistic ones under
`pessimistic/`), the shipped configs, the `loo` settings of this folder's README (EASE l2 100,
ItemKNN k 20), 1 thread; `loo-sampled99` adds `conf/trainer/sampled99.yaml` (selection on the
sampled metric; these models have a single checkpoint, so it selects the same one). Prints a
markdown table of test HR@10 / NDCG@10 / MRR@10 under both policies and the largest tie_gap.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
MODELS = {  # name -> (config, overrides on loo)
    "SLIM": ("slim", []),
    "ItemKNN (k 20)": ("itemknn", ["--model.init_args.k", "20"]),
    "EASE (l2 100)": ("ease", ["--model.init_args.l2", "100"]),
    "Popularity": ("popularity", []),
}
PROTOCOLS = {  # name -> (extra configs, metric prefix)
    "loo": ([], "test/"),
    "loo-sampled99": (["--config", str(CONF / "trainer" / "sampled99.yaml")], "test/sampled99/"),
}
SHOWN = ("hr@10", "ndcg@10", "mrr@10")


def fit(model: str, protocol: str, out: Path) -> tuple[dict, float]:
    """One `lit-recs fit` with the expected tie policy; returns its results.json and wall time."""
    config, overrides = MODELS[model]
    folder = out / f"{config}-{protocol}"
    command = [str(Path(sys.executable).parent / "lit-recs"), "fit",
               "--config", str(CONF / "base.yaml"), *PROTOCOLS[protocol][0],
               "--data", str(CONF / "data" / "ml-100k-loo.yaml"),
               "--model", str(CONF / "model" / f"{config}.yaml"), *overrides,
               "--model.init_args.ties", "expected", "--torch_num_threads", "1",
               "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
               "--trainer.default_root_dir", str(folder)]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if run.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{run.stderr[-3000:]}")
    return json.loads((folder / "results.json").read_text()), time.perf_counter() - start


def row(model: str, protocol: str, results: dict, seconds: float) -> str:
    """A markdown row: per shown metric pessimistic / expected, then the largest tie_gap."""
    prefix = PROTOCOLS[protocol][1]
    metrics, gaps = results["metrics"], results["ties"]["gaps"]
    cells = [f"{metrics[f'{prefix}pessimistic/{m}']:.4f} / {metrics[prefix + m]:.4f}"
             for m in SHOWN]
    own = {k: g["tie_gap"] for k, g in gaps.items() if k.startswith(prefix)
           and "/" not in k[len(prefix):]}  # this protocol's metrics only
    largest = max(own, key=lambda k: abs(own[k]), default=None)
    gap = f"{own[largest]:+.4f} ({largest[len(prefix):]})" if largest else "none > tolerance"
    return f"| {protocol} | {model} | {' | '.join(cells)} | {gap} | {len(own)} | {seconds:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/closed_form_ml100k_ties"))
    args = parser.parse_args()
    names = " | ".join(f"{m.upper()} pess. / exp." for m in SHOWN)
    print(f"| protocol | model | {names} | largest tie_gap | metrics with a gap | run s |")
    print("| --- | --- |" + " --- |" * (len(SHOWN) + 3))
    for protocol in PROTOCOLS:
        for model in MODELS:
            print(row(model, protocol, *fit(model, protocol, args.out)), flush=True)


if __name__ == "__main__":
    main()
