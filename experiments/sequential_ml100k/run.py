"""BERT4Rec and SASRec (each loss) on ML-100K `seq-loo`, over seeds: test NDCG@10 / HR@10 with seen
items masked and not, training time to the tested epoch, peak memory; one table and one chart.

    LIT_RECS_DATA=../shared/datasets python experiments/sequential_ml100k/run.py \\
        [--variants sasrec-ce bert4rec sasrec-bce sasrec-gbce sasrec-sampled_ce] \\
        [--seeds 42 43 44] [--threads 1] [--out runs/sequential_ml100k] [--max-epochs 400]
    python experiments/sequential_ml100k/run.py --summarize-only        # table and chart again

Each (variant, seed) runs in its own process (so its peak RSS is its own) from the shipped configs:
conf/data/ml-100k-seq.yaml + conf/model/bert4rec.yaml, conf/data/ml-100k-seq-next.yaml +
conf/model/sasrec.yaml (+ conf/model/sasrec/loss_<loss>.yaml), seed_everything = the seed.
Training stops early on validation NDCG@10 with seen items masked (patience 20 evaluations, at most
400 epochs, as experiments/bert4rec_ml100k); the best checkpoint is tested with seen items masked
and again not masked. A finished run's JSON is kept and not run again: delete it to rerun.
Time to the tested epoch sums the training epochs up to it, validation excluded
(experiments/benchmarks/clock.py), as wall time and as this process's CPU time (one torch thread:
the time on a core of its own, which the machine's other jobs do not inflate). The table goes to
stdout (the README's), the chart to experiments/sequential_ml100k/sequential_ml100k.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "experiments" / "benchmarks"))

# variant -> (data config, model configs in order)
VARIANTS = {
    "bert4rec": ("ml-100k-seq.yaml", ["bert4rec.yaml"]),
    "sasrec-ce": ("ml-100k-seq-next.yaml", ["sasrec.yaml"]),
    "sasrec-bce": ("ml-100k-seq-next.yaml", ["sasrec.yaml", "sasrec/loss_bce.yaml"]),
    "sasrec-gbce": ("ml-100k-seq-next.yaml", ["sasrec.yaml", "sasrec/loss_gbce.yaml"]),
    "sasrec-sampled_ce": ("ml-100k-seq-next.yaml", ["sasrec.yaml", "sasrec/loss_sampled_ce.yaml"]),
}
# on ML-100K's 1,682 items 1000 shared negatives are most of the catalogue: sample 256
OVERRIDES = {"sasrec-sampled_ce": {"loss": {"class_path": "lit_recs.losses.SampledCE",
                                            "init_args": {"num_sampled": 256}}}}
REFERENCE = {"what": "RecBole 1.2.1 SASRec (CE), PROTOCOLS.md", "unmasked HR@10": 0.1007,
             "unmasked NDCG@10": 0.0447, "to tested epoch s": 1847.0, "peak GB": 4.3}


def merged_yaml(files: list[Path]) -> dict:
    """The model config: the first file, then each override's init_args on top (what LightningCLI
    does with `--model a.yaml --model b.yaml`)."""
    import yaml

    conf = yaml.safe_load(files[0].read_text())
    for f in files[1:]:
        conf["init_args"].update(yaml.safe_load(f.read_text()).get("init_args", {}))
    return conf


def instantiate(variant: str):
    """(DataModule, model) from the shipped configs, sizes linked as the CLI links them."""
    import yaml
    from jsonargparse import ArgumentParser

    from lit_recs.data.datamodules import RecDataModule
    from lit_recs.models import RecModule

    data_file, model_files = VARIANTS[variant]
    parser = ArgumentParser()
    parser.add_argument("--data", type=RecDataModule)
    data_conf = yaml.safe_load((REPO / "conf" / "data" / data_file).read_text())
    dm = parser.instantiate(parser.parse_object({"data": data_conf})).data
    conf = merged_yaml([REPO / "conf" / "model" / f for f in model_files])
    conf["init_args"].update(OVERRIDES.get(variant, {}))
    conf["init_args"].update(num_users=dm.num_users, num_items=dm.num_items, max_len=dm.max_len)
    parser = ArgumentParser()
    parser.add_argument("--model", type=RecModule)
    model = parser.instantiate(parser.parse_object({"model": conf})).model
    return dm, model


def validation_curve():
    """A callback keeping each epoch's validation NDCG@10 and HR@10 (seen items masked)."""
    import lightning

    class Curve(lightning.Callback):
        def __init__(self) -> None:
            self.points: list[tuple[float, float]] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            m = trainer.callback_metrics
            if trainer.state.fn == "fit" and "val/ndcg@10" in m:
                self.points.append((float(m["val/ndcg@10"]), float(m["val/hr@10"])))

    return Curve()


def run_one(variant: str, seed: int, threads: int, out: Path, max_epochs: int = 400) -> None:
    """One fit + two tests in this process; writes out/<variant>-s<seed>.json."""
    import lightning
    import torch
    from clock import EpochClock
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from lit_recs.callbacks import HeapPolicy
    from lit_recs.checkpoints import load_checkpoint

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|num_workers|does not have many).*")
    torch.set_num_threads(threads)
    lightning.seed_everything(seed, verbose=False)
    dm, model = instantiate(variant)
    clock, cpu, curve = EpochClock(), EpochClock(time.process_time), validation_curve()
    ckpt_dir = out / f"{variant}-s{seed}-ckpt"
    ckpt = ModelCheckpoint(monitor="val/ndcg@10", mode="max", save_top_k=1, dirpath=ckpt_dir)
    trainer = lightning.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, use_distributed_sampler=False, num_sanity_val_steps=0,
        callbacks=[clock, cpu, curve, ckpt, HeapPolicy(),
                   EarlyStopping(monitor="val/ndcg@10", mode="max", patience=20)])
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_s = time.perf_counter() - t0
    best_epoch = int(load_checkpoint(ckpt.best_model_path)["epoch"])  # 0-based
    masked = trainer.test(model, datamodule=dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    model.mask_seen = False
    unmasked = trainer.test(model, datamodule=dm, ckpt_path=ckpt.best_model_path, verbose=False)[0]
    result = {
        "variant": variant, "seed": seed, "threads": threads,
        "epochs": len(clock.epoch_s), "tested_epoch": best_epoch + 1,
        "epoch_s": float(np.mean(clock.epoch_s)),
        "to_tested_s": float(sum(clock.epoch_s[: best_epoch + 1])), "fit_s": fit_s,
        "cpu_epoch_s": float(np.mean(cpu.epoch_s)),
        "cpu_to_tested_s": float(sum(cpu.epoch_s[: best_epoch + 1])),
        "cpu_epochs_s": cpu.epoch_s, "val_ndcg10_hr10": curve.points,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
        "best_val_ndcg10": float(ckpt.best_model_score),
        "masked": {k: float(v) for k, v in masked.items()},
        "unmasked": {k: float(v) for k, v in unmasked.items()},
        "load": os.getloadavg(),
    }
    (out / f"{variant}-s{seed}.json").write_text(json.dumps(result, indent=2))
    for f in ckpt_dir.glob("*.ckpt"):
        f.unlink()
    ckpt_dir.rmdir()


ROWS = [("masked", "test/ndcg@10", "masked NDCG@10"), ("masked", "test/hr@10", "masked HR@10"),
        ("unmasked", "test/ndcg@10", "unmasked NDCG@10"),
        ("unmasked", "test/hr@10", "unmasked HR@10")]


def summarize(out: Path, variants: list[str]) -> None:
    """Prints the README table (mean ± sd over the seeds run) and draws the chart."""
    runs: dict[str, list[dict]] = {}
    for v in variants:
        found = sorted(out.glob(f"{v}-s*.json"))
        runs[v] = [json.loads(f.read_text()) for f in found if f.stem.rsplit("-s", 1)[0] == v]
    cols = [name for _, _, name in ROWS] + ["epochs (tested)", "CPU s / epoch",
                                            "CPU s to tested epoch", "wall s to tested epoch",
                                            "peak GB"]
    print("| variant | seeds | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))

    def cell(values: list[float], fmt: str) -> str:
        values = [v for v in values if v is not None]
        if not values:
            return "-"
        if len(values) == 1:
            return format(values[0], fmt)
        return f"{format(np.mean(values), fmt)} ± {format(np.std(values, ddof=1), fmt)}"

    for v, rs in runs.items():
        if not rs:
            continue
        metric_cells = [cell([r[part][key] for r in rs], ".4f") for part, key, _ in ROWS]
        epochs = " / ".join(f"{r['epochs']} ({r['tested_epoch']})" for r in rs)
        print(f"| {v} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(metric_cells)
              + f" | {epochs} | {cell([r.get('cpu_epoch_s') for r in rs], '.2f')} | "
              f"{cell([r.get('cpu_to_tested_s') for r in rs], '.0f')} | "
              f"{cell([r['to_tested_s'] for r in rs], '.0f')} | "
              f"{cell([r['peak_gb'] for r in rs], '.2f')} |")
    print(f"| {REFERENCE['what']} | | - | - | {REFERENCE['unmasked NDCG@10']} | "
          f"{REFERENCE['unmasked HR@10']} | 5 | - | - | {REFERENCE['to tested epoch s']:.0f} "
          f"(369 s / epoch) | {REFERENCE['peak GB']} |")
    time_to_bert4rec(runs)
    chart(runs, HERE / "sequential_ml100k.png")


def first_reach(run: dict, level: float) -> tuple[float, int] | None:
    """(CPU seconds, epoch) when the run's validation NDCG@10 first reached `level`; None if never
    (or the run kept no curve)."""
    curve, seconds = run.get("val_ndcg10_hr10"), run.get("cpu_epochs_s")
    if not curve or not seconds:
        return None
    spent = np.cumsum(seconds)
    for epoch, (ndcg, _) in enumerate(curve):
        if ndcg >= level:
            return float(spent[epoch]), epoch + 1
    return None


def time_to_bert4rec(runs: dict[str, list[dict]]) -> None:
    """Per seed: CPU seconds until each variant's validation NDCG@10 (seen items masked) first
    reaches the best that BERT4Rec reached with the same seed."""
    bert = {r["seed"]: r for r in runs.get("bert4rec", [])}
    if not bert:
        return
    print()
    print("| variant | " + " | ".join(f"seed {s}: BERT4Rec's best {r['best_val_ndcg10']:.4f}"
                                       for s, r in sorted(bert.items())) + " |")
    print("|---|" + "---|" * len(bert))
    for v, rs in runs.items():
        by_seed = {r["seed"]: r for r in rs}
        cells = []
        for s, b in sorted(bert.items()):
            if s not in by_seed or "val_ndcg10_hr10" not in by_seed[s]:
                cells.append("-")  # not run, or run before the curve was kept
                continue
            hit = first_reach(by_seed[s], b["best_val_ndcg10"])
            cells.append("never" if hit is None else f"{hit[0]:.0f} s (epoch {hit[1]})")
        print(f"| {v} | " + " | ".join(cells) + " |")


def chart(runs: dict[str, list[dict]], path: Path) -> None:
    """Test NDCG@10 (masked, unmasked) against training time to the tested epoch, one point per
    run, the RecBole reference as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for ax, part in zip(axes, ("masked", "unmasked")):
        for i, (v, rs) in enumerate(runs.items()):
            if not rs:
                continue
            x = [r.get("cpu_to_tested_s", r["to_tested_s"]) for r in rs]
            y = [r[part]["test/ndcg@10"] for r in rs]
            ax.scatter(x, y, color=f"C{i}", label=v, alpha=0.8)
            ax.scatter([np.mean(x)], [np.mean(y)], color=f"C{i}", marker="D", s=70,
                       edgecolor="black")
        if part == "unmasked":
            ax.scatter([REFERENCE["to tested epoch s"]], [REFERENCE["unmasked NDCG@10"]],
                       marker="*", s=200, color="black",
                       label="RecBole SASRec (CE), wall s on 2 shared cores")
        ax.set_xscale("log")
        ax.set_xlabel("training CPU seconds to the tested epoch (1 thread)")
        ax.set_ylabel(f"test NDCG@10, seen items {'masked' if part == 'masked' else 'not masked'}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle("ML-100K seq-loo: each run (dots) and the seed mean (diamonds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "sequential_ml100k")
    ap.add_argument("--max-epochs", type=int, default=400)
    ap.add_argument("--summarize-only", action="store_true")
    ap.add_argument("--one", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.one:
        run_one(args.one[0], int(args.one[1]), args.threads, args.out, args.max_epochs)
        return
    if not args.summarize_only:
        for seed in args.seeds:  # every variant's first seed before any second seed
            for v in args.variants:
                if (args.out / f"{v}-s{seed}.json").exists():
                    continue
                print(f"running {v} seed {seed}", flush=True)
                subprocess.run([sys.executable, __file__, "--one", v, str(seed), "--threads",
                                str(args.threads), "--out", str(args.out), "--max-epochs",
                                str(args.max_epochs)], check=True)
    summarize(args.out, args.variants)


if __name__ == "__main__":
    main()
