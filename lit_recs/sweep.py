"""`lit-recs sweep conf/sweeps/x.yaml`: run a W&B sweep file's trials on this machine, several at a
time, each a `lit-recs fit` subprocess with its own run folder.

    lit-recs sweep conf/sweeps/ials_loo.yaml                      # grid, one trial at a time
    lit-recs sweep conf/sweeps/ials_loo.yaml --seeds 0,1,2 --parallel 2 --threads 2
    lit-recs sweep conf/sweeps/ials_loo.yaml --devices 0,1,2,3    # one trial per GPU
    lit-recs sweep x.yaml --trials 20 --draw-seed 0               # method: random, 20 draws
    lit-recs sweep x.yaml -- --trainer.max_epochs 5               # added to every trial's command

What it does:
- `method: grid` runs every combination of the parameters' `values`; `method: random` draws
  `--trials` points (default: the file's `run_cap`) from the parameters' W&B distributions with a
  seeded generator (`--draw-seed`), so the same command draws the same points; `method: bayes`
  needs the W&B server's optimiser: it creates the sweep there and starts one `wandb agent` per
  slot, and refuses (naming the file) when no W&B server is reachable.
- Each point runs once per training seed (`--seeds 0,1,2` sets `--seed_everything`; without it
  the config's seed) and the pick is the best *mean* validation metric over the seeds: on ML-100K
  one seed's spread is as large as the differences between grid points. A trial's value is its
  best checkpoint's (results.json `best_val`); the test columns (from `test_after_fit`) are shown
  beside it to judge the pick, never to make it.
- Slots: `--devices 0,1,2,3` runs one trial per GPU (CUDA_VISIBLE_DEVICES per trial process, so
  `trainer.devices: 1` means that GPU); otherwise `--parallel N` processes. The CPU threads
  (`--threads`, default every core this process may use) are divided between the slots: each
  trial gets `--torch_num_threads` and OMP_NUM_THREADS of threads // slots.
- The sweep folder (`--out`, default `runs/sweeps/<file name>`) holds `sweep.json` (the plan),
  `trials/<point>-s<seed>/` (each trial's run folder: config.yaml, checkpoints, results.json, and
  `trial.json` + `trial.log`, the record of the subprocess), `trials.csv` (one row per trial),
  `summary.csv` (one row per point: params, seeds, mean / sd of the validation metric and of its
  test counterpart, time; best first) and `sweep.png` (the metric against each swept parameter;
  needs matplotlib, skipped with the reason otherwise).
- Resume: run the same command again. A trial whose results.json says `completed` is kept; an
  interrupted or failed one is removed and run again. A trial's folder name is a hash of the
  command, the extra arguments, its parameters and seed, so adding values to a grid or seeds to
  `--seeds` reuses every trial already done, and changing the command starts new ones.
- W&B: each trial logs as its config says, grouped under the sweep's name (WANDB_RUN_GROUP); the
  sweep's own run (the two tables and the chart) is logged when W&B is online (`--wandb auto`),
  or offline to sync later with `--wandb offline`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("grid", "random", "bayes")
MACROS = ("${env}", "${args}")  # the W&B command macros a local trial understands
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform_values", "normal", "log_normal")
FILE_OPTIONS = ("--config", "--data", "--model", "--trainer", "--optimizer", "--lr_scheduler")


class SweepError(ValueError):
    """Bad sweep input: the message names the file and the key at fault."""


# ------------------------------------------------------------------------------------ the file
@dataclass(frozen=True)
class Sweep:
    """A W&B sweep file, as the local runner reads it."""

    path: Path
    method: str
    metric: str
    goal: str  # maximize | minimize
    parameters: dict[str, dict[str, Any]]  # dotted CLI key -> W&B parameter spec
    fit_args: list[str]  # the command's arguments after `lit-recs fit`, without the macros
    run_cap: int | None
    project: str
    spec: dict[str, Any] = field(repr=False)  # the file as read (for `wandb sweep`)

    @property
    def test_metric(self) -> str | None:
        """The test counterpart of a validation metric (`val/ndcg@10` -> `test/ndcg@10`)."""
        return "test/" + self.metric[4:] if self.metric.startswith("val/") else None


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(spec, dict):
        raise SweepError(f"{path}: a sweep file is a mapping (method, metric, parameters, command)")
    method = spec.get("method")
    if method not in METHODS:
        raise SweepError(f"{path}: method: {method!r} is not one of {', '.join(METHODS)}")
    metric = spec.get("metric")
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise SweepError(f"{path}: metric: needs a name, e.g. metric: {{name: val/ndcg@10, goal: "
                         "maximize}")
    goal = metric.get("goal", "minimize")  # W&B's default
    if goal not in ("maximize", "minimize"):
        raise SweepError(f"{path}: metric.goal: {goal!r} is not maximize or minimize")
    parameters = _flat_parameters(path, spec.get("parameters"))
    run_cap = spec.get("run_cap")
    return Sweep(path=path, method=method, metric=metric["name"], goal=goal, parameters=parameters,
                 fit_args=_fit_args(path, spec.get("command")), run_cap=run_cap,
                 project=str(spec.get("project") or "lit_recs"), spec=spec)


def _flat_parameters(path: Path, parameters: Any, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted CLI keys -> specs; W&B's nested `parameters:` blocks become dotted keys too."""
    if not isinstance(parameters, dict) or not parameters:
        where = f"parameters.{prefix[:-1]}" if prefix else "parameters"
        raise SweepError(f"{path}: {where}: needs at least one parameter, e.g. "
                         "model.init_args.dim: {values: [64, 128]}")
    flat: dict[str, dict[str, Any]] = {}
    for name, spec in parameters.items():
        key = f"{prefix}{name}"
        if isinstance(spec, dict) and "parameters" in spec:
            flat.update(_flat_parameters(path, spec["parameters"], f"{key}."))
        elif isinstance(spec, dict):
            flat[key] = spec
        else:
            raise SweepError(f"{path}: parameters.{key}: a parameter is a mapping such as "
                             f"{{values: [...]}} or {{value: ...}}, got {spec!r}")
    return flat


def _fit_args(path: Path, command: Any) -> list[str]:
    """The arguments a trial gives `lit-recs fit` before its parameters (the command's own)."""
    example = "command: [${env}, lit-recs, fit, --config, conf/base.yaml, ..., ${args}]"
    if not isinstance(command, list) or not all(isinstance(a, str) for a in command):
        raise SweepError(f"{path}: command: the local runner needs the trial command as a list of "
                         f"strings, e.g. {example}")
    words = [a for a in command if a != "${env}"]
    if words[:2] != ["lit-recs", "fit"] or "${args}" not in words:
        raise SweepError(f"{path}: command: must run `lit-recs fit ... ${{args}}` (e.g. {example}),"
                         f" got {' '.join(command)}")
    macros = [a for a in words if a.startswith("${") and a not in MACROS]
    if macros:
        raise SweepError(f"{path}: command: {macros[0]} is not run locally; only ${{env}} and "
                         "${args} (the parameters as --key=value) are")
    return [a for a in words[2:] if a != "${args}"]


# ---------------------------------------------------------------------------------- the points
def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every combination of the parameters' values, in the file's order (W&B's grid)."""
    choices = []
    for key, spec in sweep.parameters.items():
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise SweepError(f"{sweep.path}: parameters.{key}.values: needs a non-empty list")
        elif "value" in spec:
            values = [spec["value"]]
        else:
            raise SweepError(f"{sweep.path}: parameters.{key}: a grid needs `values` (or `value`), "
                             f"got {spec}; draw from a distribution with method: random")
        choices.append(values)
    return [dict(zip(sweep.parameters, combo)) for combo in itertools.product(*choices)]


def random_points(sweep: Sweep, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` points drawn from the parameters' distributions with one seeded generator; the first
    `n` of a larger draw are the same points, so `--trials` can grow and the sweep resumes."""
    rng = random.Random(seed)
    return [{key: _draw(sweep.path, key, spec, rng) for key, spec in sweep.parameters.items()}
            for _ in range(n)]


def _distribution(path: Path, key: str, spec: dict[str, Any]) -> str:
    """W&B's rule when `distribution` is absent: values -> categorical, value -> constant,
    int bounds -> int_uniform, float bounds -> uniform."""
    if "distribution" in spec:
        name = spec["distribution"]
    elif "values" in spec:
        name = "categorical"
    elif "value" in spec:
        name = "constant"
    elif isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int):
        name = "int_uniform"
    elif "min" in spec and "max" in spec:
        name = "uniform"
    else:
        raise SweepError(f"{path}: parameters.{key}: give values, value, min/max or a "
                         f"distribution, got {spec}")
    if name not in DISTRIBUTIONS:
        raise SweepError(f"{path}: parameters.{key}.distribution: {name!r} is not drawn locally; "
                         f"one of {', '.join(DISTRIBUTIONS)}")
    return name


def _draw(path: Path, key: str, spec: dict[str, Any], rng: random.Random) -> Any:
    name = _distribution(path, key, spec)
    try:
        if name == "constant":
            return spec["value"]
        if name == "categorical":
            return rng.choices(spec["values"], weights=spec.get("probabilities"))[0]
        if name in ("normal", "log_normal"):
            x = rng.gauss(spec.get("mu", 0.0), spec.get("sigma", 1.0))
            return math.exp(x) if name == "log_normal" else x
        low, high = spec["min"], spec["max"]
        if name == "int_uniform":
            return rng.randint(low, high)
        if name in ("log_uniform_values", "q_log_uniform_values"):
            x = math.exp(rng.uniform(math.log(low), math.log(high)))
        elif name == "log_uniform":  # W&B: min and max are natural-log exponents
            x = math.exp(rng.uniform(low, high))
        else:
            x = rng.uniform(low, high)
        if name.startswith("q_"):
            q = spec.get("q", 1)
            x = round(x / q) * q
        return x
    except (KeyError, TypeError, ValueError) as err:
        raise SweepError(f"{path}: parameters.{key}: {name} needs {err} ({spec})") from None


# ---------------------------------------------------------------------------------- the trials
@dataclass(frozen=True)
class Trial:
    """One `lit-recs fit` run: a point of the sweep and a training seed (None: the config's)."""

    point: str  # hash of the command and the params: the same point has the same name
    params: dict[str, Any]
    seed: int | None
    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    def argv(self, fit_args: list[str], extra: list[str], threads: int) -> list[str]:
        """The trial's command line; the extra arguments come last and win."""
        args = [script(), "fit", *fit_args, *param_flags(self.params)]
        if self.seed is not None:
            args.append(f"--seed_everything={self.seed}")
        args += ["--trainer.default_root_dir", str(self.folder), "--torch_num_threads",
                 str(threads), "--trainer.enable_progress_bar", "false"]
        return args + extra


def param_flags(params: dict[str, Any]) -> list[str]:
    """`--key=value` with Python's str(value), as `wandb agent` writes ${args}."""
    return [f"--{key}={value}" for key, value in params.items()]


def plan(sweep: Sweep, points: list[dict[str, Any]], seeds: list[int] | None, extra: list[str],
         out: Path) -> list[Trial]:
    """The trials, point by point, one per seed."""
    trials = []
    for params in points:
        text = json.dumps({"command": sweep.fit_args, "extra": extra, "params": params},
                          sort_keys=True, default=str)
        point = hashlib.sha1(text.encode()).hexdigest()[:10]
        for seed in seeds or [None]:
            name = point if seed is None else f"{point}-s{seed}"
            trials.append(Trial(point, params, seed, out / "trials" / name))
    return trials


def finished(trial: Trial) -> dict[str, Any] | None:
    """The trial's results.json when it says the run completed, else None."""
    try:
        results = json.loads((trial.folder / "results.json").read_text())
    except (OSError, ValueError):
        return None
    return results if results.get("status") == "completed" else None


# ------------------------------------------------------------------------ checking the arguments
def check_files(sweep: Sweep, extra: list[str]) -> None:
    """Config files named by the command (or the extra arguments) exist, relative to this folder."""
    for where, args in (("command", sweep.fit_args), ("the extra arguments", extra)):
        for option, value in zip(args, args[1:]):
            if option in FILE_OPTIONS and value.endswith((".yaml", ".yml")) and \
                    not Path(value).is_file():
                raise SweepError(f"{sweep.path}: {where}: {option} {value}: no such config file "
                                 f"(relative to {Path.cwd()})")


def check_arguments(sweep: Sweep, trials: list[Trial], extra: list[str]) -> None:
    """Parse trial commands with `lit-recs fit`'s own parser (no run): every parameter must be an
    option the command accepts, with a value of its type. Parses each trial that brings a value not
    parsed yet (a grid of 2 x 3 x 3 needs 6 parses, ~0.1 s each)."""
    seen: set[str] = set()
    for trial in trials:
        flags = param_flags(trial.params)
        if seen.issuperset(flags):
            continue
        error = _parse_error([*sweep.fit_args, *flags, *extra])
        if error:
            _explain(sweep, trial.params, extra, error)
        seen.update(flags)


def _explain(sweep: Sweep, params: dict[str, Any], extra: list[str], error: str) -> None:
    """Raise naming what the command refuses: the arguments after `--`, or the parameter without
    which the trial parses, else the command with these parameters."""
    command = f"lit-recs fit {' '.join(sweep.fit_args)}"
    flags = param_flags(params)
    if extra and _parse_error([*sweep.fit_args, *flags]) is None:
        raise SweepError(f"the arguments after --: `{' '.join(extra)}` are not accepted by "
                         f"`{command}` ({sweep.path}):\n{error}")
    for key, flag in zip(params, flags):
        if _parse_error([*sweep.fit_args, *(f for f in flags if f != flag), *extra]) is None:
            raise SweepError(f"{sweep.path}: parameters.{key}: `{flag}` is not accepted by "
                             f"`{command}`:\n{error}")
    raise SweepError(f"{sweep.path}: command: `{command}` with the parameters {params} does not "
                     f"parse:\n{error}")


def _parse_error(args: list[str]) -> str | None:
    """jsonargparse's message when `lit-recs fit <args>` does not parse, else None."""
    from lit_recs.cli import RecCLI

    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            RecCLI(args=["fit", *args, "--print_config"])
    except SystemExit as stop:
        if stop.code in (0, None):
            return None
        lines = err.getvalue().strip().splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("error:")), 0)
        return "\n".join(lines[start:])
    except Exception as err:  # noqa: BLE001 - whatever the parser raises is the reason to report
        return f"{type(err).__name__}: {err}"
    return None


# ---------------------------------------------------------------------------------- the slots
@dataclass(frozen=True)
class Slot:
    """Where one trial runs: environment variables and CPU threads."""

    label: str
    env: dict[str, str]
    threads: int


def make_slots(devices: list[str] | None, parallel: int | None, threads: int) -> list[Slot]:
    """One slot per GPU of `--devices`, else `--parallel` CPU slots; threads divided evenly."""
    if devices is not None:
        if parallel is not None and parallel != len(devices):
            raise SweepError(f"--parallel {parallel} with --devices {','.join(devices)}: one trial "
                             "runs per device; give one of them")
        each = max(1, threads // len(devices))
        return [Slot(f"cuda:{d}", {"CUDA_VISIBLE_DEVICES": d, "OMP_NUM_THREADS": str(each)}, each)
                for d in devices]
    n = 1 if parallel is None else parallel
    if n < 1:
        raise SweepError(f"--parallel {n}: needs at least 1")
    each = max(1, threads // n)
    return [Slot(f"cpu{i}", {"OMP_NUM_THREADS": str(each)}, each) for i in range(n)]


# ---------------------------------------------------------------------------------- running
class Runner:
    """Runs trials in subprocesses, one per free slot; stops them all on SIGINT / SIGTERM."""

    def __init__(self, sweep: Sweep, extra: list[str], slots: list[Slot], group: str) -> None:
        self.sweep, self.extra, self.group = sweep, extra, group
        self.free: list[Slot] = list(slots)
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self, trials: list[Trial], report: Callable[[Trial, dict[str, Any]], None]) -> None:
        """Run every trial; `report(trial, record)` as each ends."""
        with ThreadPoolExecutor(len(self.free)) as pool:
            running: dict[Future, Trial] = {pool.submit(self._one, t): t for t in trials}
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        report(running.pop(future), future.result())
            except BaseException:
                self.stop()
                for future in running:
                    future.cancel()
                raise

    def stop(self) -> None:
        """SIGTERM every running trial: each writes results.json `interrupted` and exits."""
        with self.lock:
            self.stopping = True
            for proc in self.procs:
                proc.send_signal(signal.SIGTERM)

    def _one(self, trial: Trial) -> dict[str, Any]:
        with self.lock:
            slot = self.free.pop()
        try:
            return self._launch(trial, slot)
        finally:
            with self.lock:
                self.free.append(slot)

    def _launch(self, trial: Trial, slot: Slot) -> dict[str, Any]:
        shutil.rmtree(trial.folder, ignore_errors=True)  # what an unfinished run left
        trial.folder.mkdir(parents=True)
        argv = trial.argv(self.sweep.fit_args, self.extra, slot.threads)
        env = {**os.environ, **slot.env, "WANDB_RUN_GROUP": self.group}
        env.pop("LIT_RECS_RUN_DIR", None)  # a trial is no child of another run
        record = {"point": trial.point, "params": trial.params, "seed": trial.seed,
                  "slot": slot.label, "env": slot.env, "command": argv,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "started_unix": time.time()}
        (trial.folder / "trial.json").write_text(json.dumps(record, indent=2, default=str))
        start = time.perf_counter()
        with open(trial.folder / "trial.log", "w") as log:
            with self.lock:
                if self.stopping:
                    raise KeyboardInterrupt
                proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)  # Ctrl-C reaches the sweep only
                self.procs.add(proc)
            code = proc.wait()
            with self.lock:
                self.procs.discard(proc)
        record.update(returncode=code, wall_s=round(time.perf_counter() - start, 2),
                      ended_unix=time.time())
        (trial.folder / "trial.json").write_text(json.dumps(record, indent=2, default=str))
        return record


def script(name: str = "lit-recs") -> str:
    """A console script of this interpreter's environment (else the one on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name) or name


# ---------------------------------------------------------------------------------- the tables
def trial_row(sweep: Sweep, trial: Trial) -> dict[str, Any]:
    """One trial's row: its params, seed, status, metric values, time and folder."""
    results = _read_json(trial.folder / "results.json")
    record = _read_json(trial.folder / "trial.json")
    row: dict[str, Any] = {"point": trial.point, **trial.params,
                           "seed": _seed_of(trial, results),
                           "status": results.get("status", "failed" if record else "not run")}
    row[sweep.metric] = metric_value(results, sweep.metric)
    if sweep.test_metric:
        row[sweep.test_metric] = (results.get("metrics") or {}).get(sweep.test_metric)
    row["epochs"] = results.get("epochs")
    row["wall_s"] = record.get("wall_s")
    row["folder"] = str(trial.folder)
    return row


def metric_value(results: dict[str, Any], metric: str) -> float | None:
    """The validation value of the checkpoint the run kept (results.json's `best_val`, the epoch
    with the best monitored value), else the last logged one."""
    best = (results.get("best_val") or {}).get("metrics") or {}
    value = best.get(metric, (results.get("metrics") or {}).get(metric))
    return None if value is None else float(value)


def _seed_of(trial: Trial, results: dict[str, Any]) -> Any:
    if trial.seed is not None:
        return trial.seed
    return (results.get("config") or {}).get("seed_everything")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summary_rows(sweep: Sweep, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per point: mean and sd (n - 1) over its completed seeds. Sorted best mean first,
    points with every seed completed before the others; the first of those is marked best."""
    metrics = [m for m in (sweep.metric, sweep.test_metric) if m]
    points: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        points.setdefault(row["point"], []).append(row)
    ranked = []
    for point, runs in points.items():
        done = [r for r in runs if r["status"] == "completed" and r[sweep.metric] is not None]
        summary: dict[str, Any] = {"point": point, **{k: runs[0][k] for k in sweep.parameters}}
        summary["seeds"] = " ".join(str(r["seed"]) for r in done)
        summary["completed"] = f"{len(done)}/{len(runs)}"
        for metric in metrics:
            values = [r[metric] for r in done if r[metric] is not None]
            summary[f"{metric} mean"] = statistics.fmean(values) if values else None
            summary[f"{metric} sd"] = statistics.stdev(values) if len(values) > 1 else None
        summary["wall_s"] = round(sum(r["wall_s"] or 0.0 for r in runs), 2)
        summary["best"] = False
        mean = summary[f"{sweep.metric} mean"]
        order = -mean if mean is not None and sweep.goal == "maximize" else mean
        ranked.append(((mean is None, len(done) < len(runs), order or 0.0), summary))
    ranked.sort(key=lambda pair: pair[0])
    out = [summary for _, summary in ranked]
    if out and out[0][f"{sweep.metric} mean"] is not None:
        out[0]["best"] = True
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of the rows, in the order they first appear."""
    return list(dict.fromkeys(k for row in rows for k in row))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = _columns(rows)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: _cell(row.get(k)) for k in columns} for row in rows)


def _cell(value: Any) -> Any:
    return "" if value is None else json.dumps(value) if isinstance(value, (list, dict)) else value


# ---------------------------------------------------------------------------------- the chart
def chart(sweep: Sweep, summary: list[dict[str, Any]], path: Path) -> str:
    """The mean validation metric (sd as error bars) against each swept parameter, one panel per
    parameter; the line joins the best point at each value. Returns what happened, in words."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return (f"chart skipped: matplotlib is not installed ({err}); "
                "pip install -e '.[experiments]' draws it")
    rows = [s for s in summary if s[f"{sweep.metric} mean"] is not None]
    if not rows:
        return "chart skipped: no trial completed"
    swept = list(sweep.parameters)
    fig, axes = plt.subplots(1, len(swept), figsize=(3.6 * len(swept), 3.2), squeeze=False,
                             sharey=True)
    for ax, key in zip(axes[0], swept):
        _panel(ax, sweep, rows, key)
    axes[0][0].set_ylabel(f"{sweep.metric} (mean over seeds)")
    fig.suptitle(f"{sweep.path.name}: {len(summary)} points (bars: sd over seeds; line: the best "
                 "point at each value)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart: {path}"


def _panel(ax: Any, sweep: Sweep, rows: list[dict[str, Any]], key: str) -> None:
    values = list(dict.fromkeys(str(r[key]) for r in rows))
    numeric = all(isinstance(r[key], (int, float)) and not isinstance(r[key], bool) for r in rows)
    position = {v: float(v) if numeric else i for i, v in enumerate(values)}
    xs = [position[str(r[key])] for r in rows]
    means = [r[f"{sweep.metric} mean"] for r in rows]
    sds = [r[f"{sweep.metric} sd"] or 0.0 for r in rows]
    ax.errorbar(xs, means, yerr=sds, fmt="o", alpha=0.5, capsize=2)
    pick = max if sweep.goal == "maximize" else min
    best = sorted((x, pick(m for xx, m in zip(xs, means) if xx == x)) for x in set(xs))
    ax.plot([b[0] for b in best], [b[1] for b in best], "-", color="C1")
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 20:
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(values)), values, rotation=30, fontsize=7)
    ax.set_xlabel(key.replace("init_args.", ""), fontsize=8)


# ---------------------------------------------------------------------------------- W&B
def group_name(sweep: Sweep) -> str:
    """The W&B group of the sweep's trials and of its own run (WANDB_RUN_GROUP)."""
    return f"sweep-{sweep.path.stem}"


def wandb_online() -> bool:
    """Online when credentials exist and WANDB_MODE does not say otherwise (lit_recs' rule)."""
    from lit_recs.cli import ensure_wandb_mode

    ensure_wandb_mode()  # sets WANDB_MODE=offline without credentials
    return os.environ.get("WANDB_MODE", "online") not in ("offline", "disabled", "dryrun")


def log_wandb(sweep: Sweep, out: Path, tables: dict[str, list[dict[str, Any]]],
              chart_path: Path | None, mode: str) -> str:
    """The sweep's own W&B run: both tables as W&B Tables, the chart as an image."""
    if mode == "off":
        return "W&B: off (--wandb off)"
    if mode == "auto" and not wandb_online():
        return ("W&B tables skipped: W&B is offline (no credentials or WANDB_MODE=offline); "
                "--wandb offline logs them to an offline run to `wandb sync` later")
    import wandb

    run = wandb.init(project=sweep.project, name=group_name(sweep), job_type="sweep",
                     group=group_name(sweep), dir=str(out),
                     mode="offline" if mode == "offline" else None,
                     config={"sweep_file": str(sweep.path), "method": sweep.method,
                             "metric": sweep.metric, "goal": sweep.goal})
    for name, rows in tables.items():
        columns = _columns(rows)
        data = [[None if row.get(k) is None else _cell(row[k]) for k in columns] for row in rows]
        run.log({name: wandb.Table(columns=columns, data=data)})
    if chart_path is not None and chart_path.is_file():
        run.log({"chart": wandb.Image(str(chart_path))})
    best = next((r for r in tables["summary"] if r["best"]), None)
    if best:
        run.summary.update({f"best/{k}": v for k, v in best.items()
                            if v is not None and k != "best"})
    folder = Path(run.dir).parent
    run.finish()
    return f"W&B run ({mode if mode != 'auto' else 'online'}): {folder}"


def run_bayes(sweep: Sweep, slots: list[Slot], trials: int | None) -> int:
    """`method: bayes`: the W&B server chooses each point; one `wandb agent` per slot."""
    if not wandb_online():
        raise SweepError(f"{sweep.path}: method: bayes needs a W&B server to choose the points "
                         "(wandb agent), and W&B is offline here (no credentials or WANDB_MODE="
                         f"{os.environ.get('WANDB_MODE')}); use method: grid or random locally, "
                         "or `wandb login` first")
    import wandb

    try:
        sweep_id = wandb.sweep(sweep.spec, project=sweep.project)
    except Exception as err:  # noqa: BLE001 - any failure to reach the server means the same
        raise SweepError(f"{sweep.path}: method: bayes: the W&B server is not reachable: "
                         f"{err}") from None
    count = [] if trials is None else ["--count", str(math.ceil(trials / len(slots)))]
    procs = [subprocess.Popen([script("wandb"), "agent", *count, f"{sweep.project}/{sweep_id}"],
                              env={**os.environ, **slot.env}) for slot in slots]
    print(f"W&B sweep {sweep_id}: {len(procs)} agent(s); trials and tables are on the server",
          flush=True)
    return max(p.wait() for p in procs)


# ---------------------------------------------------------------------------------- the command
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's options, and the extra `lit-recs fit` arguments after `--`."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="lit-recs sweep", description=__doc__.split("\n\n")[0],
        epilog="Arguments after `--` are added to every trial's `lit-recs fit` command.")
    parser.add_argument("sweep_file", help="a W&B sweep file, e.g. conf/sweeps/ials_loo.yaml")
    parser.add_argument("--out", help="the sweep folder (default runs/sweeps/<file name>); "
                        "the same folder again resumes the sweep")
    parser.add_argument("--seeds", type=_ints, help="training seeds per point, e.g. 0,1,2 "
                        "(default: the config's seed_everything)")
    parser.add_argument("--trials", type=int, help="points drawn by method: random "
                        "(default the file's run_cap); agent runs for method: bayes")
    parser.add_argument("--draw-seed", type=int, default=0, help="seed of the random draw")
    parser.add_argument("--devices", type=lambda s: s.split(","),
                        help="GPUs, one trial on each at a time, e.g. 0,1,2,3 (0,0: two on GPU 0)")
    parser.add_argument("--parallel", type=int, help="trials at a time on CPU (default 1)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="CPU threads divided between the trials (default: every core)")
    parser.add_argument("--wandb", choices=("auto", "online", "offline", "off"), default="auto",
                        help="the sweep's own W&B run with the tables (auto: when online)")
    parser.add_argument("--dry-run", action="store_true", help="print the trials, run nothing")
    return parser.parse_args(argv), extra


def _ints(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") \
            from None


def points_of(sweep: Sweep, args: argparse.Namespace) -> list[dict[str, Any]]:
    if sweep.method == "grid":
        if args.trials is not None:
            raise SweepError(f"--trials {args.trials}: {sweep.path} is a grid; every point runs")
        return grid_points(sweep)
    n = args.trials if args.trials is not None else sweep.run_cap
    if not isinstance(n, int) or n < 1:
        raise SweepError(f"{sweep.path}: method: random needs a number of trials: --trials N or "
                         "run_cap: N in the file")
    return random_points(sweep, n, args.draw_seed)


def run_sweep(argv: list[str]) -> int:
    """The `lit-recs sweep` command; returns its exit status (1 when a trial failed)."""
    args, extra = parse_args(argv)
    sweep = load_sweep(args.sweep_file)
    slots = make_slots(args.devices, args.parallel, args.threads)
    check_files(sweep, extra)
    if sweep.method == "bayes":
        if args.seeds:
            raise SweepError(f"--seeds: {sweep.path} is method: bayes, where the W&B server picks "
                             "each trial; add seed_everything to its parameters instead")
        return run_bayes(sweep, slots, args.trials)
    if args.seeds and "seed_everything" in sweep.parameters:
        raise SweepError(f"{sweep.path}: parameters.seed_everything and --seeds both set the seed")
    out = Path(args.out or Path("runs") / "sweeps" / sweep.path.stem)
    trials = plan(sweep, points_of(sweep, args), args.seeds, extra, out)
    check_arguments(sweep, trials, extra)
    todo = [t for t in trials if finished(t) is None]
    print(f"sweep {sweep.path}: {sweep.method}, {len(trials)} trials "
          f"({len(trials) - len(todo)} already completed, {len(todo)} to run), "
          f"{len(slots)} at a time ({', '.join(s.label for s in slots)}; "
          f"{slots[0].threads} thread(s) each); folder {out}", flush=True)
    if args.dry_run:
        for t in todo:
            print(f"  {t.name}: {' '.join(t.argv(sweep.fit_args, extra, slots[0].threads))}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    write_plan(sweep, args, extra, trials, out)
    runner = Runner(sweep, extra, slots, group=group_name(sweep))
    counter = itertools.count(1)
    started = time.perf_counter()
    runner.run(todo, lambda t, r: _print_trial(sweep, t, r, next(counter), len(todo)))
    wall = time.perf_counter() - started
    if todo:
        print(f"{len(todo)} trial(s) in {wall:.1f} s: {3600 * len(todo) / wall:.1f} trials per hour",
              flush=True)
    return report(sweep, args, trials, out)


def write_plan(sweep: Sweep, args: argparse.Namespace, extra: list[str], trials: list[Trial],
               out: Path) -> None:
    plan_ = {"sweep_file": str(sweep.path), "method": sweep.method, "metric": sweep.metric,
             "goal": sweep.goal, "command": ["lit-recs", "fit", *sweep.fit_args], "extra": extra,
             "seeds": args.seeds, "draw_seed": args.draw_seed if sweep.method == "random" else None,
             "trials": [{"name": t.name, "point": t.point, "params": t.params, "seed": t.seed}
                        for t in trials]}
    (out / "sweep.json").write_text(json.dumps(plan_, indent=2, default=str))


def _print_trial(sweep: Sweep, trial: Trial, record: dict[str, Any], i: int, n: int) -> None:
    results = finished(trial)
    params = " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in trial.params.items())
    seed = "" if trial.seed is None else f" seed {trial.seed}"
    if results is not None:
        value = metric_value(results, sweep.metric)
        what = f"{sweep.metric} {value:.4f}" if value is not None else "completed"
    else:
        log = (trial.folder / "trial.log").read_text(errors="replace").strip().splitlines()
        what = f"FAILED (exit {record['returncode']}): {log[-1] if log else ''}; see " \
               f"{trial.folder / 'trial.log'}"
    print(f"[{i}/{n}] {trial.name} {params}{seed}: {what} ({record['wall_s']:.1f} s, "
          f"{record['slot']})", flush=True)


def report(sweep: Sweep, args: argparse.Namespace, trials: list[Trial], out: Path) -> int:
    """Write trials.csv, summary.csv, the chart and the W&B run; print the best point."""
    rows = [trial_row(sweep, t) for t in trials]
    summary = summary_rows(sweep, rows)
    write_csv(out / "trials.csv", rows)
    write_csv(out / "summary.csv", summary)
    png = out / "sweep.png"
    said = chart(sweep, summary, png)
    print(said, flush=True)
    print(log_wandb(sweep, out, {"trials": rows, "summary": summary},
                    png if said.startswith("chart:") else None, args.wandb), flush=True)
    best = next((s for s in summary if s["best"]), None)
    if best is not None:
        sd = best[f"{sweep.metric} sd"]
        spread = f" ± {sd:.4f}" if sd is not None else ""
        params = ", ".join(f"{k}={best[k]}" for k in sweep.parameters)
        print(f"best ({sweep.goal} mean {sweep.metric} over seeds {best['seeds']}): {params}: "
              f"{best[f'{sweep.metric} mean']:.4f}{spread}", flush=True)
    print(f"tables: {out / 'summary.csv'} (per point), {out / 'trials.csv'} (per trial)",
          flush=True)
    failed = [r for r in rows if r["status"] != "completed"]
    if failed:
        print(f"{len(failed)} trial(s) did not complete: {', '.join(r['folder'] for r in failed)};"
              " run the same command again to rerun them", file=sys.stderr, flush=True)
    return 1 if failed else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    """Entry point of `lit-recs sweep`: exits 0 (every trial completed), 1 (a trial did not),
    2 (bad input, before any trial ran), 130 / 143 (interrupted; run it again to resume)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = run_sweep(sys.argv[2:] if argv is None else argv)
    except SweepError as err:
        print(f"lit-recs sweep: error: {err}", file=sys.stderr, flush=True)
        code = 2
    except KeyboardInterrupt as stop:
        print("lit-recs sweep: interrupted; the running trials were stopped. Run the same command "
              "again to resume: completed trials are kept, the others rerun.", file=sys.stderr,
              flush=True)
        code = 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)
    raise SystemExit(code)
