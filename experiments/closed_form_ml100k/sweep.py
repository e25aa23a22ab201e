"""Validation sweep behind conf/model/ease.yaml and conf/model/itemknn.yaml (choose by val only).

    LIT_RECS_DATA=../shared/datasets python experiments/closed_form_ml100k/sweep.py

Prints, per protocol and setting: (val NDCG@10, test NDCG@10, test HR@10, sampled99 HR@10,
sampled99 NDCG@10).
"""

import logging
import warnings

import lightning as L

from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import EASE, ItemKNN


def ev(model_cls, split, **kw):
    dm = NegativeSamplingDataModule(dataset="ml-100k", split=split)
    m = model_cls(dm.num_users, dm.num_items, **kw)
    tr = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, enable_checkpointing=False,
                   use_distributed_sampler=False, num_sanity_val_steps=0)
    tr.fit(m, dm)
    v = float(tr.callback_metrics["val/ndcg@10"])
    t = tr.test(m, dm, verbose=False)[0]
    keys = ["test/ndcg@10", "test/hr@10", "test/sampled99/hr@10", "test/sampled99/ndcg@10"]
    return (round(v, 4), *(round(t[k], 4) for k in keys))


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    for split in ["random", "loo"]:
        for l2 in [50, 100, 200, 250, 300, 350, 400, 500, 600, 800]:
            print(split, "EASE", l2, ev(EASE, split, l2=l2), flush=True)
        for k in [20, 50, 100, 200]:
            print(split, "ItemKNN", k, ev(ItemKNN, split, k=k), flush=True)


if __name__ == "__main__":
    main()
