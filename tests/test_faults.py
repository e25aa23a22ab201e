"""Faults and bad input a user meets at the console: options beyond the catalogue, closed-form
fits, the progress bar and repeated warnings (README, section "Faults and bad input")."""

from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import pytest
from commands import lit_recs
from test_checkpoints import write_evil_checkpoint

from lit_recs.cli import run as main
from lit_recs.data import datamodules
from lit_recs.models import MF

REPO = Path(__file__).resolve().parents[1]


def test_top_k_beyond_the_catalogue_is_refused_at_setup() -> None:
    with pytest.raises(ValueError, match=r"top_k: .*num_items=1,682.*\[10, 5000\]"):
        MF(num_users=943, num_items=1682, top_k=[10, 5000]).setup("fit")
    with pytest.raises(ValueError, match="positive"):
        MF(num_users=943, num_items=1682, top_k=[0, 10])
    MF(num_users=943, num_items=1682, top_k=[1, 1682]).setup("fit")


def test_top_k_beyond_the_catalogue_stops_the_command_within_seconds(tmp_path: Path) -> None:
    proc = lit_recs("fit", "--config", "conf/quickstart.yaml", "--trainer.logger", "false",
                    "--model.init_args.top_k", "[10, 5000]",
                    "--trainer.default_root_dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode != 0 and "top_k: every cut-off must be in [1, num_items=1,682]" in \
        proc.stderr
    assert not (tmp_path / "run").exists()  # a failed run leaves no folder


def test_closed_form_fit_uses_no_training_batches_warns_nothing_and_shows_the_monitored_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    build = datamodules.PairDataset.__getitem__
    monkeypatch.setattr(datamodules.PairDataset, "__getitem__",
                        lambda self, key: built.append(key) or build(self, key))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", "--config", str(REPO / "conf" / "base.yaml"),
              "--data", str(REPO / "conf" / "data" / "ml-100k-loo.yaml"),
              "--model", str(REPO / "conf" / "model" / "popularity.yaml"),
              "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
                    "--test_after_fit", "false"])
    assert len(built) == 1  # Lightning's one no-op step, not an epoch of ~100 batches
    texts = [str(w.message) for w in caught]
    assert not [t for t in texts if "returned `None`" in t or "sync_dist" in t], texts
    # the progress bar (TQDM or Rich) shows the metric that checkpointing watches
    assert "val/ndcg@10" in cli.trainer.progress_bar_metrics
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    warned = json.loads((tmp_path / "results.json").read_text())["warnings"]  # the split's ties
    assert any("have their last two events at the same timestamp" in w for w in warned), warned


@pytest.mark.parametrize("subcommand", ["test", "fit"])
def test_the_command_refuses_a_crafted_checkpoint_and_runs_nothing(subcommand: str,
                                                                   tmp_path: Path) -> None:
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    write_evil_checkpoint(evil, marker)
    where = ["--ckpt_path", str(evil)] if subcommand == "test" else \
        ["--model", "conf/model/neumf.yaml", "--model.init_args.pretrained_gmf", str(evil)]
    proc = lit_recs(subcommand, "--config", "conf/quickstart.yaml", "--trainer.logger", "false",
                    "--trainer.default_root_dir", str(tmp_path / "run"), *where, timeout=120)
    assert proc.returncode != 0
    assert f"Refused to load {evil}" in proc.stderr and "would run code" in proc.stderr
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_the_command_names_a_corrupt_checkpoint(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"PK\x03\x04 cut short")
    proc = lit_recs("test", "--config", "conf/quickstart.yaml", "--trainer.logger", "false",
                    "--ckpt_path", str(broken), timeout=120)
    assert proc.returncode != 0
    assert f"{broken} is not a readable lit_recs/Lightning checkpoint" in proc.stderr


def test_ci_runs_the_readme_test_command_as_written() -> None:
    """.ci/run takes its test command from the README's line that ends in `# tests`."""
    ci = (REPO / ".ci" / "run").read_text()
    pick = next(line for line in ci.splitlines() if line.startswith("TEST_COMMAND="))
    found = subprocess.run(["bash", "-c", f"{pick}; echo \"$TEST_COMMAND\""], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == 'pip install -e ".[dev]" && pytest'
    assert f"{found}                                  # tests" in (REPO / "README.md").read_text()
    assert 'eval "$TEST_COMMAND"' in ci
