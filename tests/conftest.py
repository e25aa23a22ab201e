"""Shared test fixtures: the local MovieLens copy, an isolated run folder, offline W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("LIT_RECS_DATA", str(REPO.parent / "shared" / "datasets"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# The tests use tiny tensors: one thread is faster and immune to other jobs on a 2-core machine.
torch.set_num_threads(1)


def data_root() -> Path:
    """`$LIT_RECS_DATA` (CI: ../shared/datasets), else the shared folder beside the checkout."""
    root = Path(os.environ.get("LIT_RECS_DATA", REPO.parent / "shared" / "datasets"))
    if not (root / "ml-100k" / "u.data").is_file():
        raise FileNotFoundError(
            f"ML-100K not found under {root}: set LIT_RECS_DATA to the folder holding ml-100k/"
        )
    return root.resolve()


@pytest.fixture(scope="session")
def ml100k_root() -> Path:
    return data_root()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test: W&B offline and silent, runs written under tmp_path, data from the local copy."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    # artifacts are staged under WANDB_DATA_DIR (default ~/.local/share/wandb), cache under
    # WANDB_CACHE_DIR: both into the test's folder so no test writes outside it
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("LIT_RECS_RUN_DIR", raising=False)
