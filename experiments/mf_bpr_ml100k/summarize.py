"""Prints the results table (mean ± sd over seeds) from the runs' results.json files.

    python experiments/mf_bpr_ml100k/summarize.py runs/mf_bpr_ml100k
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

KEYS = ["test/ndcg@10", "test/hr@10", "test/sampled99/hr@10", "test/sampled99/ndcg@10"]


def main(root: str) -> None:
    groups: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(Path(root).glob("*/results.json")):
        groups[path.parent.name.rsplit("-s", 1)[0]].append(json.loads(path.read_text()))
    print("| run | seeds | " + " | ".join(KEYS) + " | epochs | fit s |")
    print("| --- | --- |" + " --- |" * (len(KEYS) + 2))
    for name, runs in groups.items():
        cells = []
        for key in KEYS:
            values = np.array([r["metrics"][key] for r in runs])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0:.4f}")
        epochs = np.mean([r["epochs"] for r in runs])
        fit_s = np.mean([r["timings"]["fit_s"] for r in runs])
        print(f"| {name} | {len(runs)} | " + " | ".join(cells) + f" | {epochs:.0f} | {fit_s:.1f} |")
    print("\nper run:")
    for path in sorted(Path(root).glob("*/results.json")):
        r = json.loads(path.read_text())
        values = " ".join(f"{r['metrics'][k]:.4f}" for k in KEYS)
        fit_s = r["timings"]["fit_s"]
        print(f"  {path.parent.name:<28} {values}  epochs {r['epochs']}  fit {fit_s:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1])
