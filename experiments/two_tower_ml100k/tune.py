"""One tuning trial of the two-tower model on ML-100K, chosen on validation, printed as JSON.

    LIT_RECS_DATA=../shared/datasets python experiments/two_tower_ml100k/tune.py temp=0.2 lr=3e-3

Keys (default): task (topn | ctr), split (random; ctr: global_random), seed (0), feats (all | side
| id: ids only; side: no title words), hl (history length 0), hist (none | mean | gru |
transformer), neg (sampled negatives 0), nd (uniform), bs (1024; ctr 2048), loss
(in_batch_softmax | sampled_softmax | bce | bpr | hinge: a `lit_recs.losses` name), margin (hinge's,
1), logq (1: in-batch softmax's logQ correction), sim (cosine), temp (0.1), emb (32), dim (64),
hidden (128: widths of both towers, comma separated, empty = linear), drop (0), lr (1e-3), wd (0),
patience (5), epochs (60). Early stopping on val/ndcg@10 (ctr: val/auc); the test metrics of the
best epoch are printed beside the validation score, for the record only: choices are made on
validation.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from functools import partial

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_recs import losses
from lit_recs.data.two_tower import TwoTowerDataModule
from lit_recs.models import TwoTower
from lit_recs.nn.two_tower import TowerConfig


def loss_of(get) -> losses.PairLoss:
    """The `loss` key as a `lit_recs.losses` callable (in-batch softmax with its logQ switch)."""
    name = get("loss", "in_batch_softmax")
    if name == "in_batch_softmax":
        return losses.InBatchSoftmax(logq_correction=get("logq", 1, int) == 1)
    if name == "hinge":
        return losses.Hinge(get("margin", 1.0, float))
    if name not in ("sampled_softmax", "bce", "bpr"):
        raise SystemExit(f"loss={name}: one of in_batch_softmax, sampled_softmax, bce, bpr, hinge")
    return getattr(losses, name)


def main() -> None:
    args = dict(a.split("=", 1) for a in sys.argv[1:])

    def get(key: str, default: object, cast: type = str) -> object:
        return cast(args.get(key, default))

    torch.set_num_threads(1)
    L.seed_everything(get("seed", 0, int))
    task = get("task", "topn")
    ctr = task == "ctr"
    feats = get("feats", "all")
    side = feats != "id"
    dm = TwoTowerDataModule(
        dataset="ml-100k", task=task, split=get("split", "global_random" if ctr else "random"),
        categorical=["user_id", "item_id"] + (["gender", "occupation", "age", "year"] if side
                                              else []),
        multi_hot=["genres"] if side else [], multi_hot_weight="one" if ctr else "mean",
        text=["title"] if feats == "all" and not ctr else [], history_length=get("hl", 0, int),
        num_negatives=get("neg", 0, int), negative_distribution=get("nd", "uniform"),
        batch_size=get("bs", 2048 if ctr else 1024, int), eval_batch_size=8192,
        sampled_negatives=0)
    hidden = [int(x) for x in get("hidden", "128").split(",") if x]
    tower = TowerConfig(
        embedding_dim=get("emb", 32, int), user_hidden=hidden, item_hidden=hidden,
        dim=get("dim", 64, int), dropout=get("drop", 0.0, float), history=get("hist", "none"),
        similarity=get("sim", "cosine"), temperature=get("temp", 0.1, float))
    model = TwoTower(
        dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
        history_length=dm.history_length, tower=tower, loss=loss_of(get),
        optimizer=partial(torch.optim.Adam, lr=get("lr", 1e-3, float),
                          weight_decay=get("wd", 0.0, float)))
    monitor = "val/auc" if ctr else "val/ndcg@10"
    checkpoint = ModelCheckpoint(monitor=monitor, mode="max", dirpath=tempfile.mkdtemp())
    stop = EarlyStopping(monitor, mode="max", patience=get("patience", 5, int))
    trainer = L.Trainer(max_epochs=get("epochs", 60, int), enable_progress_bar=False, logger=False,
                        callbacks=[checkpoint, stop], use_distributed_sampler=False,
                        enable_model_summary=False)
    start = time.time()
    trainer.fit(model, dm)
    fit_s = time.time() - start
    test = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    keys = ["test/auc", "test/logloss"] if ctr else ["test/ndcg@10", "test/hr@10"]
    print(json.dumps({"args": sys.argv[1:], "epochs": trainer.current_epoch,
                      "best_val": round(float(checkpoint.best_model_score), 4),
                      "fit_s": round(fit_s, 1), **{k: round(test[k], 4) for k in keys}}))


if __name__ == "__main__":
    main()
