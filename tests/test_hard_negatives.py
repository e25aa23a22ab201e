"""Hard negatives shared by every sampling DataModule: MF on NegativeSamplingDataModule."""

from __future__ import annotations

import lightning as L
import numpy as np

from lit_recs.callbacks import HardNegativeMiner
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.models import MF


def test_mf_trains_on_hard_negatives_from_the_previous_epoch() -> None:
    dm = NegativeSamplingDataModule(dataset="ml-100k", split="random", num_negatives=3,
                                    negative_distribution="hard", batch_size=8192,
                                    sampled_negatives=0)
    model = MF(dm.num_users, dm.num_items, dim=8)
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0,
                        callbacks=[HardNegativeMiner(pool_size=10)])
    trainer.fit(model, dm)
    pool = dm.hard_negatives  # refreshed after each epoch from MF's scores
    assert pool.shape == (dm.num_users, 10)
    batch = next(iter(dm.train_dataloader()))  # the next epoch's negatives come from the pool
    users, negatives = batch.users.numpy(), batch.neg_items.numpy()
    assert all(set(negatives[r]) <= set(pool[users[r]]) for r in range(len(users)))
    train = dm.train.binary_csr()
    assert not train[np.repeat(users, 3), negatives.reshape(-1)].any()


def test_uniform_share_mixes_easy_negatives_into_the_pool() -> None:
    miner = HardNegativeMiner(pool_size=10, uniform_share=0.75)
    hard = np.tile(np.arange(10), (5, 1))  # [U, 10] all from items 0..9
    pool = miner.mix(hard, num_items=1000)
    assert pool.shape == (5, 40) and (pool[:, :10] == hard).all()  # 30 easy: 3 in 4 draws
    assert (pool[:, 10:] >= 10).mean() > 0.9  # drawn from the whole catalogue
    again = HardNegativeMiner(pool_size=10, uniform_share=0.75).mix(hard, num_items=1000)
    assert (again == pool).all()  # the same on every process
