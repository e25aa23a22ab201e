"""Two processes (DDP, gloo on CPU) through the real `lit-recs` command: same metrics as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.accelerator", "cpu"]


def lit_recs(*args: str) -> str:
    """The installed console script, as a user runs it; a successful run must exit with 0.
    Returns what it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LIT_RECS_RUN_DIR", None)
    script = Path(sys.executable).parent / "lit-recs"
    proc = subprocess.run([str(script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "results.json").read_text())["metrics"]


RUNS = {  # config, a metric that must be there, how many test metrics at least
    "mf": (["--config", "conf/quickstart.yaml"], "test/sampled99/ndcg@10", 30),
    "bert4rec": (["--config", "conf/base.yaml", "--data", "conf/data/ml-100k-seq.yaml",
                  "--model", "conf/model/bert4rec.yaml"], "test/sampled100pop/ndcg@10", 30),
    "fm-ctr": (["--config", "conf/base.yaml", "--config", "conf/trainer/ctr.yaml",
                "--data", "conf/data/ml-100k-ctr.yaml", "--model", "conf/model/fm.yaml"],
               "test/auc", 2),  # AUC gathers every score: exact on any number of processes
    # in-batch softmax over both processes' candidates (all_gather with gradients), mixed hard
    # negatives: the HardNegativeMiner gathers its pools across processes after the epoch
    "two-tower": (["--config", "conf/base.yaml", "--data", "conf/data/ml-100k-two-tower.yaml",
                   "--model", "conf/model/two_tower.yaml",
                   "--model.init_args.loss.init_args.gather_across_devices", "true",
                   "--data.init_args.num_negatives", "1",
                   "--data.init_args.negative_distribution", "hard"],
                  "test/sampled99/ndcg@10", 30),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_two_processes_fit_and_test_like_one(name: str, tmp_path: Path) -> None:
    config, sampled_key, count = RUNS[name]
    ddp = tmp_path / "ddp"
    lit_recs("fit", *config, "--trainer.max_epochs", "1",
             "--trainer.strategy", "ddp", "--trainer.devices", "2",
             "--trainer.default_root_dir", str(ddp), *COMMON)
    results = json.loads((ddp / "results.json").read_text())
    assert results["world_size"] == 2
    ckpt = ddp / "checkpoints" / "best.ckpt"
    one = tmp_path / "one"
    lit_recs("test", "--config", str(ddp / "config.yaml"), "--ckpt_path", str(ckpt),
             "--trainer.strategy", "auto", "--trainer.devices", "1",
             "--trainer.default_root_dir", str(one), *COMMON)
    two = tmp_path / "two"
    printed = lit_recs("test", "--config", str(ddp / "config.yaml"), "--ckpt_path", str(ckpt),
                       "--trainer.strategy", "ddp", "--trainer.devices", "2",
                       "--trainer.default_root_dir", str(two), *COMMON)
    assert "sync_dist" not in printed  # the metrics are exact states: Lightning's advice is noise
    m1, m2, m_fit = metrics(one), metrics(two), metrics(ddp)
    keys = [k for k in m1 if k.startswith("test/")]
    assert len(keys) >= count and sampled_key in keys
    for key in keys:
        assert m2[key] == pytest.approx(m1[key], abs=1e-6), key
        assert m_fit[key] == pytest.approx(m1[key], abs=1e-6), key


@pytest.mark.parametrize("model", ["ease", "ials"])
def test_models_without_gradients_fit_under_ddp_like_one_process(model: str,
                                                                  tmp_path: Path) -> None:
    """Closed forms and iALS have nothing for DistributedDataParallel to reduce (torch refuses to
    wrap them): each process fits the same weights, the evaluation is sharded as for any model."""
    config = ["--config", "conf/base.yaml", "--data", "conf/data/ml-100k-loo.yaml",
              "--model", f"conf/model/{model}.yaml", "--trainer.max_epochs", "3", *COMMON]
    lit_recs("fit", *config, "--trainer.strategy", "ddp", "--trainer.devices", "2",
             "--trainer.default_root_dir", str(tmp_path / "ddp"))
    lit_recs("fit", *config, "--trainer.default_root_dir", str(tmp_path / "one"))
    assert json.loads((tmp_path / "ddp" / "results.json").read_text())["world_size"] == 2
    two, one = metrics(tmp_path / "ddp"), metrics(tmp_path / "one")
    keys = [k for k in one if k.startswith("test/")]
    assert len(keys) >= 30 and "test/sampled99/ndcg@10" in keys
    for key in keys:
        assert two[key] == pytest.approx(one[key], abs=1e-6), key
