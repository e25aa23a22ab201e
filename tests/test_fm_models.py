"""FM / FFM as RecModules: ranking through user and item parts equals scoring the joined rows;
labelled evaluation (AUC, LogLoss, RMSE) against brute force; training on ML-100K rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lit_recs.data.batches import EvalBatch
from lit_recs.data.feature_rows import FeatureDataModule
from lit_recs.metrics import BinaryMetrics, RatingMetrics, auc
from lit_recs.models import FFM, FM

FIELDS = {"categorical": ["user_id", "item_id", "gender", "occupation", "age"],
          "multi_hot": ["genres"], "numeric": ["year", "item_count"]}


@pytest.fixture(scope="module")
def topn() -> FeatureDataModule:
    return FeatureDataModule(dataset="ml-100k", task="topn", split="loo", **FIELDS)


def build(cls, dm: FeatureDataModule, **kwargs):
    torch.manual_seed(0)
    model = cls(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, init_std=0.3, **kwargs)
    with torch.no_grad():
        model.net.table.weight[:, 0].normal_()
        model.net.bias.fill_(0.7)
    return model


@pytest.mark.parametrize("cls", [FM, FFM])
def test_ranking_from_user_and_item_parts_equals_scoring_the_joined_rows(cls, topn) -> None:
    model = build(cls, topn).double()
    model.attach_features(topn.features)
    users = np.array([0, 5, 942])
    batch = EvalBatch(users=torch.from_numpy(users), weights=torch.ones(3),
                      seen=torch.zeros(2, 0, dtype=torch.long),
                      targets=torch.zeros(2, 0, dtype=torch.long))
    with torch.no_grad():
        scores = model.score(batch)  # [3, I]
    u = np.repeat(users, topn.num_items)
    i = np.tile(np.arange(topn.num_items), len(users))
    rows = topn.features.rows(u, i)
    from lit_recs.data.feature_rows import feature_batch
    fb = feature_batch(topn.features, u, i, None, np.zeros(len(u), np.float32), "topn")
    assert np.array_equal(fb.index.numpy(), rows.index)
    fb.value = fb.value.double()
    with torch.no_grad():
        joined = model.score_rows(fb).view(len(users), topn.num_items)
    torch.testing.assert_close(scores, joined, rtol=0, atol=1e-9)
    assert scores.std() > 0.1  # not trivially equal


def test_ranking_needs_the_feature_tables(topn) -> None:
    model = build(FM, topn)
    batch = EvalBatch(users=torch.zeros(1, dtype=torch.long), weights=torch.ones(1),
                      seen=torch.zeros(2, 0, dtype=torch.long),
                      targets=torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(RuntimeError, match="attach_data"):
        model.score(batch)
    wrong = FM(topn.num_users, topn.num_items, topn.num_features + 1, topn.num_fields)
    with pytest.raises(ValueError, match="features in"):
        wrong.attach_features(topn.features)


def test_auc_counts_pairs_with_ties_as_half() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (300,), generator=g).float()  # many ties
    labels = (torch.rand(300, generator=g) < 0.4).float()
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert float(auc(scores, labels)) == pytest.approx(float(wins.mean()), abs=1e-12)
    with pytest.raises(ValueError, match="positive and negative"):
        auc(scores, torch.ones(300))


def test_binary_and_rating_metrics_accumulate_batches() -> None:
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(500, generator=g), (torch.rand(500, generator=g) < 0.5).float()
    metric = BinaryMetrics()
    for part in range(5):
        metric.update(logits[part * 100:(part + 1) * 100], labels[part * 100:(part + 1) * 100])
    out = metric.compute()
    p = torch.sigmoid(logits.double())
    logloss = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert float(out["logloss"]) == pytest.approx(float(logloss), rel=1e-6)
    assert float(out["auc"]) == pytest.approx(float(auc(logits, labels)), abs=1e-12)
    ratings = RatingMetrics()
    pred, truth = torch.rand(50, generator=g) * 5, torch.randint(1, 6, (50,), generator=g).float()
    ratings.update(pred[:20], truth[:20])
    ratings.update(pred[20:], truth[20:])
    out = ratings.compute()
    assert float(out["rmse"]) == pytest.approx(float((pred - truth).square().mean().sqrt()), 1e-6)
    assert float(out["mae"]) == pytest.approx(float((pred - truth).abs().mean()), 1e-6)


def fit(model, dm, tmp_path, epochs: int = 2) -> dict[str, float]:
    trainer = Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, default_root_dir=tmp_path,
                      use_distributed_sampler=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@pytest.mark.parametrize("cls", [FM, FFM])
def test_ctr_training_learns_above_chance(cls, tmp_path) -> None:
    dm = FeatureDataModule(dataset="ml-100k", task="ctr", split="global_random", batch_size=4096,
                           eval_batch_size=5000, **FIELDS)
    model = cls(dm.num_users, dm.num_items, dm.num_features, dm.num_fields,
                optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    metrics = fit(model, dm, tmp_path)
    assert metrics["val/auc"] > 0.72  # popularity-level signal after 2 epochs
    assert 0.4 < metrics["val/logloss"] < 0.69  # better than a coin


def test_rating_regression_starts_from_the_mean_rating(tmp_path) -> None:
    dm = FeatureDataModule(dataset="ml-100k", task="rating", split="fold", fold=2,
                           batch_size=4096, **FIELDS)
    model = FM(dm.num_users, dm.num_items, dm.num_features, dm.num_fields, l2=0.01,
               optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    metrics = fit(model, dm, tmp_path, epochs=3)
    mean = float(dm.train.ratings.mean())
    baseline = float(np.sqrt(((dm.splits.val.ratings - mean) ** 2).mean()))  # predict the mean
    assert metrics["val/rmse"] < baseline - 0.05
    assert abs(model.net.bias.item() - mean) < 0.5


def test_topn_training_ranks_the_catalogue(topn, tmp_path) -> None:
    model = FM(topn.num_users, topn.num_items, topn.num_features, topn.num_fields,
               optimizer=lambda p: torch.optim.Adam(p, lr=0.01))
    metrics = fit(model, topn, tmp_path, epochs=1)
    assert metrics["val/hr@10"] > 0.03  # popularity-level; random ranking gives ~0.006


def test_cli_checkpoint_round_trip_and_predict_for_a_ctr_run(tmp_path) -> None:
    import json
    from pathlib import Path

    import polars as pl

    from lit_recs.cli import main

    repo = Path(__file__).resolve().parents[1]
    run, quiet = tmp_path / "run", ["--trainer.logger", "false",
                                    "--trainer.enable_progress_bar", "false"]
    main(["fit", "--config", str(repo / "conf/base.yaml"), "--config",
          str(repo / "conf/trainer/ctr.yaml"), "--data", str(repo / "conf/data/ml-100k-ctr.yaml"),
          "--model", str(repo / "conf/model/ffm.yaml"), "--trainer.max_epochs", "2",
          "--trainer.default_root_dir", str(run), *quiet])
    fitted = json.loads((run / "results.json").read_text())["metrics"]
    ckpt = ["--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/best.ckpt")]
    main(["test", *ckpt, "--trainer.default_root_dir", str(tmp_path / "test"), *quiet])
    tested = json.loads((tmp_path / "test" / "results.json").read_text())["metrics"]
    assert tested["test/auc"] == pytest.approx(fitted["test/auc"], abs=1e-7)
    main(["predict", *ckpt, "--trainer.default_root_dir", str(tmp_path / "pred"), *quiet])
    pred = pl.read_parquet(tmp_path / "pred" / "predictions.parquet")
    assert pred["user"].n_unique() == 943 and len(pred) == 943 * 20
    dm = FeatureDataModule(dataset="ml-100k", task="ctr", split="global_random")
    seen = set(zip(dm.data.user_ids[dm.data.users].tolist(), dm.data.item_ids[dm.data.items].tolist()))
    assert not seen & set(zip(pred["user"].to_list(), pred["item"].to_list()))
