"""Checkpoints are read weights-only: a crafted pickle runs nothing, a corrupt file gets a clear error
naming it, and the checkpoints lit_recs writes (dense, sparse, optimizer and loop states) still load.

`write_evil_checkpoint` is for other tests too (the CLI's `--ckpt_path`): its payload creates a
marker file when unpickled, so "the marker does not exist" proves nothing ran.
"""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import lightning
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lit_recs.callbacks import StillImproving
from lit_recs.checkpoints import (
    CheckpointError,
    SafeCheckpointIO,
    UnsafeCheckpointError,
    checkpoint_weights,
    load_checkpoint,
)
from lit_recs.data.datamodules import NegativeSamplingDataModule
from lit_recs.data.datasets import Synthetic
from lit_recs.models import SLIM, NeuMF

UNREADABLE = "is not a readable lit_recs/Lightning checkpoint"


class _RunsCode:
    """Unpickling this object calls `exec`, which creates `marker`: what a crafted file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def _lookalike(marker: Path) -> dict[str, object]:
    """A Lightning-shaped checkpoint with the payload in hyper_parameters (which the CLI reads)."""
    return {"state_dict": {"net.gmf_user.weight": torch.zeros(5, 4)}, "epoch": 0,
            "pytorch-lightning_version": lightning.__version__,
            "hyper_parameters": {"gmf_dim": 4, "payload": _RunsCode(marker)}}


def write_evil_checkpoint(path: Path, marker: Path) -> None:
    """A `.ckpt` like Lightning's (a torch.save zip archive) whose unpickling creates `marker`."""
    torch.save(_lookalike(marker), path)


def write_evil_pickle(path: Path, marker: Path) -> None:
    """The same payload as a plain pickle (no zip archive around it)."""
    with path.open("wb") as f:
        pickle.dump({"hyper_parameters": {"payload": _RunsCode(marker)}}, f)


EVIL = {"torch.save archive": write_evil_checkpoint, "plain pickle": write_evil_pickle}


def _unsafe_load(path: Path) -> object:
    """What loading used to do (`weights_only=False`): for the control test only."""
    if zipfile.is_zipfile(path):
        return torch.load(path, weights_only=False)
    with path.open("rb") as f:
        return pickle.load(f)  # noqa: S301 - deliberately unsafe, on a file this test wrote


@pytest.mark.parametrize("kind", sorted(EVIL))
def test_the_crafted_checkpoint_runs_code_when_unpickled(kind: str, tmp_path: Path) -> None:
    """Control: the payload is live, so the marker's absence in the other tests means something."""
    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    EVIL[kind](path, marker)
    _unsafe_load(path)
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(EVIL))
def test_crafted_checkpoint_is_refused_and_runs_nothing(kind: str, tmp_path: Path) -> None:
    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    EVIL[kind](path, marker)
    with pytest.raises(UnsafeCheckpointError, match=rf"Refused to load {re.escape(str(path))}: "
                       rf"it {UNREADABLE}, and loading it would run code \(it names builtins.exec"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refused_even_when_torch_is_told_to_unpickle(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off weights-only loads that do not ask for it."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    write_evil_checkpoint(path, marker)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("tower", ["pretrained_gmf", "pretrained_mlp"])
def test_neumf_pretrained_tower_refuses_a_crafted_checkpoint(tower: str, tmp_path: Path) -> None:
    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    write_evil_checkpoint(path, marker)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path))):
        NeuMF(5, 30, gmf_dim=4, mlp_dims=(8, 6, 4), **{tower: str(path)})
    assert not marker.exists()


@pytest.mark.parametrize("weights_only", [None, False])
def test_trainer_with_safe_io_refuses_a_crafted_checkpoint(weights_only: bool | None,
                                                           tmp_path: Path) -> None:
    """Lightning's `ckpt_path` through SafeCheckpointIO, even when asked for weights_only=False."""
    path, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    write_evil_checkpoint(path, marker)
    dm = datamodule()
    model = NeuMF(dm.num_users, dm.num_items, gmf_dim=4, mlp_dims=())
    with pytest.raises(UnsafeCheckpointError, match=re.escape(str(path))):
        trainer(tmp_path).validate(model, datamodule=dm, ckpt_path=path,
                                   weights_only=weights_only)
    assert not marker.exists()


# ------------------------------------------------------------------ corrupt files
def _torch_file(path: Path) -> bytes:
    torch.save({"state_dict": {"w": torch.arange(64.0)}, "epoch": 0}, path)
    return path.read_bytes()


def _truncated(path: Path) -> None:
    data = _torch_file(path)
    path.write_bytes(data[: len(data) // 2])


def _bit_flip(path: Path) -> None:
    data = bytearray(_torch_file(path))
    data[data.find(torch.tensor([40.0]).numpy().tobytes())] ^= 0xFF  # inside the tensor's bytes
    path.write_bytes(bytes(data))


def _foreign_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a checkpoint")


def _damaged_pickle(path: Path) -> None:
    """A torch archive whose data.pkl (with a valid CRC) stops half-way."""
    _torch_file(path)
    with zipfile.ZipFile(path) as archive:
        entries = {n: archive.read(n) for n in archive.namelist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data[: len(data) // 2] if name.endswith("data.pkl") else data)


CORRUPT: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (_truncated, "it is a damaged or truncated zip archive"),
    "empty": (lambda p: p.write_bytes(b""), "the file is empty"),
    "random bytes": (lambda p: p.write_bytes(random.Random(0).randbytes(512)),
                     "it is neither a zip archive nor a pickle"),
    "plain pickle": (lambda p: p.write_bytes(pickle.dumps({"state_dict": {}, "epoch": 3})),
                     "it is a plain pickle, not a torch.save zip archive"),
    "foreign zip": (_foreign_zip, r"it is a zip archive but not a torch.save one"),
    "flipped bit": (_bit_flip, r"it is a damaged zip archive \('ckpt/data/0' fails its checksum"),
    "damaged data.pkl": (_damaged_pickle, "it is a torch.save archive whose data.pkl is damaged"),
    "not a dict": (lambda p: torch.save([1, 2], p), "it holds a list, not a dict"),
    "directory": (lambda p: p.mkdir(), "it is a directory, not a file"),
    "missing": (lambda p: None, "no such file"),
}


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_file_gets_a_clear_error_naming_it(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "ckpt"
    write, reason = CORRUPT[kind]
    write(path)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} {UNREADABLE}: {reason}"
                       ) as caught:
        load_checkpoint(path)
    assert not isinstance(caught.value, UnsafeCheckpointError)
    assert isinstance(caught.value, FileNotFoundError) == (kind == "missing")


@pytest.mark.parametrize("kind", ["truncated", "plain pickle"])
def test_neumf_pretrained_tower_names_a_corrupt_file(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "gmf.ckpt"
    CORRUPT[kind][0](path)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} {UNREADABLE}"):
        NeuMF(5, 30, gmf_dim=4, mlp_dims=(), pretrained_gmf=str(path))


def test_checkpoint_without_weights_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gmf.ckpt"
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))} {UNREADABLE}: it has no "
                       rf"state_dict"):
        checkpoint_weights(path)


# ------------------------------------------------------------------ real checkpoints still load
def datamodule() -> NegativeSamplingDataModule:
    data = Synthetic(num_users=40, num_items=30, interactions_per_user=8, seed=2)
    return NegativeSamplingDataModule(dataset=data, batch_size=64, eval_batch_size=16,
                                      sampled_negatives=10)


def trainer(root: Path, max_epochs: int = 1) -> Trainer:
    """Checkpoints on val/ndcg@10 with Lightning's and lit_recs' stateful callbacks."""
    monitor = {"monitor": "val/ndcg@10", "mode": "max"}
    return Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                   enable_model_summary=False, use_distributed_sampler=False,
                   num_sanity_val_steps=0, accelerator="cpu", default_root_dir=root,
                   plugins=[SafeCheckpointIO()],
                   callbacks=[ModelCheckpoint(dirpath=root, filename="best", **monitor),
                              EarlyStopping(**monitor), StillImproving(**monitor)])


def _plateau(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max")


MODELS: dict[str, Callable[[int, int], LightningModule]] = {
    # tuples in hyper_parameters, Adam state, a scheduler
    "NeuMF": lambda u, i: NeuMF(u, i, gmf_dim=4, mlp_dims=(8, 4), lr_scheduler=_plateau),
    "SLIM": lambda u, i: SLIM(u, i, l1=0.1, l2=1.0),  # a sparse buffer
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trained_checkpoint_loads_weights_only(name: str, tmp_path: Path) -> None:
    dm = datamodule()
    torch.manual_seed(0)
    model = MODELS[name](dm.num_users, dm.num_items)
    fitted = trainer(tmp_path)
    fitted.fit(model, datamodule=dm)
    fitted.save_checkpoint(tmp_path / "fitted.ckpt")  # what ModelCheckpoint writes (and SLIM too)
    checkpoint = load_checkpoint(tmp_path / "fitted.ckpt")
    assert checkpoint["state_dict"].keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][key].to_dense(), value.to_dense()), key
    assert checkpoint["hyper_parameters"]["top_k"] == (5, 10, 20)
    assert any(k.startswith("ModelCheckpoint") for k in checkpoint["callbacks"])
    fresh = MODELS[name](dm.num_users, dm.num_items)  # Lightning's restore, through SafeCheckpointIO
    trainer(tmp_path / "again").validate(fresh, datamodule=dm, ckpt_path=tmp_path / "fitted.ckpt",
                                         verbose=False)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key].to_dense(), value.to_dense()), key


def test_fit_resumes_optimizer_scheduler_and_loops_through_safe_io(tmp_path: Path) -> None:
    dm = datamodule()
    torch.manual_seed(0)
    trainer(tmp_path).fit(MODELS["NeuMF"](dm.num_users, dm.num_items), datamodule=dm)
    checkpoint = load_checkpoint(tmp_path / "best.ckpt")
    assert checkpoint["optimizer_states"][0]["state"] and checkpoint["lr_schedulers"]
    resumed = trainer(tmp_path / "resumed", max_epochs=2)
    resumed.fit(MODELS["NeuMF"](dm.num_users, dm.num_items), datamodule=dm,
                ckpt_path=tmp_path / "best.ckpt")
    assert resumed.current_epoch == 2
    assert resumed.global_step == 2 * checkpoint["global_step"]
