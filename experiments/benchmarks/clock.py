"""Shared by the benchmark scripts: training seconds per epoch, validation excluded."""

from __future__ import annotations

import time

import lightning


class EpochClock(lightning.Callback):
    def __init__(self) -> None:
        self.epoch_s: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epoch_s.append(time.perf_counter() - self._t0)
