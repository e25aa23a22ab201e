"""Options beyond the data fail at DataModule setup with the option, its limit and the numbers;
at the limit they work. The sampled protocol's key (EvalBatch.sampled_key) names N and the
distribution.

Limits are rebuilt here by hand from python sets per user, never from the CSR helpers the
DataModules use.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lit_recs.callbacks import HardNegativeMiner
from lit_recs.data.cloze import ClozeDataModule
from lit_recs.data.datamodules import NegativeSamplingDataModule, RecDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.data.feature_rows import FeatureDataModule
from lit_recs.data.interactions import Interactions
from lit_recs.data.two_tower import TwoTowerDataModule

REPO = Path(__file__).resolve().parents[1]


def synthetic() -> Synthetic:
    # 300 items, ~20 per user, Zipf popularity: some items never occur (popularity's support is
    # smaller than the catalogue) and users differ in length (the limit is a minimum over users)
    return Synthetic(num_users=40, num_items=300, interactions_per_user=20, seed=7)


def user_sets(inter: Interactions, num_users: int) -> list[set[int]]:
    sets: list[set[int]] = [set() for _ in range(num_users)]
    for u, i in zip(inter.users.tolist(), inter.items.tolist()):
        sets[u].add(i)
    return sets


def limit_by_hand(inter: Interactions, num_users: int, num_items: int, distribution: str
                  ) -> tuple[int, list[int]]:
    """(min over users of the distinct items they can draw, the per-user counts)."""
    sets = user_sets(inter, num_users)
    pool = set(range(num_items)) if distribution != "popularity" else set(inter.items.tolist())
    per_user = [len(pool - s) for s in sets]
    return min(per_user), per_user


def raises_with(option: str, n: int, limit: int, short: int, total: int):
    pattern = (rf"{option}={n} is more than .* {short} of {total} users have fewer than {n} .*"
               rf"The limit is {option} <= {limit}\b")
    return pytest.raises(ValueError, match=pattern)


# ------------------------------------------------------------------ sampled_negatives
@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_sampled_negatives_over_the_limit_fail_at_setup(distribution):
    probe = RecDataModule(dataset=synthetic(), sampled_negatives=0)
    limit, per_user = limit_by_hand(probe.data, probe.num_users, probe.num_items, distribution)
    if distribution == "popularity":  # the synthetic log leaves items out: a smaller support
        assert limit < limit_by_hand(probe.data, probe.num_users, probe.num_items, "uniform")[0]
    n = limit + 1
    dm = RecDataModule(dataset=synthetic(), sampled_negatives=n,
                       sampled_distribution=distribution)
    short = sum(c < n for c in per_user)
    start = time.perf_counter()
    with raises_with("sampled_negatives", n, limit, short, dm.num_users) as err:
        dm.setup("fit")
    assert time.perf_counter() - start < 5
    assert dm._sampled is None  # failed before drawing
    assert dm.sampled_protocol in str(err.value)
    for stage in ("validate", "test"):
        with raises_with("sampled_negatives", n, limit, short, dm.num_users):
            dm.setup(stage)
    dm.setup("predict")  # predicting draws no sampled negatives
    with raises_with("sampled_negatives", n, limit, short, dm.num_users):
        dm.eval_dataset("val")  # and without setup: before drawing too


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_sampled_negatives_at_the_limit_are_drawn_distinct(distribution):
    probe = RecDataModule(dataset=synthetic(), sampled_negatives=0)
    limit, _ = limit_by_hand(probe.data, probe.num_users, probe.num_items, distribution)
    dm = RecDataModule(dataset=synthetic(), sampled_negatives=limit,
                       sampled_distribution=distribution)
    dm.setup("fit")
    sampled = dm.eval_dataset("val").sampled
    every = user_sets(dm.data, dm.num_users)
    seen_items = set(dm.data.items.tolist())
    assert sampled.shape == (dm.num_users, limit)
    for u in range(dm.num_users):
        row = set(sampled[u].tolist())
        assert len(row) == limit, u
        assert not row & every[u], u
        if distribution == "popularity":
            assert row <= seen_items, u


def test_sampled_negatives_limit_on_ml100k():
    dm = RecDataModule(dataset="ml-100k", sampled_negatives=5000)
    most = max(len(s) for s in user_sets(dm.data, dm.num_users))  # 737 ratings
    limit = dm.num_items - most
    with raises_with("sampled_negatives", 5000, limit, dm.num_users, dm.num_users):
        dm.setup("fit")


# ------------------------------------------------------------------ num_negatives
@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_num_negatives_over_the_limit_fail_at_setup(distribution):
    probe = NegativeSamplingDataModule(dataset=synthetic(), sampled_negatives=0)
    limit, per_user = limit_by_hand(probe.train, probe.num_users, probe.num_items, distribution)
    n = limit + 1
    dm = NegativeSamplingDataModule(dataset=synthetic(), sampled_negatives=0, num_negatives=n,
                                    negative_distribution=distribution)
    short = sum(c < n for c in per_user)
    start = time.perf_counter()
    with raises_with("num_negatives", n, limit, short, dm.num_users) as err:
        dm.setup("fit")
    assert time.perf_counter() - start < 5
    assert f"negative_distribution={distribution!r}" in str(err.value)
    dm.setup("validate")  # evaluating draws no training negatives
    with raises_with("num_negatives", n, limit, short, dm.num_users):
        dm.train_dataloader()  # and without setup: before drawing too


@pytest.mark.parametrize("distribution", ["uniform", "popularity"])
def test_num_negatives_at_the_limit_train(distribution):
    """Training negatives are independent draws (a row may repeat an item), each one a non-positive
    of the user inside the distribution's support; the user at the limit draws from exactly
    `limit` items."""
    probe = NegativeSamplingDataModule(dataset=synthetic(), sampled_negatives=0)
    limit, per_user = limit_by_hand(probe.train, probe.num_users, probe.num_items, distribution)
    dm = NegativeSamplingDataModule(dataset=synthetic(), sampled_negatives=0, num_negatives=limit,
                                    negative_distribution=distribution, batch_size=256)
    dm.setup("fit")
    positives = user_sets(dm.train, dm.num_users)
    pool = set(range(dm.num_items)) if distribution == "uniform" else set(dm.train.items.tolist())
    fewest = per_user.index(limit)
    drawn: set[int] = set()
    for batch in dm.train_dataloader():
        assert batch.neg_items.shape == (len(batch), limit)
        for u, row in zip(batch.users.tolist(), batch.neg_items.tolist()):
            assert set(row) <= pool - positives[u], u
            if u == fewest:
                drawn |= set(row)
    assert drawn and drawn <= pool - positives[fewest]


def test_feature_and_two_tower_num_negatives_over_the_limit_fail_at_setup():
    fields = {"categorical": ["user_id", "item_id"]}
    probe = FeatureDataModule(dataset=synthetic(), task="topn", sampled_negatives=0, **fields)
    limit, _ = limit_by_hand(probe.train, probe.num_users, probe.num_items, "uniform")
    for cls in (FeatureDataModule, TwoTowerDataModule):
        dm = cls(dataset=synthetic(), task="topn", sampled_negatives=0,
                 num_negatives=limit + 1, **fields)
        with pytest.raises(ValueError, match=rf"num_negatives={limit + 1} .* <= {limit}\b"):
            dm.setup("fit")
        cls(dataset=synthetic(), task="topn", sampled_negatives=0, num_negatives=limit,
            **fields).setup("fit")
    # ctr draws no negatives and ranks nothing: neither option applies
    ctr = FeatureDataModule(dataset=synthetic(), task="ctr", rating_threshold=None,
                            num_negatives=10_000, sampled_negatives=10_000, **fields)
    ctr.setup("fit")
    assert ctr.sampled_protocol is None


def test_hard_num_negatives_over_the_pool_fail_at_setup():
    dm = NegativeSamplingDataModule(dataset=synthetic(), sampled_negatives=0, num_negatives=6,
                                    negative_distribution="hard")
    dm.setup("fit")  # the data alone does not know the pool's width
    with pytest.raises(ValueError, match=r"num_negatives=6 .*pool of 5 items \(HardNegativeMiner "
                                         r"pool_size=5\).* num_negatives <= 5\b"):
        HardNegativeMiner(pool_size=5).register(dm)  # the miner's setup hook, before any epoch
    HardNegativeMiner(pool_size=6).register(dm)  # at the limit
    # with easy items mixed in the pool is wider: 4 hard + 4 uniform
    HardNegativeMiner(pool_size=4, uniform_share=0.5).register(dm)
    # a pool already set is what applies
    dm.set_hard_negatives(np.zeros((dm.num_users, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"num_negatives=6 .*pool of 3 .*<= 3\b"):
        dm.setup("fit")


# ------------------------------------------------------------------ the sampled protocol's key
def eval_batch(dm: RecDataModule, stage: str = "val"):
    return next(iter(getattr(dm, f"{stage}_dataloader")()))


def test_sampled_key_names_the_distribution_and_n():
    uniform = RecDataModule(dataset=synthetic(), sampled_negatives=99)
    popular = RecDataModule(dataset=synthetic(), sampled_negatives=99,
                            sampled_distribution="popularity")
    assert uniform.sampled_protocol == "sampled99"
    assert popular.sampled_protocol == "sampled99pop"
    for stage in ("val", "test"):
        assert eval_batch(uniform, stage).sampled_key == "sampled99"
        assert eval_batch(popular, stage).sampled_key == "sampled99pop"
    assert eval_batch(popular, "predict").sampled_key is None  # no sampled negatives
    off = RecDataModule(dataset=synthetic(), sampled_negatives=0)
    assert off.sampled_protocol is None and eval_batch(off).sampled_key is None
    assert RecDataModule(dataset=synthetic(), sampled_negatives=20).sampled_protocol == "sampled20"


def test_every_datamodule_fills_the_sampled_key():
    fields = {"categorical": ["user_id", "item_id"]}
    cloze = ClozeDataModule(dataset=synthetic(), max_len=8, sampled_negatives=20,
                            sampled_distribution="popularity")
    tower = TwoTowerDataModule(dataset=synthetic(), task="topn", history_length=3,
                               sampled_negatives=30, sampled_distribution="popularity", **fields)
    rows = FeatureDataModule(dataset=synthetic(), task="topn", sampled_negatives=30, **fields)
    for dm, key in ((cloze, "sampled20pop"), (tower, "sampled30pop"), (rows, "sampled30")):
        batch = eval_batch(dm)
        assert batch.sampled is not None and batch.sampled_key == key, type(dm).__name__
    assert eval_batch(cloze).sequences is not None and eval_batch(tower).sequences is not None


# ------------------------------------------------------------------ the installed command
def test_cli_fit_fails_within_seconds_on_too_many_sampled_negatives(tmp_path):
    script = Path(sys.executable).parent / "lit-recs"
    command = [str(script), "fit", "--config", "conf/base.yaml", "--data", "conf/data/ml-100k.yaml",
               "--model", "conf/model/popularity.yaml",
               "--data.init_args.sampled_negatives", "5000", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(tmp_path / "run")]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "WANDB_MODE": "offline"})
    elapsed = time.perf_counter() - start
    assert done.returncode != 0
    assert elapsed < 60, elapsed
    message = re.search(r"ValueError: (sampled_negatives=5000 .*)", done.stderr)
    assert message, done.stderr[-2000:]
    assert "sampled5000" in message.group(1)
    assert re.search(r"The limit is sampled_negatives <= 945\b", message.group(1))
