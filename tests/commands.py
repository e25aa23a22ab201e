"""Running the installed `lit-recs` command as a user does, and a callback that sends the run a
real signal mid-epoch (a plain module, not a test file: `from commands import ...`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def lit_recs(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The console script in a subprocess (cwd: the repository); this folder is importable there,
    so `--trainer.callbacks+=commands.SignalAt` works."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    env.pop("LIT_RECS_RUN_DIR", None)
    env.pop("OMP_WAIT_POLICY", None)  # the command's own default is what the tests see
    script = Path(sys.executable).parent / "lit-recs"
    return subprocess.run([str(script), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """SIGINT as a terminal gives it: a suite started in the background (`pytest &` from a script)
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt in the command."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class SignalAt(Callback):
    """os.kill(own pid, signum) after training batch `batch` of epoch `epoch` (0-based): a signal
    in the middle of an epoch, delivered to the real process."""

    def __init__(self, epoch: int = 1, batch: int = 2, signum: int = int(signal.SIGTERM)) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: object,
                           batch: object, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class CountBatches(Callback):
    """Writes the validation and test batches the run evaluated to `batches.json` in the run
    folder (what `--trainer.limit_*_batches` really did)."""

    def __init__(self) -> None:
        self.counts = {"val": 0, "test": 0}

    def on_validation_batch_end(self, *args: object, **kwargs: object) -> None:
        self.counts["val"] += 1

    def on_test_batch_end(self, *args: object, **kwargs: object) -> None:
        self.counts["test"] += 1

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: Trainer) -> None:  # once per evaluation loop, not per batch
        path = Path(trainer.default_root_dir) / "batches.json"
        path.write_text(json.dumps(self.counts))


class SubnormalsFlushed(Callback):
    """Writes to `subnormals.json` whether the process's torch threads flush subnormal floats:
    a product over 2^20 subnormals, split between the threads, is all zeros only when every
    thread treats them as zero."""

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        import torch

        product = torch.full((1 << 20,), 1e-40) * 1.0001  # [2^20]
        path = Path(trainer.default_root_dir) / "subnormals.json"
        path.write_text(json.dumps({"flushed": bool((product == 0).all()),
                                    "threads": torch.get_num_threads()}))
