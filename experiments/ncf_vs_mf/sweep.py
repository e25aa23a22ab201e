"""Run a W&B grid sweep file (conf/sweeps/*.yaml) locally, without a W&B server: every grid point
is one `lit-recs fit` of the sweep's command, run in this process with the W&B logger off.

    LIT_RECS_DATA=../shared/datasets python experiments/ncf_vs_mf/sweep.py conf/sweeps/ials_loo.yaml

Prints one JSON line per trial (the values, the best value of the sweep's metric, the number of
epochs and the wall time) and the best trial last.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lit_recs.cli import run

REPO = Path(__file__).resolve().parents[2]


def trials(sweep: dict) -> list[dict[str, object]]:
    if sweep.get("method") != "grid":
        raise ValueError(f"only grid sweeps run locally, this one is {sweep.get('method')!r}")
    names = list(sweep["parameters"])
    values = [sweep["parameters"][n]["values"] for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def fit(command: list[str], values: dict[str, object], root: str) -> tuple[float, int]:
    args = [a for a in command if a not in ("${env}", "lit-recs", "${args}")]
    args += [f"--{k}={v}" for k, v in values.items()]
    args += ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.default_root_dir", root]
    cli = run(args)
    return float(cli.trainer.checkpoint_callback.best_model_score), cli.trainer.current_epoch


def main() -> None:
    path = Path(sys.argv[1])
    sweep = yaml.safe_load(path.read_text())
    logging.disable(logging.WARNING)
    metric, goal = sweep["metric"]["name"], sweep["metric"]["goal"]
    results = []
    for values in trials(sweep):
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as root:
            best, epochs = fit(sweep["command"], values, root)
        results.append({**values, metric: round(best, 4), "epochs": epochs,
                        "wall_s": round(time.perf_counter() - start, 1)})
        print(json.dumps(results[-1]), flush=True)
    pick = max if goal == "maximize" else min
    print("best of", len(results), "trials:", json.dumps(pick(results, key=lambda r: r[metric])))


if __name__ == "__main__":
    import os

    os.chdir(REPO)
    main()
