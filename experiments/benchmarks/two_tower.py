"""Two-tower / DSSM training speed on ML-100K: seconds per epoch through Lightning's Trainer.

    LIT_RECS_DATA=../shared/datasets python experiments/benchmarks/two_tower.py [--epochs 5]
        [--threads 2] [--only ctr,in_batch,...]

Settings are those of conf/model/dssm.yaml (CTR, batch 2,048, against RecBole 1.2.1's DSSM on
this machine: 2.5 s/epoch, PROTOCOLS.md) and conf/model/two_tower.yaml (random811, batch 1,024),
with the losses, negatives and history encoders of experiments/two_tower_ml100k. Printed per
setting: median seconds per training epoch (epochs 2.., validation excluded) and rows/s.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings
from typing import Any

import torch
from clock import timed_fit  # experiments/benchmarks/clock.py

from lit_recs import losses
from lit_recs.data.two_tower import TwoTowerDataModule
from lit_recs.models import TwoTower
from lit_recs.nn.two_tower import TowerConfig

RECBOLE_DSSM_S = 2.5  # s/epoch, ML-100K CTR, 2 CPU cores (PROTOCOLS.md)
FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age", "year"],
          "multi_hot": ["genres"]}
DSSM = {"embedding_dim": 16, "dim": 32, "user_hidden": [256, 128], "item_hidden": [256, 128],
        "temperature": 0.5}
TOWER = {"embedding_dim": 32, "dim": 64, "user_hidden": [128], "item_hidden": [128],
         "temperature": 0.2}
LOGQ = losses.InBatchSoftmax(logq_correction=True)
# name: (data, tower config, loss)
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any], losses.PairLoss | None]] = {
    "ctr": ({"task": "ctr", "split": "global_random", "batch_size": 2048,
             "multi_hot_weight": "one"}, DSSM, None),
    "in_batch": ({"text": ["title"]}, TOWER, LOGQ),
    "in_batch_mixed": ({"text": ["title"], "num_negatives": 1}, TOWER, LOGQ),
    "sampled_softmax": ({"text": ["title"], "num_negatives": 4}, TOWER, losses.sampled_softmax),
    "history_mean": ({"text": ["title"], "history_length": 20}, {**TOWER, "history": "mean"},
                     LOGQ),
    "history_gru": ({"text": ["title"], "history_length": 20}, {**TOWER, "history": "gru"},
                    LOGQ),
    "history_transformer": ({"text": ["title"], "history_length": 20},
                            {**TOWER, "history": "transformer"}, LOGQ),
}


def epoch_seconds(name: str, epochs: int) -> tuple[float, int]:
    data, tower, loss = SETTINGS[name]
    data = {"split": "random", "batch_size": 1024, **FIELDS, **data}
    dm = TwoTowerDataModule(dataset="ml-100k", sampled_negatives=0, **data)
    m = TwoTower(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                 history_length=dm.history_length, tower=TowerConfig(**tower), loss=loss,
                 optimizer=lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True))
    epoch_s, _ = timed_fit(m, dm, epochs)
    return statistics.median(epoch_s[1:]), len(dm.train)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default=",".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"| setting | s/epoch | rows/s | vs RecBole DSSM {RECBOLE_DSSM_S} s |")
    print("| --- | --- | --- | --- |")
    for name in args.only.split(","):
        seconds, rows = epoch_seconds(name, args.epochs)
        ratio = f"{RECBOLE_DSSM_S / seconds:.1f}x" if name == "ctr" else ""
        print(f"| {name} | {seconds:.3f} | {rows / seconds:,.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
