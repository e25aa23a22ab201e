"""`ModelInputs`: what a DataModule hands a model besides its batches.

Some models need more from the data than batches: closed forms and iALS fit from the whole training
matrix, feature models rank the catalogue from per-user and per-item feature tables, a two-tower
model reads pre-computed item vectors and corrects its softmax by sampling probabilities. A
DataModule offers these through one public method, `model_inputs(stage) -> ModelInputs`, and
`RecModule.setup` passes them to the model's one hook, `attach_data(inputs)`, on every stage: fit,
and validate / test / predict from a checkpoint alike. In a notebook:
`model.attach_data(datamodule.model_inputs("fit"))`.

Sizes the model is built with (num_users, num_items, num_features, max_len, ...) are not here: they
are constructor arguments, linked from the DataModule by the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_recs.data.fields import FeatureTables
from lit_recs.data.interactions import Interactions


@dataclass
class ModelInputs:
    """Everything optional: a DataModule fills what it has.

    train: the training interactions (closed-form fits, iALS).
    features: per-user / per-item field slots (feature models rank the catalogue from them).
    initial_bias: where a model with a global bias starts it when fitting from scratch: the mean
        training rating (task rating) or the log-odds of a click (ctr); None for sampled labels.
    item_vectors: pre-computed item vectors [I, d] (two-tower item towers).
    sampling_probabilities: item distributions [I] of in-batch candidates (`positives`) and of
        the extra sampled negatives (`negatives`), for logQ corrections; fit only.
    """

    train: Interactions | None = None
    features: FeatureTables | None = None
    initial_bias: float | None = None
    item_vectors: np.ndarray | None = None
    sampling_probabilities: dict[str, np.ndarray] | None = None


def model_inputs(datamodule: Any, stage: str) -> ModelInputs:
    """The DataModule's `model_inputs(stage)`; nothing for one without it (a user's own
    LightningDataModule, plain dataloaders)."""
    provide = getattr(datamodule, "model_inputs", None)
    return provide(stage) if callable(provide) else ModelInputs()
