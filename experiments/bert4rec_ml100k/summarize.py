"""Prints the BERT4Rec table (mean ± sd over seeds) from runs/bert4rec_ml100k/s*/results.json.

    python experiments/bert4rec_ml100k/summarize.py runs/bert4rec_ml100k
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def sampled(metrics: dict[str, float], name: str) -> float:
    """The popularity-drawn sampled protocol's metric: `sampled100pop` since it is labelled by its
    distribution, `sampled100` in runs made before."""
    return metrics.get(f"test/sampled100pop/{name}", metrics.get(f"test/sampled100/{name}"))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bert4rec_ml100k")
    rows: dict[str, list[float]] = {}
    for run in sorted(out.glob("s*")):
        fit = json.loads((run / "results.json").read_text())
        unmasked = json.loads((run / "unmasked" / "results.json").read_text())
        m, u = fit["metrics"], unmasked["metrics"]
        values = {
            "masked HR@10": m["test/hr@10"], "masked NDCG@10": m["test/ndcg@10"],
            "unmasked HR@10": u["test/hr@10"], "unmasked NDCG@10": u["test/ndcg@10"],
            "sampled100-pop HR@10": sampled(m, "hr@10"),
            "sampled100-pop NDCG@10": sampled(m, "ndcg@10"),
            "epochs": fit["epochs"], "fit s": fit["timings"]["fit_s"],
        }
        print(run.name, {k: round(v, 4) for k, v in values.items()})
        for k, v in values.items():
            rows.setdefault(k, []).append(v)
    print()
    print("| " + " | ".join(rows) + " |")
    print("|" + "---|" * len(rows))
    print("| " + " | ".join(f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1
                            else f"{v[0]:.4f}" for v in rows.values()) + " |")


if __name__ == "__main__":
    main()
