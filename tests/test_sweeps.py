"""Every W&B sweep file in conf/sweeps/ is a grid over arguments the `lit-recs` command accepts."""

from __future__ import annotations

import io
import itertools
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from lit_recs.cli import main

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "conf" / "sweeps").glob("*.yaml"))


def test_there_are_sweeps() -> None:
    models = ("ials", "neumf", "slim", "mf")
    assert {p.stem for p in SWEEPS} >= {f"{m}_loo{p}" for m in models for p in ("", "_sampled99")}


@pytest.mark.parametrize("path", SWEEPS, ids=[p.stem for p in SWEEPS])
def test_sweep_file_runs_through_the_cli(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] == "grid" and sweep["metric"]["name"].startswith("val/")
    command = sweep["command"]
    assert command[:3] == ["${env}", "lit-recs", "fit"] and command[-1] == "${args}"
    files = [command[i + 1] for i, a in enumerate(command) if a in ("--config", "--data", "--model")]
    assert files and all((REPO / f).is_file() for f in files)
    grid = [dict(zip(sweep["parameters"], combo)) for combo in itertools.product(
        *(p["values"] for p in sweep["parameters"].values()))]
    assert len(grid) >= 4
    monkeypatch.chdir(REPO)
    last = grid[-1]
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main(command[2:-1] + [f"--{k}={v}" for k, v in last.items()] + ["--print_config"])
    assert stop.value.code in (0, None)
    printed = yaml.safe_load(out.getvalue())
    for key, value in last.items():
        node = printed
        for part in key.split("."):
            node = node[part]
        assert node == (yaml.safe_load(value) if isinstance(value, str) else value), key
    # the checkpoint (whose best score the local runner reports) watches the sweep's metric
    monitors = [cb["init_args"]["monitor"] for cb in printed["trainer"]["callbacks"]
                if cb["class_path"].endswith(("ModelCheckpoint", "EarlyStopping"))]
    assert monitors and set(monitors) == {sweep["metric"]["name"]}
