"""Prints the FM / FFM tables (mean ± sd over seeds or folds) from runs/fm_ml100k/<task>/*/results.json.

    python experiments/fm_ml100k/summarize.py runs/fm_ml100k
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

METRICS = {
    "ctr": ["test/auc", "test/logloss"],
    "rating": ["test/rmse", "test/mae"],
    "topn": ["test/hr@10", "test/ndcg@10", "test/sampled99/hr@10", "test/sampled99/ndcg@10"],
}


def cell(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else \
        f"{values[0]:.4f}"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/fm_ml100k")
    for task, keys in METRICS.items():
        runs = sorted((out / task).glob("*/results.json"))
        if not runs:
            continue
        print(f"\n{task}: " + ", ".join(r.parent.name for r in runs))
        print("| model | " + " | ".join(keys) + " | epochs | fit s |")
        print("|---" * (len(keys) + 3) + "|")
        for model in ("fm", "ffm"):
            results = [json.loads(r.read_text()) for r in runs
                       if r.parent.name.startswith(f"{model}-")]
            if not results:
                continue
            cols = [cell([res["metrics"][k] for res in results]) for k in keys]
            epochs = cell([float(res["epochs"]) for res in results])
            fit_s = cell([res["timings"]["fit_s"] for res in results])
            print(f"| {model.upper()} | " + " | ".join(cols) + f" | {epochs} | {fit_s} |")


if __name__ == "__main__":
    main()
