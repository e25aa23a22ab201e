"""`lit-recs` / `python -m lit_recs`: LightningCLI with {fit, validate, test, predict}.

    lit-recs fit --config conf/quickstart.yaml
    lit-recs fit --config conf/base.yaml --data conf/data/ml-100k.yaml --model conf/model/mf.yaml
    lit-recs test --config <run>/config.yaml --ckpt_path <run>/checkpoints/best.ckpt

What this adds to LightningCLI:
- every size the data decides is linked from the DataModule into the model, never repeated in
  two YAML files: `num_users` / `num_items`, `num_features` / `num_fields` (field-encoded data),
  `item_vector_dim` / `history_length` (two-tower data), `max_len` (sequence data);
- every run gets its own folder (`--trainer.default_root_dir`, default `runs/<model>-<time>`) that
  holds config.yaml, checkpoints/, results.json, the W&B files and predictions;
- W&B runs offline, without prompting, when no credentials are configured; the run's config gets
  the resolved CLI config, the dataset fingerprint and the git commit; `WandbDashboard`
  (`lit_recs.dashboard`, options under `dashboard:`) adds the tables `recommendations` and
  `metrics_by_k`, the chart `ndcg_by_k`, artifacts (best checkpoint, results.json, config.yaml,
  predictions) and results.json's metrics and status in the summary;
- `fit` ends with `validate` and `test` on the best checkpoint when `test_after_fit` is true, so
  the val/* and test/* metrics in results.json describe the same epoch;
- `negative_distribution: hard` in the data gets the HardNegativeMiner callback (pool of 50)
  unless the trainer's callbacks already hold one;
- `predict` writes each user's top-K unseen items (raw ids) to `<run>/predictions.parquet` (and
  the user / item embeddings of models that have them, e.g. TwoTower);
- `--flush_denormal` (default true) makes the CPU treat subnormal floats as zero: weight decay
  leaves weights of dead units at 1e-39 and below, and every CPU product that reads them then
  runs several times slower (a NeuMF validation on a 1M-item catalogue took 3 min per batch
  instead of 36 s); TensorFlow flushes them by default for the same reason.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lit_recs.callbacks import (
    EpochSummary,
    HardNegativeMiner,
    HeapPolicy,
    RandomState,
    ResultsWriter,
    StillImproving,
    TopKWriter,
    git_commit,
    git_dirty,
)
from lit_recs.checkpoints import SafeCheckpointIO, load_checkpoint
from lit_recs.dashboard import WandbDashboard
from lit_recs.models.base import RecModule
from lit_recs.runtime import started_wandb_run

RUN_DIR_ENV = "LIT_RECS_RUN_DIR"
TRAINER_CKPT_NAMES = ("best", "last", "hpc")  # ckpt_path values the Trainer resolves
log = logging.getLogger(__name__)


def ensure_wandb_mode() -> None:
    """Without W&B credentials, run offline (never prompt); `wandb sync` uploads later."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"
    logging.getLogger(__name__).info("W&B: no credentials found, logging offline")


def _is_launcher_child() -> bool:
    """True in the processes that strategy='ddp' re-launches (they must reuse the parent's folder)."""
    return os.environ.get(RUN_DIR_ENV) is not None and int(os.environ.get("LOCAL_RANK", "0")) > 0


def run_folder(root: str | None, model_class: str, subcommand: str | None) -> str:
    """The folder this run writes to; the same on every process of a multi-process run.

    - no `default_root_dir`: `runs/<model>-<time>-<id>`; under torchrun / SLURM the id is the job's,
      so that every process names the same folder;
    - `validate`/`test`/`predict` pointed at a folder that already holds a run's results.json (e.g.
      through that run's config.yaml) write into a new subfolder `<subcommand>-<time>-<id>` of it, so
      they never overwrite the run they evaluate.
    """
    if _is_launcher_child():
        return os.environ[RUN_DIR_ENV]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job = os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_JOB_ID")
    suffix = f"job{job}" if job and job != "none" else f"{stamp}-{secrets.token_hex(2)}"
    if root is None:
        return f"runs/{model_class.rsplit('.', 1)[-1].lower()}-{suffix}"
    if subcommand != "fit" and (Path(root) / "results.json").is_file():
        return str(Path(root) / f"{subcommand}-{suffix}")
    return str(root)


def resumed_run(ckpt_path: str | None, subcommand: str | None) -> str | None:
    """`fit --ckpt_path <run>/checkpoints/<x>.ckpt` continues that run in its own folder (so its
    best checkpoint, early stopping and results stay together), unless a folder is given."""
    if subcommand != "fit" or not ckpt_path or ckpt_path in TRAINER_CKPT_NAMES:
        return None
    path = Path(ckpt_path)
    run = path.parent.parent
    if path.parent.name == "checkpoints" and (run / "config.yaml").is_file():
        return str(run)
    return None


def check_resume(ckpt_path: str | None, subcommand: str | None, given: str | None,
                 root: str) -> None:
    """`--ckpt_path last` names a run's last.ckpt: refuse it where there is no run to continue."""
    if ckpt_path != "last" or subcommand != "fit":
        return
    if given is None:
        raise ValueError("--ckpt_path last continues an interrupted run: name the run, e.g. "
                         "`lit-recs fit --config runs/<run>/config.yaml --ckpt_path last` or "
                         "--trainer.default_root_dir runs/<run>")
    if not any((Path(root) / "checkpoints").glob("last*.ckpt")):
        log.warning("--ckpt_path last: no last.ckpt in %s, starting from scratch",
                    Path(root) / "checkpoints")


def saved_run_folders(config_files: Any) -> set[Path]:
    """The folders of the `--config` files: a run's config.yaml pins its own folder as the W&B
    `save_dir` and `<folder>/checkpoints` as the checkpoints' `dirpath`; a command that runs in
    another folder (`test --config run/config.yaml --trainer.default_root_dir other`, or a
    `fit` from a saved config) moves them there, never writing into the run it read."""
    return {_resolved(c).parent for c in _as_list(config_files)}


def _resolved(path: Any) -> Path:
    return Path(str(path)).expanduser().resolve()


BATCH_LIMITS = tuple(f"trainer.limit_{stage}_batches" for stage in ("train", "val", "test", "predict"))


def integer_batch_limits(parser: Any) -> None:
    """`--trainer.limit_val_batches 1` means one batch, as in Lightning's Python API.

    The Trainer types these options `float | int | None`, float first, so the CLI parsed `1` as
    1.0, which Lightning reads as 100% of the batches: a quick check ran the whole evaluation.
    Integers now stay integers (`1`: one batch) and `1.0`, `0.25` stay fractions.
    """
    for action in parser._actions:
        if action.dest in BATCH_LIMITS and hasattr(action, "_typehint"):
            action._typehint = int | float | None


class RecCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", RecModule)
        # any LightningDataModule (RecDataModule subclasses, LibFFMDataModule, a user's own)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        self._cli_args = kwargs.get("args")
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        # field-encoded data (FeatureDataModule) -> FM, FFM, ...; ignored where either side lacks it
        parser.link_arguments("data.num_features", "model.init_args.num_features",
                              apply_on="instantiate")
        parser.link_arguments("data.num_fields", "model.init_args.num_fields",
                              apply_on="instantiate")
        # two-tower data (TwoTowerDataModule) -> TwoTower
        parser.link_arguments("data.item_vector_dim", "model.init_args.item_vector_dim",
                              apply_on="instantiate")
        parser.link_arguments("data.history_length", "model.init_args.history_length",
                              apply_on="instantiate")
        # sequence data (ClozeDataModule) -> BERT4Rec: the window length the data cuts
        parser.link_arguments("data.max_len", "model.init_args.max_len", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint (fit only)")
        parser.add_argument("--torch_num_threads", type=int | None, default=None,
                            help="CPU threads for torch ops (None: torch's default)")
        parser.add_argument("--flush_denormal", type=bool, default=True,
                            help="CPU: treat subnormal floats as zero (FTZ/DAZ; see README)")
        # W&B tables, artifacts and summary (only with a WandbLogger): `dashboard.sample_users`
        parser.add_lightning_class_args(WandbDashboard, "dashboard")
        integer_batch_limits(parser)

    def _parse_ckpt_path(self) -> None:
        """Lightning refills the model's arguments from `--ckpt_path`'s hyperparameters, over the
        config files and the command line; then `test --config run/config.yaml --ckpt_path ...
        --model.init_args.mask_seen false` would silently test with the saved value. When the
        model's arguments were given explicitly (a config naming the model, or --model.*), they
        are kept; with only a class name, or none, the checkpoint fills them in as in Lightning."""
        sub = self.config.get("subcommand")
        path = self.config[sub].get("ckpt_path") if sub else None
        if not path or str(path) in TRAINER_CKPT_NAMES or str(path).startswith("registry"):
            return  # resolved by the Trainer, and read through SafeCheckpointIO
        # weights only (lit_recs.checkpoints): a missing, corrupt or crafted file is refused here,
        # by name, before any run folder exists (Lightning's own torch.load names neither)
        hparams = dict(load_checkpoint(path).get("hyper_parameters") or {})
        model = self.config[sub].get("model")
        if model is not None and model.get("init_args") and self._model_args_given(sub):
            return
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        self.config = self.parser.parse_object({sub: {"model": hparams}}, self.config)

    def _model_args_given(self, sub: str) -> bool:
        args = [str(a) for a in (sys.argv[1:] if self._cli_args is None else self._cli_args)]
        if any(a.startswith("--model.") for a in args):
            return True
        model_files = [b for a, b in zip(args, args[1:]) if a == "--model" and b.endswith(".yaml")]
        config_files = [str(c) for c in (self.config[sub].get("config") or [])]
        for path in config_files:  # a config file with a model section (e.g. a run's config.yaml)
            text = yaml.safe_load(Path(path).read_text()) if Path(path).is_file() else None
            if isinstance(text, dict) and text.get("model"):
                return True
        return bool(model_files)

    # ---------------------------------------------------------------- run folder
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # before torch starts its CPU threads: they inherit the setting (see `flush_denormal`)
        torch.set_flush_denormal(bool(config.get("flush_denormal", True)))
        if config.get("torch_num_threads"):
            torch.set_num_threads(config.torch_num_threads)
        trainer = config.trainer
        given = trainer.default_root_dir or resumed_run(config.get("ckpt_path"), self.subcommand)
        root = run_folder(given, str(config.model.class_path), self.subcommand)
        check_resume(config.get("ckpt_path"), self.subcommand, given, root)
        os.environ[RUN_DIR_ENV] = root
        saved = saved_run_folders(config.get("config"))
        # only fit writes checkpoints: evaluating keeps the run's dirpath (as its checkpoints say)
        moved = {f / "checkpoints" for f in saved} if self.subcommand == "fit" else set()
        for cb in _as_list(trainer.callbacks):
            if _class_name(cb).endswith("ModelCheckpoint"):
                dirpath = cb.init_args.get("dirpath")
                if not dirpath or _resolved(dirpath) in moved:
                    cb.init_args["dirpath"] = str(Path(root) / "checkpoints")
                if cb.init_args.get("save_last") is None:  # last.ckpt: what `--ckpt_path last` resumes
                    cb.init_args["save_last"] = True
        for lg in _as_list(trainer.logger):
            save_dir = lg.init_args.get("save_dir")
            derived = save_dir in (None, "", ".", trainer.default_root_dir) or \
                _resolved(save_dir) in saved
            if _class_name(lg).endswith("WandbLogger") and derived:
                lg.init_args["save_dir"] = root
        trainer.default_root_dir = root
        self._created_root = not Path(root).exists()
        if any(_class_name(lg).endswith("WandbLogger") for lg in _as_list(trainer.logger)):
            ensure_wandb_mode()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        own_loader = type(trainer.strategy).load_checkpoint is not Strategy.load_checkpoint
        if own_loader and self.config[self.subcommand].get("ckpt_path"):
            raise ValueError(f"--ckpt_path with strategy {type(trainer.strategy).__name__}: it "
                             "reads checkpoints with its own loader (FSDP's and DeepSpeed's "
                             "unpickle), not lit_recs' weights-only one; use strategy auto or ddp")
        if sum(isinstance(cb, WandbDashboard) for cb in trainer.callbacks) > 1:
            raise ValueError("trainer.callbacks holds a WandbDashboard: the command adds one, set "
                             "its options under `dashboard:` (e.g. --dashboard.sample_users 50) "
                             "and remove it from trainer.callbacks")
        trainer.callbacks.append(ResultsWriter(config=self._config_dict()))
        ckpt = trainer.checkpoint_callback
        monitor = ckpt.monitor if isinstance(ckpt, ModelCheckpoint) else None
        mode = ckpt.mode if isinstance(ckpt, ModelCheckpoint) else "max"
        if self.subcommand == "fit" and monitor:
            trainer.callbacks.append(StillImproving(monitor, mode))
        if self.subcommand == "fit":
            trainer.callbacks += [HeapPolicy(), RandomState()]
            if trainer.progress_bar_callback is None:
                trainer.callbacks.append(EpochSummary(monitor, mode))
        hard = getattr(self.datamodule, "negative_distribution", None) == "hard"
        if self.subcommand == "fit" and hard and not any(
            isinstance(cb, HardNegativeMiner) for cb in trainer.callbacks
        ):
            trainer.callbacks.append(HardNegativeMiner())  # negatives from the last epoch's scores
        if self.subcommand == "predict" and not any(
            isinstance(cb, TopKWriter) for cb in trainer.callbacks
        ):
            trainer.callbacks.append(TopKWriter())
        return trainer

    def _config_dict(self) -> dict[str, Any]:
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else \
            self.config
        parser = self._parser(self.subcommand)
        return yaml.safe_load(parser.dump(config, skip_none=False, skip_check=True))

    # ---------------------------------------------------------------- run info, test after fit
    def _log_run_info(self) -> None:
        info = {
            "cli": self._config_dict(),
            "data_fingerprint": getattr(self.datamodule, "fingerprint", None),
            "git_commit": git_commit(),
            "git_dirty": git_dirty(),
            "subcommand": self.subcommand,
        }
        for lg in self.trainer.loggers:
            lg.log_hyperparams(info)

    def before_fit(self) -> None:
        self._log_run_info()

    def before_validate(self) -> None:
        self._log_run_info()

    def before_test(self) -> None:
        self._log_run_info()

    def before_predict(self) -> None:
        self._log_run_info()

    # ---------------------------------------------------------------- how the command ends
    def _run_subcommand(self, subcommand: str) -> None:
        """Runs the subcommand in its run folder and reports how it ended.

        - completed: prints the run folder and every file the command wrote in it;
        - interrupted (SIGTERM, SIGINT): results.json says `interrupted`, the command prints how to
          continue (`--ckpt_path last`) and exits with 128 + the signal's number (143, 130);
        - failed: an exception before the first checkpoint removes the run folder this command
          created (nothing in it is worth keeping); later, results.json says `failed`.
        """
        root = Path(self.trainer.default_root_dir)
        root.mkdir(parents=True, exist_ok=True)
        started = time.time()
        try:
            super()._run_subcommand(subcommand)
        except SystemExit as exit_:
            if not isinstance(exit_, SIGTERMException) and not self.trainer.interrupted:
                raise
            finish_wandb(self, completed=False)
            code = 128 + (signal.SIGTERM if isinstance(exit_, SIGTERMException) else signal.SIGINT)
            self._report_interrupted(root)
            raise SystemExit(code) from None
        except BaseException:
            finish_wandb(self, completed=False)
            self._remove_unfinished(root)
            raise
        finish_wandb(self, completed=True)
        self._report_written(root, started)

    def _report_interrupted(self, root: Path) -> None:
        if not self.trainer.is_global_zero:
            return
        last = root / "checkpoints" / "last.ckpt"
        lines = [f"{self.subcommand} interrupted after {self.trainer.current_epoch} completed "
                 f"epoch(s); run folder {root}", f"  {root / 'results.json'} (status: interrupted)"]
        if self.subcommand == "fit" and last.is_file():
            lines.append(f"  continue it: lit-recs fit --config {root / 'config.yaml'} "
                         "--ckpt_path last")
        print("\n".join(lines), file=sys.stderr, flush=True)

    def _remove_unfinished(self, root: Path) -> None:
        """A run that failed before writing any checkpoint leaves no folder behind (only one this
        command created, and only on the process that owns the folder)."""
        checkpoints = list((root / "checkpoints").glob("*.ckpt")) if root.is_dir() else []
        if self._created_root and not checkpoints and self.trainer.is_global_zero and \
                not _is_launcher_child():
            shutil.rmtree(root, ignore_errors=True)
            log.warning("the run failed before its first checkpoint: removed its folder %s", root)

    def _report_written(self, root: Path, since: float) -> None:
        """Prints the run folder and the files this command wrote there (W&B's as one folder)."""
        if not self.trainer.is_global_zero:
            return
        written = sorted(p for p in root.rglob("*") if p.is_file() and p.stat().st_mtime >= since
                         and "wandb" not in p.relative_to(root).parts)
        lines = [f"{self.subcommand} done; run folder {root}"]
        lines += [f"  {p}" for p in written]
        wandb_runs = sorted((root / "wandb").glob("*run-*")) if (root / "wandb").is_dir() else []
        lines += [f"  {p} (W&B)" for p in wandb_runs if p.stat().st_mtime >= since]
        print("\n".join(lines), flush=True)

    def after_fit(self) -> None:
        config = self.config[self.subcommand]
        if not config.get("test_after_fit", True) or self.trainer.interrupted:
            return
        ckpt = self.trainer.checkpoint_callback
        best = "best" if isinstance(ckpt, ModelCheckpoint) and ckpt.best_model_path else None
        if best:  # so that results.json's val/* and test/* describe the same (best) epoch
            self.trainer.validate(self.model, datamodule=self.datamodule, ckpt_path=best,
                                  verbose=False)
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _class_name(value: Any) -> str:
    return str(getattr(value, "class_path", "") or "")


def finish_wandb(cli: LightningCLI, completed: bool = False) -> None:
    """Close W&B runs so their files (summary, history) are complete when the command returns;
    before that, the WandbDashboard writes the summary (and, when `completed`, the artifacts).
    A dashboard error after a failure is logged, not raised over the command's own error."""
    trainer = getattr(cli, "trainer", None)
    dashboard = next((cb for cb in getattr(trainer, "callbacks", []) or []
                      if isinstance(cb, WandbDashboard)), None)
    try:
        if dashboard is not None:
            dashboard.end_of_command(trainer, cli.subcommand, completed)
    except Exception as error:
        if completed:
            raise
        log.warning("W&B dashboard: %s: %s", type(error).__name__, error)
    finally:
        for lg in getattr(trainer, "loggers", []) or []:
            run = started_wandb_run(lg) if isinstance(lg, WandbLogger) else None
            if run is not None:
                run.finish()


def quiet_known_warnings() -> None:
    """Warnings that are noise for lit_recs runs (each said once otherwise, not per metric).

    - Lightning recommends `sync_dist=True` for epoch-level logs under DDP: lit_recs' metrics are
      torchmetrics states summed across processes before `compute()`, so the logged values are
      already global and exact (tests/test_ddp.py); syncing them again would only cost time.
    - Lightning 2.6's own call of a deprecated torch pytree check, printed once per stage; nothing
      a user can act on.
    """
    warnings.filterwarnings("once", category=UserWarning)  # first: each later filter goes before it
    warnings.filterwarnings("ignore", message=r"(?s).*sync_dist=True")
    warnings.filterwarnings("ignore", message=r"(?s).*isinstance\(treespec, LeafSpec\)")


def run(args: list[str] | None = None) -> RecCLI:
    """Run the CLI in this process (tests, notebooks) and return it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_known_warnings()
    return RecCLI(args=args)


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: returns None so that a successful run exits with status 0."""
    run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
