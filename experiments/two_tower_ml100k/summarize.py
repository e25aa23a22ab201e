"""Prints the two-tower tables (mean ± sd over seeds) from runs/two_tower_ml100k/<section>/*/.

    python experiments/two_tower_ml100k/summarize.py runs/two_tower_ml100k
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

METRICS = {
    "main": ["test/ndcg@10", "test/hr@10", "test/sampled99/ndcg@10", "test/sampled99/hr@10"],
    "losses": ["test/ndcg@10", "test/hr@10", "val/ndcg@10"],
    "encoders": ["test/ndcg@10", "test/hr@10", "test/sampled99/ndcg@10", "test/sampled99/hr@10"],
    "ctr": ["test/auc", "test/logloss"],
}


def cell(values: list[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/two_tower_ml100k")
    for section, keys in METRICS.items():
        groups: dict[str, list[dict]] = defaultdict(list)
        paths = sorted((out / section).glob("*/results.json"))
        if section == "losses":  # the in-batch softmax + logQ row is main's random811 run
            paths += sorted((out / "main").glob("random811-*/results.json"))
        for path in paths:
            name = path.parent.name.rsplit("-", 1)[0]
            if section == "losses" and name == "random811":
                name = "in_batch_logq"
            groups[name].append(json.loads(path.read_text()))
        if not groups:
            continue
        print(f"\n{section}")
        print("| variant | seeds | " + " | ".join(keys) + " | epochs | fit s |")
        print("|---" * (len(keys) + 4) + "|")
        order = sorted(groups, key=lambda g: -np.mean([r["metrics"][keys[0]] for r in groups[g]]))
        for name in order:
            results = groups[name]
            cols = [cell([r["metrics"][k] for r in results]) for k in keys]
            epochs = cell([float(r["epochs"]) for r in results], 1)
            fit_s = cell([r["timings"]["fit_s"] for r in results], 1)
            print(f"| {name} | {len(results)} | " + " | ".join(cols) + f" | {epochs} | {fit_s} |")


if __name__ == "__main__":
    main()
