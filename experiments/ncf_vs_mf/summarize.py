"""The NCF-vs-MF table (mean ± sd over seeds) and a bar chart of it. Each protocol's columns come
from the runs selected on that protocol's validation NDCG@10 (experiments/ncf_vs_mf/run.sh):
`loo` from runs/ncf_vs_mf/<model>-<seed>/results.json, `loo-sampled99` from
runs/ncf_vs_mf/sampled99/<model>-<seed>/results.json. Also printed: the sampled columns of the
`loo` runs (one model per row for both protocols).

    python experiments/ncf_vs_mf/summarize.py runs/ncf_vs_mf [--chart runs/ncf_vs_mf/ncf_vs_mf.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MODELS = {"popularity": "Popularity", "slim": "SLIM", "ials": "iALS", "neumf": "NeuMF", "mf": "MF"}
SAMPLED = {"loo-sampled99 HR@10": "test/sampled99/hr@10",
           "loo-sampled99 NDCG@10": "test/sampled99/ndcg@10"}
FULL = {"loo HR@10": "test/hr@10", "loo NDCG@10": "test/ndcg@10"}
COLUMNS = {**SAMPLED, **FULL}
SELECTED_ON = {**{c: "sampled99" for c in SAMPLED}, **{c: "." for c in FULL}}  # run folder per column
COLORS = {"popularity": "#999999", "slim": "#4c72b0", "ials": "#55a868", "neumf": "#c44e52",
          "mf": "#8172b2"}
PAPER = {  # Rendle et al. 2020, ML-1M, NCF protocol (sampled): HR@10, NDCG@10
    "popularity": (0.4535, 0.2543), "slim": (0.7162, 0.4468), "ials": (0.7111, 0.4383),
    "neumf": (0.7093, 0.4349), "mf": (0.7294, 0.4523)}


def collect(out: Path, selected_on: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """model -> column -> the test metric of every seed, read from out / selected_on[column]."""
    table: dict[str, dict[str, list[float]]] = {}
    for model in MODELS:
        for column, folder in selected_on.items():
            for path in sorted((out / folder).glob(f"{model}-*/results.json")):
                metrics = json.loads(path.read_text())["metrics"]
                table.setdefault(model, {c: [] for c in COLUMNS})[column].append(
                    metrics[COLUMNS[column]])
    return table


def cell(values: list[float]) -> str:
    if not values:
        return "(no runs)"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" if len(values) > 1 \
        else f"{values[0]:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="runs/ncf_vs_mf")
    parser.add_argument("--chart", default=None)
    args = parser.parse_args()
    table = collect(Path(args.out), SELECTED_ON)
    print("| model | " + " | ".join(COLUMNS) + " | paper (ML-1M, sampled) HR / NDCG |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for model, row in table.items():
        paper = "{:.4f} / {:.4f}".format(*PAPER[model])
        seeds = max(len(v) for v in row.values())
        print(f"| {MODELS[model]} ({seeds} seeds) | " + " | ".join(map(cell, row.values())) +
              f" | {paper} |")
    for column in COLUMNS:
        order = sorted((m for m in table if table[m][column]),
                       key=lambda m: -np.mean(table[m][column]))
        print(f"{column}: " + " > ".join(MODELS[m] for m in order))
    hr, ndcg = SAMPLED
    one_model = collect(Path(args.out), {c: "." for c in SAMPLED})
    print("loo-sampled99 of the runs selected on the full ranking (HR@10 / NDCG@10): " + "; ".join(
        f"{MODELS[m]} {cell(r[hr])} / {cell(r[ndcg])}" for m, r in one_model.items()))
    random811 = [json.loads(p.read_text())["metrics"]
                 for p in sorted(Path(args.out).glob("random811/neumf-*/results.json"))]
    if random811:
        hr = [m["test/hr@10"] for m in random811]
        ndcg = [m["test/ndcg@10"] for m in random811]
        print(f"NeuMF random811 ({len(hr)} seeds): HR@10 {np.mean(hr):.4f} ± "
              f"{np.std(hr, ddof=1) if len(hr) > 1 else 0:.4f}, NDCG@10 {np.mean(ndcg):.4f} ± "
              f"{np.std(ndcg, ddof=1) if len(ndcg) > 1 else 0:.4f} (RecBole: 0.773 / 0.279)")
    if args.chart:
        chart(table, Path(args.chart))


def chart(table: dict[str, dict[str, list[float]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: pip install matplotlib (or -e '.[experiments]')")
        return
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.6))
    for ax, column in zip(axes, COLUMNS):
        models = list(table)
        means = [np.mean(table[m][column]) for m in models]
        sds = [np.std(table[m][column], ddof=1) if len(table[m][column]) > 1 else 0 for m in models]
        ax.bar([MODELS[m] for m in models], means, yerr=sds, capsize=3,
               color=[COLORS[m] for m in models])
        ax.set_title(column)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("ML-100K, temporal leave-one-out: sampled (NCF protocol) vs full ranking, "
                 "each selected on its own validation")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
