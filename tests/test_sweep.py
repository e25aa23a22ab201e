"""`lit-recs sweep`: trials in parallel equal trials one by one, resume, seeds, tables, errors.

The command tests run the installed command on a 2-point grid of MF (1 epoch on ML-100K `loo`,
W&B logger off), 2 seeds each: 4 trials of ~6 s, 2 at a time. The pure parts (draws, slots,
the per-point statistics) are checked in-process against hand-computed values.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from commands import REPO, lit_recs

from lit_recs.sweep import (
    Sweep,
    SweepError,
    check_arguments,
    grid_points,
    load_sweep,
    make_slots,
    plan,
    random_points,
    summary_rows,
)

METRIC, TEST_METRIC = "val/ndcg@10", "test/ndcg@10"
COMMAND = ["${env}", "lit-recs", "fit", "--config", "conf/base.yaml", "--data",
           "conf/data/ml-100k-loo.yaml", "--model", "conf/model/mf.yaml", "--trainer.max_epochs",
           "1", "--trainer.logger", "false", "${args}"]


def sweep_file(folder: Path, name: str = "mf.yaml", **changes: object) -> Path:
    spec = {"method": "grid", "metric": {"name": METRIC, "goal": "maximize"},
            "parameters": {"model.init_args.dim": {"values": [8, 16]}}, "command": COMMAND}
    spec.update(changes)
    path = folder / name
    path.write_text(yaml.safe_dump(spec))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def trial_folders(out: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((out / "trials").iterdir())}


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The grid (dim 8, 16) x seeds (0, 1), 2 trials at a time with 1 thread each."""
    root = tmp_path_factory.mktemp("sweep")
    path, out = sweep_file(root), root / "parallel"
    done = lit_recs("sweep", str(path), "--out", str(out), "--seeds", "0,1", "--parallel", "2",
                    "--threads", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    return path, out, done.stdout


@pytest.fixture(scope="module")
def resumed(parallel: tuple[Path, Path, str], tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[Path, dict[str, str], str]:
    """A copy of that sweep with one trial marked interrupted and one trial's folder gone, run
    again one trial at a time with 1 thread: the two rerun one by one, the others are kept."""
    path, source, _ = parallel
    out = tmp_path_factory.mktemp("resume") / "sweep"
    shutil.copytree(source, out)
    folders = trial_folders(out)
    names = list(folders)
    roles = {names[0]: "interrupted", names[1]: "missing", names[2]: "kept", names[3]: "kept"}
    record = results(folders[names[0]])
    (folders[names[0]] / "results.json").write_text(json.dumps({**record,
                                                                "status": "interrupted"}))
    shutil.rmtree(folders[names[1]])
    done = lit_recs("sweep", str(path), "--out", str(out), "--seeds", "0,1", "--parallel", "1",
                    "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return out, roles, done.stdout


def test_parallel_trials_finish_with_the_results_of_trials_run_one_by_one(
        parallel: tuple[Path, Path, str], resumed: tuple[Path, dict[str, str], str]) -> None:
    _, out, stdout = parallel
    assert "4 trials (0 already completed, 4 to run), 2 at a time" in stdout
    records = [json.loads((f / "trial.json").read_text()) for f in trial_folders(out).values()]
    spans = sorted((r["started_unix"], r["ended_unix"]) for r in records)
    assert spans[1][0] < spans[0][1]  # the second trial started before the first ended
    assert {r["env"]["OMP_NUM_THREADS"] for r in records} == {"1"}
    assert {results(f)["threads"]["torch"] for f in trial_folders(out).values()} == {1}

    alone, roles, _ = resumed
    rerun = [name for name, role in roles.items() if role != "kept"]
    records = [json.loads((alone / "trials" / n / "trial.json").read_text()) for n in rerun]
    first, second = sorted((r["started_unix"], r["ended_unix"]) for r in records)
    assert second[0] >= first[1]  # one by one
    for name in rerun:
        mine, theirs = results(alone / "trials" / name), results(out / "trials" / name)
        assert mine["status"] == theirs["status"] == "completed"
        assert mine["metrics"] == theirs["metrics"], name  # every val/* and test/* value, exactly
        assert mine["best_val"] == theirs["best_val"], name


def test_resume_keeps_completed_trials_and_reruns_interrupted_and_missing_ones(
        parallel: tuple[Path, Path, str], resumed: tuple[Path, dict[str, str], str]) -> None:
    _, source, _ = parallel
    out, roles, stdout = resumed
    assert "4 trials (2 already completed, 2 to run)" in stdout
    ran = {line.split()[1] for line in stdout.splitlines() if line.startswith("[")}
    assert ran == {name for name, role in roles.items() if role != "kept"}
    for name in (n for n, role in roles.items() if role == "kept"):
        kept, original = out / "trials" / name, source / "trials" / name
        assert (kept / "results.json").read_bytes() == (original / "results.json").read_bytes()
        assert (kept / "trial.json").read_bytes() == (original / "trial.json").read_bytes()
    assert {r["completed"] for r in read_csv(out / "summary.csv")} == {"2/2"}


def test_tables_hold_each_trial_and_the_mean_and_sd_over_seeds(
        parallel: tuple[Path, Path, str]) -> None:
    _, out, stdout = parallel
    trials = read_csv(out / "trials.csv")
    assert len(trials) == 4
    for row in trials:
        run = results(Path(row["folder"]))
        assert row["status"] == "completed"
        assert float(row[METRIC]) == run["best_val"]["metrics"][METRIC]
        assert float(row[TEST_METRIC]) == run["metrics"][TEST_METRIC]
        assert int(row["seed"]) == run["config"]["seed_everything"]
        assert int(row["model.init_args.dim"]) == run["config"]["model"]["init_args"]["dim"]
    summary = read_csv(out / "summary.csv")
    assert [r["model.init_args.dim"] for r in summary] != [] and len(summary) == 2
    means = {}
    for point in summary:
        runs = [r for r in trials if r["point"] == point["point"]]
        assert point["seeds"] == "0 1" and point["completed"] == "2/2"
        for metric in (METRIC, TEST_METRIC):
            values = [float(r[metric]) for r in runs]
            assert float(point[f"{metric} mean"]) == pytest.approx(statistics.fmean(values),
                                                                    abs=1e-15)
            assert float(point[f"{metric} sd"]) == pytest.approx(statistics.stdev(values),
                                                                  abs=1e-15)
        assert float(point["wall_s"]) == pytest.approx(sum(float(r["wall_s"]) for r in runs),
                                                       abs=0.02)
        means[point["model.init_args.dim"]] = float(point[f"{METRIC} mean"])
    best = max(means, key=means.get)
    assert [r["best"] for r in summary] == ["True", "False"]
    assert summary[0]["model.init_args.dim"] == best
    assert f"best (maximize mean {METRIC} over seeds 0 1): model.init_args.dim={best}:" in stdout
    drawn = importlib.util.find_spec("matplotlib") is not None
    assert (out / "sweep.png").is_file() == drawn
    assert ("chart: " if drawn else "chart skipped: matplotlib is not installed") in stdout


def test_report_without_matplotlib_and_the_wandb_tables_offline(
        parallel: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, source, _ = parallel
    out = tmp_path / "report"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("wandb", "sweep.png"))
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib blocked for this test')\n")
    monkeypatch.setenv("PYTHONPATH", f"{blocker.parent}:{REPO}")
    done = lit_recs("sweep", str(path), "--out", str(out), "--seeds", "0,1", "--wandb", "offline")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "0 to run" in done.stdout
    assert "chart skipped: matplotlib is not installed (matplotlib blocked for this test)" in \
        done.stdout
    assert not (out / "sweep.png").exists() and (out / "summary.csv").is_file()
    tables = {}
    for name in ("summary", "trials"):
        [file] = (out / "wandb").glob(f"offline-run-*/files/media/table/{name}_*.table.json")
        tables[name] = json.loads(file.read_text())
    summary = read_csv(out / "summary.csv")
    columns = tables["summary"]["columns"]
    assert columns == list(summary[0])
    for row, data in zip(summary, tables["summary"]["data"]):
        got = dict(zip(columns, data))
        assert got["point"] == row["point"] and got["best"] == (row["best"] == "True")
        assert got[f"{METRIC} mean"] == pytest.approx(float(row[f"{METRIC} mean"]), abs=1e-15)
    assert len(tables["trials"]["data"]) == 4


def test_a_failed_trial_is_recorded_and_the_command_exits_1(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, parameters={"data.init_args.num_negatives": {"values": [5000]}})
    out = tmp_path / "out"
    done = lit_recs("sweep", str(path), "--out", str(out))
    assert done.returncode == 1
    [trial] = read_csv(out / "trials.csv")
    assert trial["status"] == "failed" and trial[METRIC] == ""
    assert "FAILED (exit 1)" in done.stdout and "num_negatives=5000" in \
        (Path(trial["folder"]) / "trial.log").read_text()
    assert f"1 trial(s) did not complete: {trial['folder']}; run the same command again" in \
        done.stderr
    [point] = read_csv(out / "summary.csv")
    assert point["completed"] == "0/1" and point["best"] == "False"


def test_sigterm_stops_the_running_trials_and_exits_143(tmp_path: Path) -> None:
    path = sweep_file(tmp_path)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    sweep = subprocess.Popen([str(Path(sys.executable).parent / "lit-recs"), "sweep", str(path),
                              "--out", str(out), "--", "--trainer.max_epochs", "100"],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 120
    logs = []
    while time.time() < deadline and not any("epoch 1/" in log.read_text() for log in logs):
        time.sleep(0.5)
        logs = list(out.glob("trials/*/trial.log"))
    sweep.send_signal(signal.SIGTERM)
    stdout, stderr = sweep.communicate(timeout=120)
    assert sweep.returncode == 143, stderr[-3000:]
    assert "interrupted; the running trials were stopped. Run the same command again" in stderr
    [folder] = [log.parent for log in logs]
    assert results(folder)["status"] == "interrupted" and results(folder)["epochs"] >= 1


@pytest.mark.parametrize(("change", "message"), [
    ({"method": "hyperband"}, "method: 'hyperband' is not one of grid, random, bayes"),
    ({"method": "bayes"}, "method: bayes needs a W&B server"),
    ({"parameters": {"model.init_args.dimm": {"values": [8]}}},
     "parameters.model.init_args.dimm: `--model.init_args.dimm=8` is not accepted by `lit-recs "
     "fit --config conf/base.yaml"),
    ({"command": [a.replace("mf.yaml", "nope.yaml") for a in COMMAND]},
     "command: --model conf/model/nope.yaml: no such config file"),
    ({"command": COMMAND[:-1]}, "command: must run `lit-recs fit ... ${args}`"),
])
def test_bad_input_names_the_file_and_the_key(tmp_path: Path, change: dict, message: str) -> None:
    path = sweep_file(tmp_path, **change)
    done = lit_recs("sweep", str(path), "--out", str(tmp_path / "out"))
    assert done.returncode == 2
    assert f"lit-recs sweep: error: {path}: {message}" in done.stderr
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_missing_sweep_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    done = lit_recs("sweep", str(missing))
    assert done.returncode == 2 and f"lit-recs sweep: error: {missing}: no such sweep file" in \
        done.stderr


def test_random_sweep_draws_the_seeded_points_through_the_command(tmp_path: Path) -> None:
    parameters = {"model.init_args.dim": {"values": [8, 16, 32]},
                  "model.init_args.optimizer.init_args.lr": {
                      "distribution": "log_uniform_values", "min": 5e-4, "max": 5e-3}}
    path = sweep_file(tmp_path, method="random", parameters=parameters, run_cap=3)
    done = lit_recs("sweep", str(path), "--out", str(tmp_path / "out"), "--draw-seed", "7",
                    "--dry-run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "random, 3 trials (0 already completed, 3 to run)" in done.stdout
    commands = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    for command, point in zip(commands, random_points(load_sweep(path), 3, seed=7), strict=True):
        for key, value in point.items():
            assert f" --{key}={value} " in command
    assert not (tmp_path / "out").exists()  # a dry run runs and writes nothing


# ------------------------------------------------------------------------------- in-process parts
def sweep_spec(tmp_path: Path, parameters: dict, method: str = "random") -> Sweep:
    return load_sweep(sweep_file(tmp_path, method=method, parameters=parameters))


def test_values_of_the_wrong_type_and_bad_extra_arguments_are_named(tmp_path: Path) -> None:
    sweep = sweep_spec(tmp_path, {"model.init_args.dim": {"values": [8, "wide"]},
                                  "model.init_args.bias": {"values": [True, False]}}, method="grid")
    trials = plan(sweep, grid_points(sweep), [0], [], tmp_path)
    with pytest.raises(SweepError, match=r"mf\.yaml: parameters\.model\.init_args\.dim: "
                       r"`--model\.init_args\.dim=wide` is not accepted by `lit-recs fit "
                       r"--config conf/base\.yaml(.|\n)*Expected a <class 'int'>"):
        check_arguments(sweep, trials, [])
    good = sweep_spec(tmp_path, {"model.init_args.dim": {"values": [8]}}, method="grid")
    check_arguments(good, plan(good, grid_points(good), None, [], tmp_path), [])  # parses
    with pytest.raises(SweepError, match=r"the arguments after --: `--trainer\.bogus 3` are not "
                       r"accepted(.|\n)*unrecognized arguments: --trainer\.bogus 3"):
        check_arguments(good, plan(good, grid_points(good), None, [], tmp_path),
                        ["--trainer.bogus", "3"])


def test_grid_is_the_product_in_file_order(tmp_path: Path) -> None:
    sweep = sweep_spec(tmp_path, {"a": {"values": [1, 2]}, "b": {"value": "x"},
                                  "c": {"values": [0.1, 0.2]}}, method="grid")
    assert grid_points(sweep) == [{"a": a, "b": "x", "c": c} for a in (1, 2) for c in (0.1, 0.2)]
    with pytest.raises(SweepError, match=r"mf\.yaml: parameters\.d: a grid needs `values`"):
        grid_points(sweep_spec(tmp_path, {"d": {"min": 0.0, "max": 1.0}}, method="grid"))


def test_random_draw_is_seeded_bounded_and_extends(tmp_path: Path) -> None:
    sweep = sweep_spec(tmp_path, {
        "lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
        "dim": {"min": 8, "max": 64},  # ints: int_uniform
        "drop": {"min": 0.0, "max": 0.5},  # floats: uniform
        "loss": {"values": ["bpr", "bce"]},
        "model": {"parameters": {"depth": {"value": 2}}},  # nested: model.depth
    })
    points = random_points(sweep, 200, seed=3)
    assert points == random_points(sweep, 200, seed=3)
    assert points != random_points(sweep, 200, seed=4)
    assert random_points(sweep, 20, seed=3) == points[:20]  # --trials can grow and resume
    assert all(1e-4 <= p["lr"] <= 1e-1 and 0.0 <= p["drop"] <= 0.5 for p in points)
    assert {p["dim"] for p in points} <= set(range(8, 65)) and len({p["dim"] for p in points}) > 30
    assert all(isinstance(p["dim"], int) for p in points)
    assert {p["loss"] for p in points} == {"bpr", "bce"} and {p["model.depth"] for p in points} == {2}
    small = sum(p["lr"] < 1e-3 for p in points) / len(points)  # log-uniform: a third per decade
    assert 0.2 < small < 0.47
    with pytest.raises(SweepError, match=r"parameters\.x\.distribution: 'beta' is not drawn"):
        random_points(sweep_spec(tmp_path, {"x": {"distribution": "beta"}}), 1, seed=0)


def test_slots_pin_one_gpu_each_and_divide_the_threads() -> None:
    gpus = make_slots(["0", "1", "2", "3"], None, threads=16)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in gpus] == ["0", "1", "2", "3"]
    assert {s.threads for s in gpus} == {4} and {s.env["OMP_NUM_THREADS"] for s in gpus} == {"4"}
    cpus = make_slots(None, 2, threads=2)
    assert len(cpus) == 2 and {s.threads for s in cpus} == {1}
    assert all("CUDA_VISIBLE_DEVICES" not in s.env for s in cpus)
    assert make_slots(None, 4, threads=2)[0].threads == 1  # never 0
    with pytest.raises(SweepError, match="one trial runs per device"):
        make_slots(["0", "1"], 3, threads=4)
    with pytest.raises(SweepError, match="--parallel 0: needs at least 1"):
        make_slots(None, 0, threads=2)


def test_bayes_creates_the_sweep_on_the_server_and_starts_one_agent_per_gpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No W&B server here: the server's two calls are stood in for, the rest is the real path."""
    import wandb

    import lit_recs.sweep as sweep_module

    created, agents = [], []

    class Agent:
        def __init__(self, argv: list[str], env: dict[str, str]) -> None:
            agents.append((argv, env))

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(sweep_module, "wandb_online", lambda: True)
    monkeypatch.setattr(wandb, "sweep", lambda spec, project: created.append((spec, project))
                        or "abc123")
    monkeypatch.setattr(sweep_module.subprocess, "Popen", Agent)
    path = sweep_file(tmp_path, method="bayes")
    assert sweep_module.run_sweep([str(path), "--devices", "0,1", "--trials", "5"]) == 0
    assert created == [(yaml.safe_load(path.read_text()), "lit_recs")]
    assert [Path(argv[0]).name for argv, _ in agents] == ["wandb", "wandb"]
    assert [argv[1:] for argv, _ in agents] == [["agent", "--count", "3", "lit_recs/abc123"]] * 2
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in agents] == ["0", "1"]


def test_summary_selects_on_the_mean_over_seeds_and_puts_incomplete_points_last(
        tmp_path: Path) -> None:
    sweep = sweep_spec(tmp_path, {"dim": {"values": [1, 2, 3]}}, method="grid")

    def row(point: str, dim: int, seed: int, val: float | None, status: str = "completed") -> dict:
        return {"point": point, "dim": dim, "seed": seed, "status": status, METRIC: val,
                TEST_METRIC: val, "wall_s": 1.0}

    rows = [row("a", 1, 0, 0.30), row("a", 1, 1, 0.10),  # one lucky seed: mean 0.20
            row("b", 2, 0, 0.22), row("b", 2, 1, 0.20),  # the best mean, 0.21
            row("c", 3, 0, 0.40), row("c", 3, 1, None, status="failed")]  # 1 of 2 seeds
    summary = summary_rows(sweep, rows)
    assert [s["point"] for s in summary] == ["b", "a", "c"]
    assert [s["best"] for s in summary] == [True, False, False]
    assert summary[0][f"{METRIC} mean"] == pytest.approx(0.21)
    assert summary[0][f"{METRIC} sd"] == pytest.approx(statistics.stdev([0.22, 0.20]))
    assert summary[2]["completed"] == "1/2" and summary[2][f"{METRIC} sd"] is None
    minimize = Sweep(**{**sweep.__dict__, "goal": "minimize"})
    assert [s["point"] for s in summary_rows(minimize, rows)] == ["a", "b", "c"]
