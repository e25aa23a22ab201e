"""The W&B dashboard (lit_recs.dashboard) through the installed `lit-recs` command on ML-100K: the
offline run's tables (`recommendations`, `metrics_by_k`, the NDCG@K chart), its artifacts (best
checkpoint, results.json, config.yaml, predictions) and its summary, read from the run's files."""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
import wandb
import yaml
from commands import lit_recs
from wandb_records import artifacts, run_config, summary, tables

from lit_recs.cli import main
from lit_recs.dashboard import WandbDashboard, top_items
from lit_recs.data.batches import EvalBatch
from lit_recs.data.datamodules import RecDataModule
from lit_recs.models.popularity import Popularity

POPULARITY = ["--config", "conf/base.yaml", "--data", "conf/data/ml-100k.yaml",
              "--model", "conf/model/popularity.yaml", "--trainer.max_epochs", "1",
              "--trainer.enable_progress_bar", "false"]
MF = ["--config", "conf/base.yaml", "--data", "conf/data/ml-100k.yaml",
      "--model", "conf/model/mf.yaml", "--trainer.limit_train_batches", "6",
      "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Popularity fitted on ML-100K, then `test` and `predict` from its best checkpoint; W&B
    offline, its staging folder (the artifacts' copies) inside the test's folder."""
    root = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DATA_DIR", str(root / "wandb-data"))
        fit = root / "fit"
        done = lit_recs("fit", *POPULARITY, "--trainer.default_root_dir", str(fit))
        assert done.returncode == 0, done.stderr[-3000:]
        ckpt = ["--config", str(fit / "config.yaml"),
                "--ckpt_path", str(fit / "checkpoints" / "best.ckpt"),
                "--trainer.enable_progress_bar", "false"]
        out = {"fit": fit}
        for sub in ("test", "predict"):
            out[sub] = root / sub
            done = lit_recs(sub, *ckpt, "--trainer.default_root_dir", str(out[sub]))
            assert done.returncode == 0, done.stderr[-3000:]
    return out


def run_file(run: Path) -> Path:
    files = list(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"one offline W&B run in {run}: {files}"
    return files[0]


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def md5(path: Path) -> str:
    """W&B's digest of a file: base64 of its MD5."""
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def datamodule(run: Path) -> RecDataModule:
    """The run's DataModule, built from its config.yaml (the same data, split and ids)."""
    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    module, name = data["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**data["init_args"])


def item_titles() -> dict[int, str]:
    """ML-100K's titles read straight from u.item (raw item id -> title)."""
    path = Path(os.environ["LIT_RECS_DATA"]) / "ml-100k" / "u.item"
    lines = path.read_text(encoding="latin-1").splitlines()
    return {int(parts[0]): parts[1] for parts in (line.split("|") for line in lines if line)}


def by_user(table: dict) -> dict[object, list[dict]]:
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    out: dict[object, list[dict]] = {}
    for row in rows:
        out.setdefault(row["user"], []).append(row)
    return out


# ------------------------------------------------------------------ what the model recommends
def test_recommendations_table_holds_the_evaluation_ranking_of_a_fixed_sample(
        runs: dict[str, Path]) -> None:
    run = runs["fit"]
    table = tables(run_file(run))["recommendations"]
    assert table["columns"] == ["user", "rank", "item", "score", "hit", "last_train_items",
                                "held_out_items", "title", "last_train_titles", "held_out_titles"]
    users = by_user(table)
    assert len(users) == 20 and len(table["data"]) == 20 * 10
    dm = datamodule(run)
    index = {u: i for i, u in enumerate(dm.data.user_ids.tolist())}
    item_index = {it: i for i, it in enumerate(dm.data.item_ids.tolist())}
    counts = np.bincount(dm.train.items, minlength=dm.num_items)  # Popularity's scores
    titles = item_titles()
    known = dm.known("test")
    train = dm.train
    for user, rows in users.items():
        u = index[user]
        test_items = set(dm.data.item_ids[dm.splits.test.items[dm.splits.test.users == u]].tolist())
        seen = set(dm.data.item_ids[known.items[known.users == u]].tolist())
        assert [r["rank"] for r in rows] == list(range(1, 11))
        assert set(rows[0]["held_out_items"]) == test_items and test_items  # a test user
        for r in rows:
            assert r["hit"] == (r["item"] in test_items)
            assert r["item"] not in seen  # train and validation items masked, as the test does
            assert r["score"] == counts[item_index[r["item"]]]  # Popularity: training count
            assert r["title"] == titles[r["item"]]
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        # the last 5 training items, oldest first: no other training item of the user is later
        last = rows[0]["last_train_items"]
        mine = train.users == u
        when = dict(zip(dm.data.item_ids[train.items[mine]].tolist(),
                        train.timestamps[mine].tolist(), strict=True))
        assert len(last) == min(5, len(when))
        assert [when[i] for i in last] == sorted(when[i] for i in last)
        assert all(t <= when[last[0]] for i, t in when.items() if i not in last)
        assert rows[0]["last_train_titles"] == [titles[i] for i in last]
        assert rows[0]["held_out_titles"] == [titles[i] for i in rows[0]["held_out_items"]]
    hits = sum(r["hit"] for rows in users.values() for r in rows)
    assert 0 < hits < 200  # Popularity finds some held-out items, not all


def test_the_same_users_and_lists_come_back_when_the_checkpoint_is_tested_again(
        runs: dict[str, Path]) -> None:
    fitted = tables(run_file(runs["fit"]))["recommendations"]
    tested = tables(run_file(runs["test"]))["recommendations"]
    assert tested == fitted


def test_metrics_by_k_table_and_ndcg_chart_hold_the_test_metrics(runs: dict[str, Path]) -> None:
    run = runs["fit"]
    logged = tables(run_file(run))
    table = logged["metrics_by_k"]
    assert table["columns"][:6] == ["protocol", "k", "hr", "ndcg", "recall", "mrr"]
    metrics = results(run)["metrics"]
    keys = [(p, k) for p in ("full", "sampled99") for k in (5, 10, 20)]
    assert [tuple(row[:2]) for row in table["data"]] == keys
    for row in table["data"]:
        for name, value in zip(table["columns"][2:], row[2:], strict=True):
            prefix = "test/" if row[0] == "full" else f"test/{row[0]}/"
            key = f"{prefix}{name}@{row[1]}"
            assert value == (metrics[key] if key in metrics else None), key
    assert logged["ndcg_by_k_table"] == table  # the chart's data
    chart = run_config(run_file(run))["_wandb/visualize/ndcg_by_k"]["panel_config"]
    assert chart["panelDefId"] == "wandb/line/v0"
    assert chart["fieldSettings"] == {"x": "k", "y": "ndcg", "stroke": "protocol"}


def test_test_and_predict_in_their_own_folders_leave_the_fitted_run_alone(
        runs: dict[str, Path]) -> None:
    """A run's config.yaml pins its folder (W&B save_dir, checkpoints' dirpath): a command given
    another folder writes its W&B run, config and files there, not into the run it read."""
    fit = runs["fit"]
    assert yaml.safe_load((fit / "config.yaml").read_text())["trainer"]["default_root_dir"] == \
        str(fit)
    assert len(list(fit.glob("wandb/offline-run-*"))) == 1
    for sub in ("test", "predict"):
        config = yaml.safe_load((runs[sub] / "config.yaml").read_text())
        assert config["trainer"]["logger"][0]["init_args"]["save_dir"] == str(runs[sub])
        run_file(runs[sub])  # its own W&B run


def test_fit_from_a_saved_config_in_another_folder_writes_its_checkpoints_there(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    fit = runs["fit"]
    best = fit / "checkpoints" / "best.ckpt"
    written = best.stat().st_mtime_ns
    again = tmp_path / "again"
    done = lit_recs("fit", "--config", str(fit / "config.yaml"),
                    "--trainer.default_root_dir", str(again))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (again / "checkpoints" / "best.ckpt").is_file()
    assert best.stat().st_mtime_ns == written
    assert len(list(fit.glob("wandb/offline-run-*"))) == 1
    assert by_type(again)["model"]["files"]["best.ckpt"]["digest"] == \
        md5(again / "checkpoints" / "best.ckpt")


# ------------------------------------------------------------------ summary
@pytest.mark.parametrize("sub", ["fit", "test"])
def test_summary_holds_results_json_metrics_and_status(runs: dict[str, Path], sub: str) -> None:
    run = runs[sub]
    done = results(run)
    final = summary(run_file(run))
    assert done["status"] == "completed" and final["status"] == "completed"
    assert any(k.startswith("test/") for k in done["metrics"])
    for key, value in done["metrics"].items():
        assert final[key] == value, key


# ------------------------------------------------------------------ artifacts
def by_type(run: Path) -> dict[str, dict]:
    logged = [a for a in artifacts(run_file(run)) if a["type"] != "run_table"]
    assert len({a["type"] for a in logged}) == len(logged), "one artifact of each type"
    return {a["type"]: a for a in logged}


def test_fit_logs_checkpoint_results_and_config_with_their_provenance(
        runs: dict[str, Path]) -> None:
    run = runs["fit"]
    run_id = run_file(run).stem.removeprefix("run-")
    done = results(run)
    logged = by_type(run)
    assert set(logged) == {"model", "results", "config"}
    files = {"model": run / "checkpoints" / "best.ckpt", "results": run / "results.json",
             "config": run / "config.yaml"}
    for kind, path in files.items():
        art = logged[kind]
        assert art["name"] == f"{kind}-{run_id}"
        assert list(art["files"]) == [path.name]
        entry = art["files"][path.name]
        assert entry["digest"] == md5(path) and entry["size"] == path.stat().st_size
        assert Path(entry["local_path"]).read_bytes() == path.read_bytes()  # the staged copy
        meta = art["metadata"]
        assert meta["data_fingerprint"] == done["data_fingerprint"] and meta["data_fingerprint"]
        assert meta["git_commit"] == done["git_commit"]
        assert meta["subcommand"] == "fit"
    assert set(logged["model"]["aliases"]) == {"best", "latest"}
    assert logged["model"]["metadata"]["monitor"] == "val/ndcg@10"
    assert logged["model"]["metadata"]["score"] == done["best_checkpoint"]["score"]
    assert logged["results"]["metadata"]["status"] == "completed"


def test_test_logs_results_and_config_and_predict_its_predictions(
        runs: dict[str, Path]) -> None:
    fingerprint = results(runs["fit"])["data_fingerprint"]
    tested = by_type(runs["test"])
    assert set(tested) == {"results", "config"}  # its checkpoint is the fit run's
    predicted = by_type(runs["predict"])
    assert set(predicted) == {"predictions", "config"}  # predict writes no results.json
    art = predicted["predictions"]
    path = runs["predict"] / "predictions.parquet"
    assert art["files"]["predictions.parquet"]["digest"] == md5(path)
    assert art["metadata"]["data_fingerprint"] == fingerprint
    assert art["metadata"]["subcommand"] == "predict" and art["metadata"]["git_commit"]
    assert len(pl.read_parquet(Path(art["files"]["predictions.parquet"]["local_path"]))) > 0


# ------------------------------------------------------------------ options, interruptions
def test_options_size_the_sample_and_turn_the_checkpoint_artifact_off(tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    run = tmp_path / "mf"
    done = lit_recs("fit", *MF, "--trainer.max_epochs", "1", "--dashboard.sample_users", "5",
                    "--dashboard.top_k", "3", "--dashboard.history", "2",
                    "--dashboard.log_checkpoint", "false", "--trainer.default_root_dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    table = tables(run_file(run))["recommendations"]
    users = by_user(table)
    assert len(users) == 5 and all(len(rows) == 3 for rows in users.values())
    assert all(len(rows[0]["last_train_items"]) <= 2 for rows in users.values())
    assert set(by_type(run)) == {"results", "config"}  # no model artifact
    saved = yaml.safe_load((run / "config.yaml").read_text())["dashboard"]
    assert saved == {"sample_users": 5, "top_k": 3, "history": 2, "seed": 0,
                     "log_checkpoint": False}


def test_an_interrupted_run_says_so_in_its_summary_and_logs_no_artifacts(tmp_path: Path,
                                                                          monkeypatch) -> None:
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    run = tmp_path / "cut"
    done = lit_recs("fit", *MF, "--trainer.max_epochs", "3",
                    "--trainer.callbacks+=commands.SignalAt", "--trainer.callbacks.epoch", "1",
                    "--trainer.callbacks.batch", "2", "--trainer.default_root_dir", str(run))
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert results(run)["status"] == "interrupted"
    assert summary(run_file(run))["status"] == "interrupted"
    assert artifacts(run_file(run)) == [] and tables(run_file(run)) == {}


def test_two_processes_log_one_dashboard_from_the_first(tmp_path: Path, monkeypatch) -> None:
    """DDP (gloo, CPU): one W&B run with the tables and every artifact (the collectives at the
    end of the command are taken by both processes; predict waits for both files)."""
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    ddp = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
    run = tmp_path / "ddp"
    done = lit_recs("fit", *MF, "--trainer.max_epochs", "1", *ddp,
                    "--trainer.default_root_dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert results(run)["world_size"] == 2
    assert set(by_type(run)) == {"model", "results", "config"}
    assert len(tables(run_file(run))["recommendations"]["data"]) == 200
    assert summary(run_file(run))["status"] == "completed"
    out = tmp_path / "ddp-predict"
    done = lit_recs("predict", "--config", str(run / "config.yaml"),
                    "--ckpt_path", str(run / "checkpoints" / "best.ckpt"), *ddp,
                    "--trainer.default_root_dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    files = by_type(out)["predictions"]["files"]
    assert sorted(files) == ["predictions-rank0.parquet", "predictions-rank1.parquet"]
    for name, entry in files.items():
        assert entry["digest"] == md5(out / name)


def test_options_are_checked_and_the_callback_is_not_configured_twice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dashboard.sample_users must be >= 0"):
        WandbDashboard(sample_users=-1)
    with pytest.raises(ValueError, match="dashboard.top_k must be >= 1"):
        WandbDashboard(top_k=0)
    assert wandb.Table.MAX_ROWS == 10_000  # the limit the message states
    with pytest.raises(ValueError, match=r"2000 x 10 rows: a W&B Table keeps at most 10,000"):
        WandbDashboard(sample_users=2000)
    with pytest.raises(ValueError, match="set its options under `dashboard:`"):
        main(["fit", *POPULARITY, "--trainer.callbacks+=lit_recs.dashboard.WandbDashboard",
              "--trainer.default_root_dir", str(tmp_path / "twice")])


def test_without_a_wandb_logger_nothing_is_scored_or_logged() -> None:
    class NoData:
        @property
        def datamodule(self) -> None:
            raise AssertionError("the dashboard read the data without a WandbLogger")

    trainer = NoData()
    trainer.loggers, trainer.is_global_zero, trainer.callbacks = [], True, []
    WandbDashboard().on_test_end(trainer, SimpleNamespace())
    WandbDashboard().end_of_command(trainer, "fit", completed=True)


# ------------------------------------------------------------------ large catalogues
def test_top_items_ranks_a_large_catalogue_in_chunks_like_the_whole_ranking() -> None:
    """The sample is ranked by the evaluation's own path: chunk by chunk when the catalogue is
    large (no [B, I] block), seen items masked, held-out items kept; the same lists as the
    brute-force ranking."""
    num_items, users = 200_000, 4
    model = Popularity(num_users=users, num_items=num_items, score_cells=users * 30_000)
    model.counts.copy_(torch.rand(num_items, generator=torch.Generator().manual_seed(0)))
    best = model.counts.topk(6).indices  # [6]
    seen = torch.stack([torch.tensor([0, 0, 1, 3]), best[[0, 1, 0, 2]]])  # [2, S]
    targets = torch.stack([torch.tensor([0, 1, 2, 3]), best[[2, 3, 3, 4]]])  # [2, T]
    batch = EvalBatch(users=torch.arange(users), weights=torch.ones(users), seen=seen,
                      targets=targets)
    assert model.chunk_width(batch) == 30_000 < num_items  # the chunked path
    scores, items = top_items(model, batch, 10)  # [B, 10]
    reference = model.counts.expand(users, -1).clone()  # [B, I]
    reference[seen[0], seen[1]] = float("-inf")
    want_scores, want_items = reference.topk(10, dim=1)
    assert torch.equal(items, want_items) and torch.equal(scores, want_scores)
    assert best[2].item() in items[0].tolist()  # a held-out item is ranked, not masked
