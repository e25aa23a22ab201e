"""The hyper-parameter search behind conf/model/mf.yaml: each configuration trained with early
stopping on validation NDCG@10, then tested on its best epoch. Choose by the `val` column only.

    LIT_RECS_DATA=../shared/datasets python experiments/mf_bpr_ml100k/tune.py \
        '[{"split": "loo", "lr": 0.002, "wd": 1e-5, "neg": 4, "bias": false, "dim": 128}]'

Prints one JSON line per configuration: epochs, fit seconds, best val NDCG@10, test NDCG@10 / HR@10
and the sampled-protocol HR@10 / NDCG@10. One CPU thread, data seed = training seed = `seed`.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_recs import losses
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import MF


def run(split: str = "random", neg: int = 1, lr: float = 1e-3, l2: float = 0.0, dim: int = 64,
        bias: bool = True, init_std: float = 0.1, loss: str = "bpr", wd: float = 0.0,
        batch: int = 1024, patience: int = 10, seed: int = 42) -> dict[str, float]:
    L.seed_everything(seed, verbose=False)
    dm = NegativeSamplingDataModule(dataset="ml-100k", split=split, num_negatives=neg,
                                    batch_size=batch, seed=seed)
    model = MF(dm.num_users, dm.num_items, dim=dim, bias=bias, init_std=init_std, l2=l2,
               loss=getattr(losses, loss),
               optimizer=lambda p: torch.optim.Adam(p, lr=lr, weight_decay=wd))
    with tempfile.TemporaryDirectory() as root:
        ckpt = ModelCheckpoint(dirpath=root, monitor="val/ndcg@10", mode="max")
        stop = EarlyStopping("val/ndcg@10", mode="max", patience=patience)
        trainer = L.Trainer(max_epochs=300, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, callbacks=[ckpt, stop],
                            use_distributed_sampler=False, num_sanity_val_steps=0)
        t0 = time.perf_counter()
        trainer.fit(model, dm)
        fit_s = time.perf_counter() - t0
        res = trainer.test(model, dm, ckpt_path="best", verbose=False)[0]
    return {"epochs": trainer.current_epoch, "fit_s": round(fit_s, 1),
            "val": round(float(ckpt.best_model_score), 4), "ndcg": round(res["test/ndcg@10"], 4),
            "hr": round(res["test/hr@10"], 4), "s_hr": round(res["test/sampled99/hr@10"], 4),
            "s_ndcg": round(res["test/sampled99/ndcg@10"], 4)}


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    for config in json.loads(sys.argv[1]):
        print(json.dumps(config), json.dumps(run(**config)), flush=True)


if __name__ == "__main__":
    main()
