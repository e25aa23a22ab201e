"""Grid over FM / FFM hyper-parameters on ML-100K, chosen on validation only.

    python experiments/fm_ml100k/tune.py --task ctr --model fm --grid lr=0.01,0.003 l2=0,1e-4
prints one line per trial: the values, best val metric, its epoch, and the wall time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time
from pathlib import Path

from lit_recs.checkpoints import load_checkpoint
from lit_recs.cli import run

REPO = Path(__file__).resolve().parents[2]
MONITOR = {"ctr": ("val/auc", "max"), "rating": ("val/rmse", "min"), "topn": ("val/ndcg@10", "max")}
DATA = {"ctr": "ml-100k-ctr.yaml", "rating": "ml-100k-rating.yaml", "topn": "ml-100k-fm-topn.yaml"}
TRAINER = {"ctr": ["--config", str(REPO / "conf/trainer/ctr.yaml")],
           "rating": ["--config", str(REPO / "conf/trainer/rating.yaml")], "topn": []}
KEYS = {"lr": "--model.init_args.optimizer.init_args.lr", "wd": "--model.init_args.optimizer.init_args"
        ".weight_decay", "l2": "--model.init_args.l2", "dim": "--model.init_args.dim",
        "batch": "--data.init_args.batch_size", "std": "--model.init_args.init_std",
        "weight": "--data.init_args.multi_hot_weight", "neg": "--data.init_args.num_negatives",
        "fold": "--data.init_args.fold", "seed": "--seed_everything"}


def trial(task: str, model: str, values: dict[str, str], patience: int, extra: list[str]) -> dict:
    monitor, _ = MONITOR[task]
    with tempfile.TemporaryDirectory() as root:
        args = ["fit", "--config", str(REPO / "conf/base.yaml"), *TRAINER[task],
                "--data", str(REPO / "conf/data" / DATA[task]),
                "--model", str(REPO / "conf/model" / f"{model}.yaml"),
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.default_root_dir", root, "--test_after_fit", "false",
                "--trainer.callbacks.patience", str(patience), *extra]
        for key, value in values.items():
            args += [KEYS[key], value]
        start = time.perf_counter()
        cli = run(args)
        wall = time.perf_counter() - start
        ckpt = cli.trainer.checkpoint_callback
        best = float(ckpt.best_model_score)
        epoch = int(load_checkpoint(ckpt.best_model_path)["epoch"])
    return {**values, monitor: round(best, 4), "best_epoch": epoch, "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", choices=sorted(MONITOR), default="ctr")
    parser.add_argument("--model", default="fm")
    parser.add_argument("--grid", nargs="*", default=[], help=f"key=v1,v2 (keys: {','.join(KEYS)})")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--extra", nargs="*", default=[], help="more CLI arguments")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    grid = dict(item.split("=", 1) for item in args.grid)
    keys = list(grid)
    for combo in itertools.product(*(grid[k].split(",") for k in keys)):
        print(json.dumps(trial(args.task, args.model, dict(zip(keys, combo)), args.patience,
                               args.extra)), flush=True)


if __name__ == "__main__":
    main()
