"""The warning for runs that end while validation is still improving."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import EarlyStopping

from lit_recs.callbacks import StillImproving


def ended(history: list[float], stopped_epoch: int = 0, mode: str = "max") -> StillImproving:
    cb = StillImproving("val/ndcg@10", mode, last=2)
    cb.history = history
    stopper = EarlyStopping(monitor="val/ndcg@10")
    stopper.stopped_epoch = stopped_epoch
    cb.on_fit_end(SimpleNamespace(callbacks=[stopper]), None)
    return cb


def test_warns_when_the_best_evaluation_is_among_the_last() -> None:
    with pytest.warns(UserWarning, match="still improving"):
        cb = ended([0.1, 0.2, 0.25, 0.3])
    assert "evaluation 4 of 4" in cb.warning


def test_quiet_when_the_metric_peaked_earlier_or_early_stopping_fired() -> None:
    assert ended([0.1, 0.3, 0.2, 0.2, 0.25]).warning is None
    assert ended([0.1, 0.2, 0.3], stopped_epoch=3).warning is None
    assert ended([0.3]).warning is None  # a single evaluation (closed-form fits)
    assert ended([0.3, 0.2]).warning is None  # never improved after the first evaluation


def test_minimised_metrics() -> None:
    with pytest.warns(UserWarning):
        assert ended([1.0, 0.9, 0.8], mode="min").warning is not None
    assert ended([0.5, 0.9, 0.8, 0.9], mode="min").warning is None
