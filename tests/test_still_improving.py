"""The warning for runs that end on a limit while validation is still improving."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import EarlyStopping, Timer
from lightning.pytorch.trainer.states import RunningStage

from lit_recs.callbacks import StillImproving


def ended(history: list[float], stopped_epoch: int = 0, mode: str = "max", **limits: object
          ) -> StillImproving:
    cb = StillImproving("val/ndcg@10", mode, last=2)
    cb.history = history
    stopper = EarlyStopping(monitor="val/ndcg@10")
    stopper.stopped_epoch = stopped_epoch
    trainer = SimpleNamespace(**{"max_epochs": 4, "max_steps": -1, "global_step": 400,
                                 "is_global_zero": True, **limits})
    trainer.callbacks = [stopper, *limits.get("callbacks", [])]
    cb.on_fit_end(trainer, None)
    return cb


def test_warns_once_when_the_best_evaluation_is_among_the_last(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cb = ended([0.1, 0.2, 0.25, 0.3])
    assert "evaluation 4 of 4" in cb.warning and "trainer.max_epochs (4)" in cb.warning
    assert [r.getMessage() for r in caplog.records] == [cb.warning]


def test_quiet_when_the_metric_peaked_earlier_or_early_stopping_fired() -> None:
    assert ended([0.1, 0.3, 0.2, 0.2, 0.25]).warning is None
    assert ended([0.1, 0.2, 0.3], stopped_epoch=3).warning is None
    assert ended([0.3]).warning is None  # a single evaluation (closed-form fits)
    assert ended([0.3, 0.2]).warning is None  # never improved after the first evaluation


def test_minimised_metrics() -> None:
    assert ended([1.0, 0.9, 0.8], mode="min").warning is not None
    assert ended([0.5, 0.9, 0.8, 0.9], mode="min").warning is None


def test_names_the_limit_that_stopped_the_run() -> None:
    timer = Timer(duration={"seconds": 30})
    timer._start_time[RunningStage.TRAINING] = time.monotonic() - 31  # its time is up
    assert "trainer.max_time (30 s)" in ended([0.1, 0.2, 0.3], callbacks=[timer]).warning
    running = Timer(duration={"seconds": 30})
    running._start_time[RunningStage.TRAINING] = time.monotonic() - 1
    assert "trainer.max_epochs" in ended([0.1, 0.2, 0.3], callbacks=[running]).warning
    steps = ended([0.1, 0.2, 0.3], max_steps=400)
    assert "trainer.max_steps (400)" in steps.warning
    state = StillImproving()
    state.load_state_dict(ended([0.1, 0.2]).state_dict())  # the history survives a resume
    assert state.history == [0.1, 0.2]
