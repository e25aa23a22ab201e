"""The `lit-recs` command end to end on ML-100K: results.json, checkpoints, W&B, predict, configs."""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from commands import lit_recs
from wandb_records import logged_metrics, run_config

from lit_recs.checkpoints import load_checkpoint
from lit_recs.cli import main
from lit_recs.data.datamodules import RecDataModule

REPO = Path(__file__).resolve().parents[1]
FAST = ["--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1"]


def fit(run_dir: Path, *args: str, config: str = "conf/quickstart.yaml") -> dict:
    main(["fit", "--config", str(REPO / config), "--trainer.default_root_dir", str(run_dir),
          *FAST, *args])
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        fit(run_dir, "--trainer.max_epochs", "2")
    return run_dir


def test_fit_writes_results_checkpoint_and_config(quickstart_run: Path) -> None:
    results = json.loads((quickstart_run / "results.json").read_text())
    metrics = results["metrics"]
    for key in ("test/ndcg@10", "test/hr@10", "test/mrr@10", "test/recall@10", "test/coverage@10",
                "test/sampled99/ndcg@10", "val/ndcg@10"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["test/hr@10"] >= metrics["test/ndcg@10"] > 0.0
    assert results["epochs"] == 2
    assert results["best_checkpoint"]["monitor"] == "val/ndcg@10"
    assert Path(results["best_checkpoint"]["path"]) == quickstart_run / "checkpoints" / "best.ckpt"
    assert (quickstart_run / "checkpoints" / "best.ckpt").is_file()
    assert (quickstart_run / "config.yaml").is_file()
    assert results["config"]["model"]["class_path"] == "lit_recs.models.MF"
    assert len(results["data_fingerprint"]) == 16
    assert results["timings"]["fit_s"] > 0 and results["timings"]["test_s"] > 0
    assert results["versions"]["torch"] == torch.__version__
    assert results["git_dirty"] in (True, False, None)
    assert all("still improving" in w for w in results["warnings"])  # StillImproving's, if any
    # fit ends by validating the best checkpoint: val/* and test/* describe the same epoch
    assert metrics["val/ndcg@10"] == pytest.approx(results["best_checkpoint"]["score"], abs=1e-6)


def test_wandb_offline_run_holds_test_metrics_and_run_info(quickstart_run: Path) -> None:
    files = list(quickstart_run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, "one offline W&B run inside the run folder"
    logged = logged_metrics(files[0])
    results = json.loads((quickstart_run / "results.json").read_text())["metrics"]
    for key in ("test/ndcg@10", "test/hr@10", "test/sampled99/hr@10"):
        assert logged[key] == pytest.approx(results[key], abs=1e-7)
    config = run_config(files[0])
    assert config["data_fingerprint"] == json.loads(
        (quickstart_run / "results.json").read_text())["data_fingerprint"]
    assert "git_commit" in config
    assert config["cli"]["model"]["init_args"]["dim"] == 128


def test_test_subcommand_reproduces_metrics_from_checkpoint(quickstart_run: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "test-run"
    main(["test", "--config", str(quickstart_run / "config.yaml"),
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    again = json.loads((out / "results.json").read_text())["metrics"]
    first = json.loads((quickstart_run / "results.json").read_text())["metrics"]
    for key in ("test/ndcg@10", "test/hr@20", "test/sampled99/ndcg@10"):
        assert again[key] == pytest.approx(first[key], abs=1e-7)


def test_command_line_model_options_apply_to_a_saved_checkpoint(quickstart_run: Path,
                                                                tmp_path: Path) -> None:
    """Lightning would refill the model's arguments from the checkpoint over the command line;
    lit_recs keeps the command line, so evaluation options such as mask_seen take effect."""
    out = tmp_path / "unmasked"
    main(["test", "--config", str(quickstart_run / "config.yaml"),
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--model.init_args.mask_seen", "false",
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["init_args"]["mask_seen"] is False
    masked = json.loads((quickstart_run / "results.json").read_text())["metrics"]
    assert results["metrics"]["test/ndcg@10"] < masked["test/ndcg@10"]  # seen items now compete


def test_checkpoint_hyperparameters_fill_in_when_no_model_is_given(quickstart_run: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "from-ckpt"
    main(["test", "--data", str(REPO / "conf" / "data" / "ml-100k.yaml"),
          "--model", "lit_recs.models.MF",
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    results = json.loads((out / "results.json").read_text())
    first = json.loads((quickstart_run / "results.json").read_text())
    assert results["config"]["model"]["init_args"]["dim"] == first["config"]["model"]["init_args"]["dim"]
    assert results["metrics"]["test/ndcg@10"] == pytest.approx(first["metrics"]["test/ndcg@10"],
                                                               abs=1e-7)


def test_predict_writes_unseen_top_k_with_raw_ids(quickstart_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict-run"
    main(["predict", "--config", str(quickstart_run / "config.yaml"),
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false"])
    pred = pl.read_parquet(out / "predictions.parquet")
    assert pred.columns == ["user", "rank", "item", "score"]
    assert pred["user"].n_unique() == 943 and len(pred) == 943 * 20
    per_user = pred.group_by("user").agg(pl.col("score").diff().max().alias("d"))
    assert (per_user["d"] <= 0).all(), "lists are sorted by score"
    dm = RecDataModule(dataset="ml-100k")  # same split defaults as the quickstart's data
    seen = set(zip(dm.data.user_ids[dm.data.users].tolist(), dm.data.item_ids[dm.data.items].tolist()))
    assert not seen & set(zip(pred["user"].to_list(), pred["item"].to_list()))


def rescore(lists: dict[object, list[object]], held_out: dict[object, set[object]], k: int
            ) -> dict[str, float]:
    """An independent evaluator (plain Python, the textbook definitions): each user's ranked list
    against their held-out items; means over the users that have held-out items."""
    sums = {"hr": 0.0, "recall": 0.0, "ndcg": 0.0, "mrr": 0.0, "precision": 0.0}
    for user, targets in held_out.items():
        ranked = lists.get(user, [])[:k]
        hits = [i for i, item in enumerate(ranked) if item in targets]
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(targets), k)))
        sums["hr"] += bool(hits)
        sums["recall"] += len(hits) / len(targets)
        sums["ndcg"] += sum(1 / math.log2(i + 2) for i in hits) / ideal
        sums["mrr"] += 1 / (hits[0] + 1) if hits else 0.0
        sums["precision"] += len(hits) / k
    return {name: value / len(held_out) for name, value in sums.items()}


def test_predict_test_ranking_rescores_to_the_test_metrics(
        quickstart_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "predict-test"
    main(["predict", "--config", str(quickstart_run / "config.yaml"),
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--data.init_args.predict_ranking", "test"])
    printed = capsys.readouterr().out  # the command names every file it wrote
    assert f"predict done; run folder {out}" in printed
    assert f"  {out / 'predictions.parquet'}" in printed and f"  {out / 'config.yaml'}" in printed
    pred = pl.read_parquet(out / "predictions.parquet").sort(["user", "rank"])
    lists = {u: g["item"].to_list() for (u,), g in pred.group_by("user", maintain_order=True)}
    dm = RecDataModule(dataset="ml-100k")  # the quickstart's split, rebuilt independently
    test = dm.splits.test
    held_out: dict[object, set[object]] = {}
    for u, i in zip(dm.data.user_ids[test.users].tolist(), dm.data.item_ids[test.items].tolist()):
        held_out.setdefault(u, set()).add(i)
    assert set(lists) == set(held_out)  # exactly the test users
    expected = json.loads((quickstart_run / "results.json").read_text())["metrics"]
    for k in (5, 10, 20):
        for name, value in rescore(lists, held_out, k).items():
            assert value == pytest.approx(expected[f"test/{name}@{k}"], abs=1e-6), (name, k)


def test_user_model_outside_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "my_models.py"
    module.write_text(textwrap.dedent("""
        from lit_recs import losses
        from lit_recs.models import MF

        CALLS = []

        class MyMF(MF):
            def compute_loss(self, batch):
                CALLS.append(len(batch))
                pos = self.net(batch.users, batch.pos_items[:, None])
                neg = self.net(batch.users, batch.neg_items)
                return losses.hinge(pos, neg, margin=0.5)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    results = fit(run, "--model.class_path", "my_models.MyMF", "--model.init_args.dim", "8",
                  "--trainer.limit_train_batches", "3", "--trainer.logger", "false")
    import my_models

    assert my_models.CALLS == [1024, 1024, 1024]
    assert results["config"]["model"]["class_path"] == "my_models.MyMF"
    assert results["metrics"]["test/ndcg@10"] > 0


ROW_DATA = {"ml-100k-rows.yaml"}  # batches of user rows (RowBatch)
ROW_MODELS = {"slim_gradient.yaml"}  # models that train on them
SEQ_DATA = {"ml-100k-seq.yaml"}  # Cloze batches of sequences (ClozeBatch)
SEQ_MODELS = {"bert4rec.yaml"}  # models that train on them
NEXT_DATA = {"ml-100k-seq-next.yaml"}  # next-item batches of sequences (NextItemBatch)
NEXT_MODELS = {"sasrec.yaml"}  # models that train on them
FROM_SPLIT = {"popularity.yaml", "ease.yaml", "itemknn.yaml", "slim.yaml",  # fitted from the split
               "ials.yaml"}
FEATURE_DATA = {"ml-100k-ctr.yaml": "ctr.yaml", "ml-100k-rating.yaml": "rating.yaml",
                "ml-100k-fm-topn.yaml": None}  # field-encoded rows (FeatureBatch): trainer config
FEATURE_MODELS = {"fm.yaml", "ffm.yaml"}
TOWER_DATA = {"ml-100k-two-tower.yaml": None, "ml-100k-dssm-ctr.yaml": "ctr.yaml"}  # TowerBatch
TOWER_MODELS = {"two_tower.yaml", "dssm.yaml"}
TRAINER_OF = {**FEATURE_DATA, **TOWER_DATA}


def _compatible(data: str, model: str) -> bool:
    if data in TOWER_DATA or model in TOWER_MODELS:
        return data in TOWER_DATA and model in TOWER_MODELS
    if data in FEATURE_DATA or model in FEATURE_MODELS:
        return data in FEATURE_DATA and model in FEATURE_MODELS
    if model in FROM_SPLIT:
        return data not in SEQ_DATA | NEXT_DATA or model == "popularity.yaml"  # one closed-form run
    return ((data in ROW_DATA) == (model in ROW_MODELS) and (data in SEQ_DATA) == (model in SEQ_MODELS)
            and (data in NEXT_DATA) == (model in NEXT_MODELS))


CONFIG_PAIRS = [
    (data, model)
    for data in sorted(p.name for p in (REPO / "conf" / "data").glob("*.yaml"))
    for model in sorted(p.name for p in (REPO / "conf" / "model").glob("*.yaml"))
    if _compatible(data, model)
]


def test_every_config_file_is_in_a_smoke_run() -> None:
    used = {name for pair in CONFIG_PAIRS for name in pair}
    files = {p.name for d in ("data", "model") for p in (REPO / "conf" / d).glob("*.yaml")}
    assert files == used
    trainers = {p.name for p in (REPO / "conf" / "trainer").glob("*.yaml")}
    assert trainers == {t for t in TRAINER_OF.values() if t} | {SELECTION_TRAINER}


SELECTION_TRAINER = "sampled99.yaml"  # selects on the sampled protocol: its own test below


def test_sampled_trainer_config_checkpoints_and_stops_on_the_sampled_protocol(tmp_path: Path) -> None:
    main(["fit", "--config", str(REPO / "conf" / "base.yaml"),
          "--config", str(REPO / "conf" / "trainer" / SELECTION_TRAINER),
          "--data", str(REPO / "conf" / "data" / "ml-100k-loo.yaml"),
          "--model", str(REPO / "conf" / "model" / "gmf.yaml"), "--trainer.callbacks.patience", "3",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
          "--trainer.limit_train_batches", "2", *FAST])
    states = load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["callbacks"]
    ckpt = next(v for k, v in states.items() if k.startswith("ModelCheckpoint"))
    stop = next((k, v) for k, v in states.items() if k.startswith("EarlyStopping"))
    assert ckpt["monitor"] == "val/sampled99/ndcg@10"
    assert "val/sampled99/ndcg@10" in stop[0] and stop[1]["patience"] == 3
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    assert float(ckpt["best_model_score"]) == pytest.approx(metrics["val/sampled99/ndcg@10"])
    assert 0 < metrics["test/sampled99/ndcg@10"] <= 1


@pytest.mark.parametrize(("data", "model"), CONFIG_PAIRS)
def test_every_config_runs(data: str, model: str, tmp_path: Path) -> None:
    trainer = TRAINER_OF.get(data)
    extra = ["--config", str(REPO / "conf" / "trainer" / trainer)] if trainer else []
    main(["fit", "--config", str(REPO / "conf" / "base.yaml"), *extra,
          "--data", str(REPO / "conf" / "data" / data), "--model", str(REPO / "conf" / "model" / model),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
          "--trainer.limit_train_batches", "2", *FAST])
    metrics = json.loads((tmp_path / "results.json").read_text())["metrics"]
    if trainer == "ctr.yaml":
        assert 0.5 < metrics["test/auc"] < 1 and np.isfinite(metrics["test/logloss"])
    elif trainer == "rating.yaml":
        assert 0 < metrics["test/rmse"] < 1.5 and np.isfinite(metrics["test/mae"])
    else:
        assert np.isfinite(metrics["test/ndcg@10"]) and metrics["test/hr@10"] > 0


def test_missing_dataset_stops_at_once_with_the_url_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib.error
    import urllib.request

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(Exception) as err:
        fit(tmp_path / "run", "--data.init_args.data_dir", str(tmp_path / "empty"))
    text = str(err.value)
    assert "files.grouplens.org" in text and str(tmp_path / "empty") in text


def test_console_script_is_installed() -> None:
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "lit-recs").is_file()


def test_readme_model_example_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'Adding a model' code in the README runs as written through the CLI."""
    text = (REPO / "README.md").read_text()
    code = text.split("## Adding a model", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    (tmp_path / "readme_model.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    results = fit(tmp_path / "run", "--data", str(REPO / "conf" / "data" / "ml-100k.yaml"),
                  "--model.class_path", "readme_model.ItemBiasOnly", "--trainer.logger", "false",
                  config="conf/base.yaml")
    assert results["metrics"]["test/hr@10"] > 0.2  # an item-popularity-like model, far from random


def test_evaluating_a_run_from_its_config_never_overwrites_it(quickstart_run: Path) -> None:
    before = (quickstart_run / "results.json").read_text()
    main(["test", "--config", str(quickstart_run / "config.yaml"),
          "--ckpt_path", str(quickstart_run / "checkpoints" / "best.ckpt"),
          "--trainer.enable_progress_bar", "false"])
    assert (quickstart_run / "results.json").read_text() == before
    nested = list(quickstart_run.glob("test-*/results.json"))
    assert len(nested) == 1
    again = json.loads(nested[0].read_text())["metrics"]
    first = json.loads(before)["metrics"]
    assert again["test/ndcg@10"] == pytest.approx(first["test/ndcg@10"], abs=1e-7)
    assert list(nested[0].parent.glob("wandb/offline-run-*/run-*.wandb")), "W&B files beside it"


def test_run_folder_is_shared_by_every_process_of_a_job(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    from lit_recs.cli import run_folder

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc123")  # torchrun: no parent process to ask
    assert run_folder(None, "lit_recs.models.MF", "fit") == "runs/mf-jobabc123"
    assert run_folder(None, "lit_recs.models.MF", "fit") == run_folder(None, "x.MF", "fit")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    first, second = run_folder(None, "x.MF", "fit"), run_folder(None, "x.MF", "fit")
    assert first != second and first.startswith("runs/mf-")
    (tmp_path / "results.json").write_text("{}")
    assert run_folder(str(tmp_path), "x.MF", "fit") == str(tmp_path)
    assert Path(run_folder(str(tmp_path), "x.MF", "predict")).parent == tmp_path


def test_free_heap_is_released_with_glibc() -> None:
    from lit_recs.runtime import release_free_heap

    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    _ = [bytearray(1 << 16) for _ in range(2000)]  # 128 MB in small blocks, then freed
    del _
    assert release_free_heap() is glibc


FAULTS = """
import resource, sys
import numpy as np
from lit_recs.runtime import hold_freed_memory
if sys.argv[1] == "hold":
    assert hold_freed_memory(mmap_threshold=64 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    block = np.ones(48 << 17)  # 48 MB written, then freed
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_held_freed_memory_is_reused_without_page_faults() -> None:
    """With glibc's defaults every 48 MB block is mmapped afresh and faulted in page by page; with
    hold_freed_memory the freed block stays in the heap and the next one reuses it."""
    from lit_recs.runtime import hold_freed_memory

    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        assert not hold_freed_memory()  # mallopt is glibc's
        return
    faults = {mode: int(subprocess.run([sys.executable, "-c", FAULTS, mode], check=True,
                                       capture_output=True, text=True).stdout)
              for mode in ("hold", "default")}
    assert faults["hold"] * 3 < faults["default"], faults


def test_an_integer_batch_limit_is_a_count_of_batches_through_the_command(tmp_path: Path) -> None:
    """`--trainer.limit_val_batches 1` is one batch (Lightning's meaning of an int), not 1.0 =
    every batch: the Trainer types the option float-first and the CLI used to parse 1 as 1.0."""
    run_dir = tmp_path / "run"
    done = lit_recs("fit", "--config", "conf/quickstart.yaml", "--trainer.logger", "false",
                    *FAST, "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches",
                    "1", "--trainer.limit_test_batches", "0.5",
                    "--trainer.callbacks+=commands.CountBatches",
                    "--trainer.default_root_dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    trainer = results["config"]["trainer"]
    assert (trainer["limit_train_batches"], trainer["limit_val_batches"]) == (2, 1)
    assert isinstance(trainer["limit_val_batches"], int)  # JSON keeps 1.0 a float
    assert trainer["limit_test_batches"] == 0.5 and isinstance(trainer["limit_test_batches"], float)
    assert results["global_steps"] == 2
    test_users = results["data_summary"]["split"]["test"]["users"]
    all_batches = math.ceil(test_users / results["config"]["data"]["init_args"]["eval_batch_size"])
    counts = json.loads((run_dir / "batches.json").read_text())
    # validation: 1 batch after the epoch + 1 when fit validates the best checkpoint
    assert counts == {"val": 2, "test": max(1, int(all_batches * 0.5))}


@pytest.mark.parametrize("flush", [True, False])
def test_the_command_flushes_subnormal_floats_on_every_torch_thread(flush: bool,
                                                                   tmp_path: Path) -> None:
    """Subnormal weights (left by weight decay) slow CPU products up to 10x: the command treats
    them as zero on all of torch's threads unless `--flush_denormal false`."""
    run_dir = tmp_path / "run"
    done = lit_recs("fit", "--config", "conf/quickstart.yaml", "--trainer.logger", "false",
                    *FAST, "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches",
                    "1", "--trainer.limit_test_batches", "1", "--torch_num_threads", "2",
                    "--flush_denormal", str(flush).lower(),
                    "--trainer.callbacks+=commands.SubnormalsFlushed",
                    "--trainer.default_root_dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads((run_dir / "subnormals.json").read_text())
    assert seen == {"flushed": flush, "threads": 2}
