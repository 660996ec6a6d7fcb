"""One training process of a ``lit-commeff`` run: build the recipe, strategy, logger and Trainer, then fit.

Runs either in a process the CLI started (``python -m lit_commeff.cli.worker RUN_DIR``, which reads the
resolved ``RUN_DIR/config.yaml``) or inside a process that torchrun/SLURM started (called directly by
the CLI). Distributed settings come from the environment (``MASTER_ADDR``, ``MASTER_PORT``,
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), which Lightning's cluster environments read.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf

import lit_commeff  # noqa: F401  (registers the strategies)
from lit_commeff.cli import faults
from lit_commeff.tracking.history import CommHistory

CONFIG_FILE = "config.yaml"
RUN_ID_FILE = "mlflow_run_id"


def build_strategy(cfg: DictConfig) -> Any:
    """The strategy object of a config (its constructor validates every option)."""
    return instantiate(cfg.strategy, timeout=timedelta(seconds=float(cfg.timeout_s)))


def build_recipe(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The recipe's data module and model."""
    return instantiate(cfg.recipe.data), instantiate(cfg.recipe.model)


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where checkpoints go: ``cfg.checkpoint_dir`` if set, else ``RUN_DIR/checkpoints``."""
    configured = cfg.get("checkpoint_dir")
    return Path(configured) if configured else run_dir / "checkpoints"


def train(cfg: DictConfig, run_dir: Path, run_id: str | None) -> pl.Trainer:
    """Fit the configured recipe with the configured strategy in this process; returns the Trainer."""
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    datamodule, model = build_recipe(cfg)
    strategy = build_strategy(cfg)
    monitor = getattr(datamodule, "monitor", "val/loss")
    mode = getattr(datamodule, "mode", "min")
    # Only global rank 0 talks to MLflow: opening a SQLite store from several processes at once races on
    # its schema migration, and Lightning logs from rank 0 anyway.
    logger: MLFlowLogger | bool = False
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
        logger = MLFlowLogger(
            experiment_name=cfg.logger.experiment, tracking_uri=cfg.logger.tracking_uri, run_id=run_id, log_model=False
        )
    callbacks: list[pl.Callback] = [
        CommHistory(run_dir, monitor),
        ModelCheckpoint(
            dirpath=checkpoint_dir(cfg, run_dir),
            save_last=True,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            every_n_train_steps=cfg.get("checkpoint_every_n_steps"),
        ),
        *faults.from_env(),
    ]
    trainer_options = cast(dict[str, Any], OmegaConf.to_container(cfg.trainer, resolve=True))  # a mapping node
    trainer = pl.Trainer(
        **trainer_options,
        strategy=strategy,
        logger=logger,
        callbacks=callbacks,
        use_distributed_sampler=False,  # the recipes shard their data per rank themselves
        default_root_dir=str(run_dir),
        enable_model_summary=False,
    )
    # weights_only: a checkpoint is tensors and plain types only, so resuming never unpickles code.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    return trainer


def main(argv: list[str] | None = None) -> int:
    """``python -m lit_commeff.cli.worker RUN_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lit_commeff.cli.worker RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0])
    cfg = cast(DictConfig, OmegaConf.load(run_dir / CONFIG_FILE))  # main() saved a mapping there
    run_id_path = run_dir / RUN_ID_FILE
    run_id = run_id_path.read_text().strip() if run_id_path.exists() else None
    train(cfg, run_dir, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
