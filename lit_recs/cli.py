"""`lit-recs` / `python -m lit_recs`: LightningCLI with {fit, validate, test, predict}.

    lit-recs fit --config conf/quickstart.yaml
    lit-recs fit --config conf/base.yaml --data conf/data/ml-100k.yaml --model conf/model/mf.yaml
    lit-recs test --config <run>/config.yaml --ckpt_path <run>/checkpoints/best.ckpt

What this adds to LightningCLI:
- `num_users` / `num_items` are linked from the DataModule into the model;
- every run gets its own folder (`--trainer.default_root_dir`, default `runs/<model>-<time>`) that
  holds config.yaml, checkpoints/, results.json, the W&B files and predictions;
- W&B runs offline, without prompting, when no credentials are configured; the run's config gets
  the resolved CLI config, the dataset fingerprint and the git commit;
- `fit` ends with `test` on the best checkpoint when `test_after_fit` is true;
- `predict` writes each user's top-K unseen items (raw ids) to `<run>/predictions.parquet`.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger

from lit_recs.callbacks import ResultsWriter, TopKWriter, git_commit
from lit_recs.data.datamodules import RecDataModule
from lit_recs.models.base import RecModule

RUN_DIR_ENV = "LIT_RECS_RUN_DIR"


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


class RecCLI(LightningCLI):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", RecModule)
        kwargs.setdefault("datamodule_class", RecDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.link_arguments("data.num_users", "model.init_args.num_users", apply_on="instantiate")
        parser.link_arguments("data.num_items", "model.init_args.num_items", apply_on="instantiate")
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="after fit, test the best checkpoint (fit only)")

    # ---------------------------------------------------------------- run folder
    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            if _is_launcher_child():
                trainer.default_root_dir = os.environ[RUN_DIR_ENV]
            else:
                model = str(config.model.class_path).rsplit(".", 1)[-1].lower()
                stamp = time.strftime("%Y%m%d-%H%M%S")
                trainer.default_root_dir = f"runs/{model}-{stamp}-{secrets.token_hex(2)}"
        os.environ[RUN_DIR_ENV] = str(trainer.default_root_dir)
        for cb in _as_list(trainer.callbacks):
            if _class_name(cb).endswith("ModelCheckpoint") and not cb.init_args.get("dirpath"):
                cb.init_args["dirpath"] = str(Path(trainer.default_root_dir) / "checkpoints")
        for lg in _as_list(trainer.logger):
            unset = lg.init_args.get("save_dir") in (None, "", ".")
            if _class_name(lg).endswith("WandbLogger") and unset:
                lg.init_args["save_dir"] = str(trainer.default_root_dir)
        if any(_class_name(lg).endswith("WandbLogger") for lg in _as_list(trainer.logger)):
            ensure_wandb_mode()
            Path(trainer.default_root_dir).mkdir(parents=True, exist_ok=True)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        trainer = super().instantiate_trainer(**kwargs)
        trainer.callbacks.append(ResultsWriter(config=self._config_dict()))
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

    def after_fit(self) -> None:
        config = self.config[self.subcommand]
        if not config.get("test_after_fit", True) or self.trainer.interrupted:
            return
        ckpt = self.trainer.checkpoint_callback
        has_best = isinstance(ckpt, ModelCheckpoint) and bool(ckpt.best_model_path)
        self.trainer.test(self.model, datamodule=self.datamodule,
                          ckpt_path="best" if has_best else None)


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _class_name(value: Any) -> str:
    return str(getattr(value, "class_path", "") or "")


def finish_wandb(cli: LightningCLI) -> None:
    """Close W&B runs so their files (summary, history) are complete when the command returns."""
    trainer = getattr(cli, "trainer", None)
    for lg in getattr(trainer, "loggers", []) or []:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            lg._experiment.finish()


def main(args: list[str] | None = None) -> RecCLI:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cli = RecCLI(args=args)
    finish_wandb(cli)
    return cli


if __name__ == "__main__":
    main(sys.argv[1:])
