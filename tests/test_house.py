"""The house rules that keep models easy to write and to read (issue 17), as tests:

- the maths, losses, metrics and the data's batches / sampling never import Lightning;
- every model is at most two project classes below LightningModule (RecModule, then at most one
  of ClosedFormModule / FeatureModule);
- every trainable model keeps its maths in `self.net`, a plain torch module;
- models reach the data only through `attach_data`, and never read private Lightning state.
"""

from __future__ import annotations

import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule
from torch import Tensor

import lit_recs
import lit_recs.models as models
import lit_recs.nn
from lit_recs.data.fields import FeatureTables
from lit_recs.models.base import RecModule

PACKAGE = Path(lit_recs.__file__).parent
LIGHTNING_FREE = [
    "lit_recs.losses", "lit_recs.metrics", "lit_recs.runtime",
    "lit_recs.data.batches", "lit_recs.data.sampling", "lit_recs.data.tokens",
    "lit_recs.data.inputs", "lit_recs.data.fields", "lit_recs.data.interactions",
    "lit_recs.data.splits", "lit_recs.data.datasets",
] + [f"lit_recs.nn.{m.name}" for m in pkgutil.iter_modules(lit_recs.nn.__path__)]


def test_maths_losses_metrics_and_batches_do_not_import_lightning() -> None:
    code = ("import importlib, sys\n"
            f"for name in {LIGHTNING_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = [k for k in sys.modules if k == 'lightning' or k.startswith('lightning.')\n"
            "           or k.startswith('pytorch_lightning')]\n"
            "    assert not bad, (name, bad[:3])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(LIGHTNING_FREE) > 15  # every lit_recs.nn module is in the list


def model_classes() -> list[type[RecModule]]:
    found = [getattr(models, name) for name in models.__all__]
    return [c for c in found if inspect.isclass(c) and issubclass(c, RecModule)
            and c.__module__ != "lit_recs.models.base" and c.__name__ != "FeatureModule"]


def project_bases(cls: type) -> list[type]:
    """The lit_recs classes between cls and LightningModule in its MRO (cls excluded)."""
    mro = cls.__mro__
    below = mro[1:mro.index(LightningModule)]
    return [c for c in below if c.__module__.startswith("lit_recs.")]


def test_every_model_is_at_most_two_project_classes_below_lightning() -> None:
    classes = model_classes()
    assert len(classes) >= 12, [c.__name__ for c in classes]
    deep = {c.__name__: [b.__name__ for b in project_bases(c)] for c in classes
            if len(project_bases(c)) > 2}
    assert not deep, deep
    assert [b.__name__ for b in project_bases(models.FM)] == ["FeatureModule", "RecModule"]


def tiny_tables() -> FeatureTables:
    from lit_recs.data.fields import encode_fields
    from lit_recs.data.interactions import Interactions
    data = Interactions.from_raw(np.array([0, 1, 2, 0]), np.array([0, 1, 2, 3]))
    return encode_fields(data, categorical=["user_id", "item_id"])


def build(cls: type[RecModule]) -> RecModule:
    sizes = {"num_users": 3, "num_items": 4}
    params = inspect.signature(cls.__init__).parameters
    if "num_features" in params:
        tables = tiny_tables()
        sizes.update(num_features=tables.num_features, num_fields=tables.num_fields)
    return cls(**sizes)


TRAINED = ["MF", "NeuMF", "FM", "FFM", "TwoTower", "BERT4Rec", "SASRec", "SLIMGradient", "IALS"]


@pytest.mark.parametrize("name", TRAINED)
def test_trainable_models_keep_their_maths_in_a_plain_torch_net(name: str) -> None:
    model = build(getattr(models, name))
    net = model.net
    assert isinstance(net, torch.nn.Module) and not isinstance(net, LightningModule)
    weights = [k for k, _ in model.named_parameters()] + \
        [k for k, _ in model.named_buffers() if not k.startswith(("metrics.", "row_metrics."))]
    outside = [k for k in weights if not k.startswith("net.")]
    assert weights and not outside, outside


def test_every_trainable_model_is_listed_above() -> None:
    with_weights = {c.__name__ for c in model_classes()
                    if any(True for _ in build(c).parameters())}
    assert with_weights <= set(TRAINED), with_weights - set(TRAINED)


def test_models_reach_the_data_and_lightning_only_through_public_hooks() -> None:
    """No model file reads the DataModule (`trainer.datamodule`) or private Lightning state
    (`trainer._...`): what a model needs from the data arrives through `attach_data`."""
    offending = {}
    for path in sorted((PACKAGE / "models").glob("*.py")):
        text = path.read_text()
        hits = re.findall(r"trainer\.datamodule|trainer\._\w+|_logger_connector", text)
        if path.name == "base.py":  # the one link: RecModule.setup hands the inputs over
            hits = [h for h in hits if h != "trainer.datamodule"]
            assert text.count("trainer.datamodule") == 1
        if hits:
            offending[path.name] = hits
    assert not offending, offending


# ------------------------------------------------------------------ the two data / cache hooks
def test_attach_data_runs_on_every_stage_and_precompute_once_per_evaluation_epoch(
        tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    from lit_recs.data.datamodules import NegativeSamplingDataModule
    from lit_recs.data.datasets.synthetic import Synthetic

    class Counted(models.MF):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.stages: list[str] = []
            self.precomputes = 0

        def attach_data(self, inputs) -> None:
            super().attach_data(inputs)
            assert inputs.train is not None and len(inputs.train) > 0
            self.stages.append(self.trainer.state.stage.value)

        def precompute(self) -> Tensor:
            self.precomputes += 1
            return self.net.item.weight  # [I, D]

        def score(self, batch) -> Tensor:
            return self.net.user(batch.users) @ self.precomputed().T  # [B, I]

    dm = NegativeSamplingDataModule(dataset=Synthetic(num_users=60, num_items=40,
                                                              interactions_per_user=8, seed=1),
                                    split="loo", batch_size=64, eval_batch_size=16,
                                    sampled_negatives=0)
    model = Counted(dm.num_users, dm.num_items, dim=4)
    trainer = Trainer(max_epochs=2, logger=False, enable_progress_bar=False,
                      default_root_dir=tmp_path, num_sanity_val_steps=0,
                      use_distributed_sampler=False)
    trainer.fit(model, datamodule=dm)
    assert trainer.num_val_batches[0] > 1  # several batches share one precompute
    assert model.precomputes == 2  # one per validation epoch, not one per batch
    trainer.test(model, datamodule=dm, ckpt_path=trainer.checkpoint_callback.best_model_path)
    assert model.stages == ["train", "test"] and model.precomputes == 3
    assert model.precomputed() is not None  # outside a pass: computed afresh
    assert model.precomputes == 4
