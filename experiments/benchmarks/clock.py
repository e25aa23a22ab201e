"""Shared by the benchmark scripts: training seconds per epoch, validation excluded."""

from __future__ import annotations

import time

import lightning
import torch

from lit_recs.callbacks import HeapPolicy


class EpochClock(lightning.Callback):
    """Seconds of each training epoch. Lightning runs the end-of-epoch validation inside the
    training epoch's hooks (train start, validation, train end), so its time is subtracted.

    timer: wall time by default; `time.process_time` counts this process's CPU seconds instead
    (with one torch thread: the epoch's time on a core of its own, whatever else the machine runs).
    """

    def __init__(self, timer=time.perf_counter) -> None:
        self.epoch_s: list[float] = []
        self.timer = timer

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0, self._val_s = self.timer(), 0.0

    def on_validation_start(self, trainer, pl_module) -> None:
        self._v0 = self.timer()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # inside an epoch
            self._val_s += self.timer() - self._v0

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        self.epoch_s.append(self.timer() - self._t0 - self._val_s)


def timed_fit(model, datamodule, epochs: int, precision: str = "32-true"
              ) -> tuple[list[float], lightning.Trainer]:
    """Fits `epochs` epochs on the CPU without validation, checkpoints or logs, with the C heap
    handled as `lit-recs fit` does (HeapPolicy); returns each training epoch's seconds and the
    Trainer (validate with it afterwards if needed)."""
    clock = EpochClock()
    trainer = lightning.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False,
                                limit_val_batches=0, num_sanity_val_steps=0,
                                use_distributed_sampler=False, callbacks=[clock, HeapPolicy()],
                                accelerator="cpu", precision=precision)
    trainer.fit(model, datamodule=datamodule)
    return clock.epoch_s, trainer
