"""Every model config in conf/model/ on synthetic data of real size: one epoch and a full-ranking
evaluation, or a refusal that names the memory needed; one table.

    python experiments/benchmarks/scale.py --shape ml20m              # all models
    python experiments/benchmarks/scale.py --shape longtail --models mf,popularity,ease
    python experiments/benchmarks/scale.py --shape ml20m --table      # print the table so far

Shapes (`loo`, synthetic planted-taste logs from `lit_recs.data.datasets.Synthetic`, written once as
parquet under --cache and read through `dataset: <file>` as a user's own file would be):

- ml20m:    138,493 users x 26,744 items, about 20M interactions (MovieLens 20M's shape);
- longtail: 1M users x 1M items, about 20M interactions.

Each model runs as `lit-recs fit` in its own process (`--trainer.max_epochs 1`, the shipped model
config, a data config of the model's family pointed at the parquet file), so that its peak RSS is
its own (`os.wait4`). Per model: the data stage (load + preprocess + split, seconds), the training
epoch (fit time for closed forms), full-ranking evaluation of the test users (users/s; all of them
unless --eval-batches limits it, as the table then says), test NDCG@10 and HR@10 (Popularity's
beside them), peak RSS, and the outcome: ok, refused (the model's own error: memory it needs and
what to use instead), or failed (anything else: a bug to fix). Rows are kept in
<cache>/scale-<shape>.json, so a long sweep can be run model by model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SHAPES: dict[str, dict[str, Any]] = {
    "ml20m": {"num_users": 138_493, "num_items": 26_744, "interactions_per_user": 144.4},
    "longtail": {"num_users": 1_000_000, "num_items": 1_000_000, "interactions_per_user": 20.0},
    "tiny": {"num_users": 2_000, "num_items": 1_500, "interactions_per_user": 30.0},  # a smoke run
}
# the data each model trains on: (DataModule, its options beyond dataset / split / seed)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "pairs": ("lit_recs.data.datamodules.NegativeSamplingDataModule",
              {"num_negatives": 4, "batch_size": 1024, "sampled_negatives": 99}),
    "rows": ("lit_recs.data.datamodules.UserRowsDataModule",
             {"batch_size": 128, "sampled_negatives": 99}),
    "seq": ("lit_recs.data.cloze.ClozeDataModule",
            {"max_len": 50, "mask_prob": 0.2, "window_stride": 50, "batch_size": 128,
             "sampled_negatives": 99}),
    "next": ("lit_recs.data.sequential.NextItemDataModule",
             {"max_len": 50, "window_stride": 49, "batch_size": 128, "sampled_negatives": 99}),
    "tower": ("lit_recs.data.two_tower.TwoTowerDataModule",
              {"task": "topn", "categorical": ["user_id", "item_id"], "num_negatives": 0,
               "batch_size": 1024, "sampled_negatives": 99}),
    "fields": ("lit_recs.data.feature_rows.FeatureDataModule",
               {"task": "topn", "categorical": ["user_id", "item_id"], "num_negatives": 4,
                "batch_size": 1024, "sampled_negatives": 99}),
}
SAMPLED_CE = "{class_path: lit_recs.losses.SampledCE, init_args: {num_sampled: 1024}}"


def sparse_tables(model: str, option: str = "--model.init_args.sparse") -> list[str]:
    """Options that give a model's embedding tables sparse gradients and swap its Adam for
    `lit_recs.optim.LazyAdam` at the config's lr and weight decay: dense Adam updates every row
    of every table at every step (the `mf` row: an epoch does not fit in the time limit)."""
    config = yaml.safe_load((CONF / "model" / f"{model}.yaml").read_text())
    adam = config["init_args"]["optimizer"]["init_args"]
    lazy = {"class_path": "lit_recs.optim.LazyAdam",
            "init_args": {k: adam[k] for k in ("lr", "weight_decay") if k in adam}}
    return [option, "true", "--model.init_args.optimizer", json.dumps(lazy)]


# row name -> (model config, family, extra command-line options)
MODELS: dict[str, tuple[str, str, list[str]]] = {
    "popularity": ("popularity", "pairs", []),
    "mf": ("mf", "pairs", []),
    "mf_sparse": ("mf_sparse", "pairs", []),
    "mf_bce + sparse": ("mf_bce", "pairs", sparse_tables("mf_bce")),
    "gmf + sparse": ("gmf", "pairs", sparse_tables("gmf")),
    "mlp + sparse": ("mlp", "pairs", sparse_tables("mlp")),
    "neumf + sparse": ("neumf", "pairs", sparse_tables("neumf")),
    "ials": ("ials", "pairs", []),
    "ease": ("ease", "pairs", []),
    "slim": ("slim", "pairs", []),
    "itemknn": ("itemknn", "pairs", []),
    "slim_gradient": ("slim_gradient", "rows", []),
    "bert4rec": ("bert4rec", "seq", []),
    "bert4rec sampled softmax": ("bert4rec", "seq", ["--model.init_args.loss", SAMPLED_CE]),
    "sasrec": ("sasrec", "next", []),
    "sasrec sampled softmax": ("sasrec", "next", ["--model.init_args.loss", SAMPLED_CE]),
    "two_tower": ("two_tower", "tower", []),
    "two_tower + sparse": ("two_tower", "tower",
                           sparse_tables("two_tower", "--model.init_args.tower.sparse")),
    "fm": ("fm", "fields", []),
    "ffm": ("ffm", "fields", []),
}
NOT_RUN = {"dssm": "a click classifier on labelled rows (CTR), not a top-N model of this log"}


def dataset(shape: str, cache: Path) -> tuple[Path, float]:
    """The shape's parquet file (written on first use) and the seconds it took to generate."""
    path = cache / f"synthetic-{shape}.parquet"
    if path.exists():
        return path, 0.0
    import polars as pl

    from lit_recs.data.datasets.synthetic import Synthetic
    start = time.perf_counter()
    data = Synthetic(**SHAPES[shape], seed=0).load()
    cache.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user_id": data.users, "item_id": data.items, "rating": data.ratings,
                  "timestamp": data.timestamps}).write_parquet(path)
    return path, time.perf_counter() - start


def data_config(family: str, path: Path, out: Path) -> Path:
    class_path, options = FAMILIES[family]
    config = out / f"data-{family}.yaml"
    config.write_text(yaml.safe_dump({"class_path": class_path, "init_args": {
        "dataset": str(path), "split": "loo", "seed": 42, **options}}))
    return config


def run_model(name: str, path: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One `lit-recs fit` in its own process: its row of the table."""
    model, family, extra = MODELS[name]
    folder = out / name.replace(" ", "_")
    limits = [] if args.eval_batches is None else [
        "--trainer.limit_val_batches", str(args.eval_batches),
        "--trainer.limit_test_batches", str(args.eval_batches)]
    beside = Path(sys.executable).with_name("lit-recs")  # the venv's, also when not on PATH
    command = [str(beside) if beside.exists() else "lit-recs", "fit",
               "--config", str(CONF / "base.yaml"),
               "--data", str(data_config(family, path, out)),
               "--model", str(CONF / "model" / f"{model}.yaml"), *extra,
               "--trainer.max_epochs", "1", "--trainer.logger", "false",
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", args.device,
               "--torch_num_threads", str(args.threads), *limits,
               "--trainer.max_time", f"00:00:{args.max_minutes:02d}:00",
               "--trainer.default_root_dir", str(folder)]
    start = time.perf_counter()
    with open(out / f"{folder.name}.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"model": name, "config": f"conf/model/{model}.yaml", "family": family,
                           "wall_s": round(wall, 1), "peak_rss_gib": usage.ru_maxrss / 2**20,
                           "exit": os.waitstatus_to_exitcode(status)}
    results = folder / "results.json"
    text = (out / f"{folder.name}.log").read_text()
    if row["exit"] == 0 and results.exists():
        return row | summarise(json.loads(results.read_text()), args, family)
    row["outcome"] = "refused" if "needs about" in text else "failed"
    row["error"] = last_error(text)
    return row


def epoch_steps(family: str, summary: dict[str, Any]) -> int | None:
    """Training steps in one epoch: a batch of interactions (pairs, tower, fields) or of users
    (rows); None for sequence windows (their count is not in the summary)."""
    size = FAMILIES[family][1]["batch_size"]
    train = summary["split"]["train"]
    count = {"rows": train["users"], "seq": None, "next": None}.get(family,
                                                                  train["interactions"])
    return None if count is None else -(-count // size)


def summarise(results: dict[str, Any], args: argparse.Namespace, family: str) -> dict[str, Any]:
    """A finished run's row; an epoch cut by the time limit gets its projected length (seconds per
    step so far x steps in an epoch)."""
    timings, metrics = results["timings"], results["metrics"]
    test_users = results["data_summary"]["split"]["test"]["users"]
    evaluated = test_users if args.eval_batches is None else \
        min(test_users, args.eval_batches * 512)
    epoch_s = timings["fit_s"] - timings.get("validate_s", 0)
    steps = epoch_steps(family, results["data_summary"])
    # cut when training alone reached the limit: the limit can also fall in the validation after
    # a whole epoch (a slow scorer), and a closed-form fit is one step, not an epoch's worth
    cut = results["epochs"] < 1 or epoch_s >= args.max_minutes * 60 - 1
    projected = round(epoch_s * steps / max(results["global_steps"], 1)) if cut and steps else None
    return {"outcome": f"epoch cut at {args.max_minutes} min after "
                       f"{results['global_steps']:,} steps" if cut else "ok",
            "epoch_s": round(epoch_s, 1), "projected_epoch_s": projected,
            "test_s": timings["test_s"], "test_users": evaluated,
            "users_per_s": round(evaluated / max(timings["test_s"], 1e-9)),
            "ndcg@10": metrics.get("test/ndcg@10"), "hr@10": metrics.get("test/hr@10")}


def last_error(text: str) -> str:
    """The refusal's own line when there is one, else the last line naming an error."""
    lines = [line.strip() for line in text.splitlines() if "needs about" in line] or \
        [line.strip() for line in text.splitlines() if "Error" in line or "error:" in line]
    return lines[-1].lstrip("- ")[:400] if lines else text.strip().splitlines()[-1][:400]


def data_stage(path: Path) -> dict[str, Any]:
    """Load + preprocess + split of the pairs family, timed in a fresh process."""
    code = (
        "import json, resource, sys, time\n"
        "t = time.perf_counter()\n"
        "from lit_recs.data.datamodules import NegativeSamplingDataModule\n"
        "dm = NegativeSamplingDataModule(dataset=sys.argv[1], split='loo', sampled_negatives=0)\n"
        "dm.prepare_data(); dm.setup('fit')\n"
        "print(json.dumps({'data_s': time.perf_counter() - t, 'peak_rss_gib': "
        "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "
        "'summary': dm.data_summary}))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          cwd=REPO)
    if proc.returncode:
        return {"error": last_error(proc.stderr)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: dict[str, Any], data: dict[str, Any]) -> str:
    pop = rows.get("popularity", {}).get("ndcg@10")
    lines = ["| model | outcome | epoch / fit (s) | eval users/s | test NDCG@10 (Popularity) "
             "| HR@10 | peak RSS (GiB) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        if "epoch_s" not in r:
            lines.append(f"| {name} | {r.get('outcome')}: {r.get('error', '')} | | | | "
                         f"| {r['peak_rss_gib']:.2f} |")
            continue
        ref = "" if pop is None else f" ({pop:.4f})"
        epoch = r["epoch_s"] if not r.get("projected_epoch_s") else \
            f"{r['epoch_s']} (a whole epoch: about {r['projected_epoch_s']:,})"
        lines.append(f"| {name} | {r['outcome']} | {epoch} | {r['users_per_s']:,} "
                     f"({r['test_users']:,} users) | {r['ndcg@10']:.4f}{ref} | {r['hr@10']:.4f} "
                     f"| {r['peak_rss_gib']:.2f} |")
    for name, why in NOT_RUN.items():
        lines.append(f"| {name} | not run: {why} | | | | | |")
    if "data_s" in data:
        s = data["summary"]
        lines.append(f"\ndata: {s['interactions']:,} interactions, {s['users']:,} users, "
                     f"{s['items']:,} items after dedup; load + preprocess + split "
                     f"{data['data_s']:.1f} s, peak RSS {data['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SHAPES, default="ml20m")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated rows to run")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/lit_recs_scale"))
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--eval-batches", type=int, default=None,
                    help="evaluate this many batches of 512 users (default: every test user)")
    ap.add_argument("--max-minutes", type=int, default=20,
                    help="trainer.max_time per model (the table says when it cut an epoch)")
    ap.add_argument("--table", action="store_true", help="print the table so far and stop")
    args = ap.parse_args()
    store = args.cache / f"scale-{args.shape}.json"
    saved = json.loads(store.read_text()) if store.exists() else {"rows": {}, "data": {}}
    if not args.table:
        print(f"{platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"--threads {args.threads}, device {args.device}, load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
        path, made = dataset(args.shape, args.cache)
        if made:
            print(f"generated {path} in {made:.0f} s", flush=True)
        if not saved["data"]:
            saved["data"] = data_stage(path)
        out = args.cache / f"runs-{args.shape}"
        out.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            row = run_model(name, path, out, args)
            row["machine"] = f"{os.cpu_count()} CPUs, {args.threads} threads, {args.device}"
            saved["rows"][name] = row
            store.write_text(json.dumps(saved, indent=1))
            print(json.dumps(row), flush=True)
    print(table(saved["rows"], saved["data"]))
    print(f"(peak RSS of this script: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)")


if __name__ == "__main__":
    main()
