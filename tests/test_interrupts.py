"""How a `lit-recs` run ends, through the installed command: completed, interrupted by SIGTERM or
SIGINT in the middle of an epoch (exit status, results.json, last.ckpt), continued with
`--ckpt_path last` to the same test metrics as a run never stopped, and failed (no empty folder)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from commands import lit_recs

# NeuMF with dropout: the resumed run must also restore torch's random state to match.
NEUMF = ["--config", "conf/base.yaml", "--data", "conf/data/ml-100k-loo.yaml",
         "--model", "conf/model/neumf.yaml", "--model.init_args.dropout", "0.2",
         "--trainer.callbacks.patience", "2", "--trainer.limit_train_batches", "6",
         "--trainer.max_epochs", "40", "--trainer.enable_progress_bar", "false",
         "--trainer.logger", "false"]


def interrupt_at(epoch: int, batch: int, signum: int) -> list[str]:
    return ["--trainer.callbacks+=commands.SignalAt", "--trainer.callbacks.epoch", str(epoch),
            "--trainer.callbacks.batch", str(batch), "--trainer.callbacks.signum", str(signum)]


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("full") / "run"
    proc = lit_recs("fit", *NEUMF, "--trainer.default_root_dir", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, proc.stdout + proc.stderr


def test_completed_run_says_so_prints_its_files_and_one_line_per_epoch(
        uninterrupted: tuple[Path, str]) -> None:
    run, output = uninterrupted
    done = results(run)
    assert done["status"] == "completed" and "error" not in done
    assert 3 < done["epochs"] < 40  # early stopping ended it
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert done["last_checkpoint"] == str(run / "checkpoints" / "last.ckpt")
    assert f"fit done; run folder {run}" in output
    for name in ("results.json", "config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert f"  {run / name}\n" in output, name
    lines = [line for line in output.splitlines() if "lit_recs: epoch " in line]
    assert len(lines) == done["epochs"]
    assert all("train/loss " in line and "val/ndcg@10 " in line and line.endswith(" s")
               for line in lines)
    assert "\r" not in output  # no progress bar redraws in a log
    assert "sync_dist" not in output and "configure_optimizers" not in output


def test_sigterm_mid_epoch_then_resume_matches_the_uninterrupted_run(
        uninterrupted: tuple[Path, str], tmp_path: Path) -> None:
    run = tmp_path / "cut"
    proc = lit_recs("fit", *NEUMF, "--trainer.default_root_dir", str(run),
                    *interrupt_at(2, 3, signal.SIGTERM))
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    cut = results(run)
    assert cut["status"] == "interrupted" and cut["epochs"] == 2  # two completed epochs
    assert cut["best_val"]["monitor"] == "val/ndcg@10" and cut["best_val"]["epoch"] in (0, 1)
    assert cut["best_val"]["metrics"]["val/ndcg@10"] == pytest.approx(
        cut["best_checkpoint"]["score"], abs=1e-7)
    assert not any(k.startswith("test/") for k in cut["metrics"])
    assert f"lit-recs fit --config {run / 'config.yaml'} --ckpt_path last" in proc.stderr
    # continue it: the saved config (its SignalAt moved out of reach) and the last checkpoint
    proc = lit_recs("fit", "--config", str(run / "config.yaml"), "--trainer.callbacks.epoch", "99",
                    "--ckpt_path", "last")
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed, full = results(run), results(uninterrupted[0])
    assert resumed["status"] == "completed"
    assert resumed["epochs"] == full["epochs"]  # early stopping's patience carried over
    assert resumed["best_checkpoint"]["score"] == full["best_checkpoint"]["score"]
    test = {k: v for k, v in full["metrics"].items() if k.startswith("test/")}
    assert len(test) > 20
    assert {k: resumed["metrics"][k] for k in test} == test  # bit-identical


def test_sigint_mid_epoch_exits_130_with_an_interrupted_results_file(tmp_path: Path) -> None:
    run = tmp_path / "cut"
    proc = lit_recs("fit", *NEUMF, "--trainer.default_root_dir", str(run),
                    *interrupt_at(1, 2, signal.SIGINT))
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    cut = results(run)
    assert cut["status"] == "interrupted" and cut["epochs"] == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_resume_from_last_needs_a_run_to_continue(tmp_path: Path) -> None:
    proc = lit_recs("fit", "--config", "conf/quickstart.yaml", "--ckpt_path", "last",
                    "--trainer.logger", "false")
    assert proc.returncode != 0
    assert "--ckpt_path last continues an interrupted run" in proc.stderr


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path: Path) -> None:
    run = tmp_path / "failed"
    proc = lit_recs("fit", *NEUMF, "--trainer.default_root_dir", str(run),
                    *interrupt_at(0, 1, 999))  # os.kill raises: a failure inside epoch 1
    assert proc.returncode != 0
    assert "removed its folder" in proc.stderr and not run.exists()
