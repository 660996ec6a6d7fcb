"""One training process of a ``lit-commeff`` run: build the recipe, strategy, logger and Trainer, then fit.

Runs either in a process the CLI started (``python -m lit_commeff.cli.worker RUN_DIR``, which reads the
resolved ``RUN_DIR/config.yaml``) or inside a process that torchrun/SLURM started (called directly by
the CLI). Distributed settings come from the environment (``MASTER_ADDR``, ``MASTER_PORT``,
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), which Lightning's cluster environments read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

import lit_commeff  # noqa: F401  (registers the strategies)
from lit_commeff.cli import faults
from lit_commeff.tracking.history import CommHistory
from lit_commeff.tracking.quiet import quiet_third_party

CONFIG_FILE = "config.yaml"
RUN_ID_FILE = "mlflow_run_id"
#: In ``checkpoint_dir``: replaced by the short hash of :func:`run_key`.
KEY_FIELD = "{key}"
#: The file in a checkpoint folder with the :func:`run_key` of the run that writes there.
RUN_KEY_FILE = "run_key.json"
#: The checkpoint entry with the :func:`run_key` (JSON text) of the run that wrote it.
RUN_KEY_ENTRY = "lit_commeff_run_key"


def build_strategy(cfg: DictConfig) -> Any:
    """The strategy object of a config (its constructor validates every option)."""
    return instantiate(cfg.strategy, timeout=timedelta(seconds=float(cfg.timeout_s)))


def build_recipe(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The recipe's data module and model."""
    return instantiate(cfg.recipe.data), instantiate(cfg.recipe.model)


def _world_size(cfg: DictConfig) -> int | str:
    """``trainer.devices × trainer.num_nodes`` (``devices=auto`` on GPUs: the GPUs seen); the raw value if no count."""
    devices = cfg.trainer.get("devices")
    if devices in (-1, "auto") and torch.cuda.is_available():
        devices = torch.cuda.device_count()
    try:
        return int(devices) * int(cfg.trainer.get("num_nodes", 1))
    except (TypeError, ValueError):
        return str(devices)


def run_key(cfg: DictConfig) -> dict[str, Any]:
    """Every setting a checkpoint depends on: what another value of makes it unusable for resuming this run.

    The recipe (its data, path included, and its model), the world size (every rank owns algorithm state)
    and the strategy with all its options (its compressor among them); not the Trainer's limits, the logger
    or the checkpoint cadence, which a resumed run may change.
    """
    return {
        "recipe": OmegaConf.to_container(cfg.recipe, resolve=True),
        "strategy": OmegaConf.to_container(cfg.strategy, resolve=True),
        "world_size": _world_size(cfg),
    }


def key_hash(key: dict[str, Any]) -> str:
    """A short stable hash of :func:`run_key` (10 hex digits), the ``{key}`` of ``checkpoint_dir``."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where checkpoints go: ``cfg.checkpoint_dir`` if set, else ``RUN_DIR/checkpoints``.

    ``{key}`` in ``checkpoint_dir`` is replaced by :func:`key_hash` of :func:`run_key`, so runs whose
    checkpoints cannot resume each other (another data path, model, world size, method or option) never
    share a folder; the default ``checkpoints/<recipe>-<strategy>-<compressor>-s<seed>-{key}`` has it.
    """
    configured = cfg.get("checkpoint_dir")
    if not configured:
        return run_dir / "checkpoints"
    text = str(configured)
    if KEY_FIELD in text:
        text = text.replace(KEY_FIELD, key_hash(run_key(cfg)))
    return Path(text)


class RecordRunKey(pl.Callback):
    """Store :func:`run_key` in every checkpoint (under :data:`RUN_KEY_ENTRY`) and in the folder's ``run_key.json``.

    The CLI compares it with the resuming run's before launch, and names the settings that differ.
    """

    def __init__(self, key: dict[str, Any], directory: Path) -> None:
        self.key = key
        self.directory = directory

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / RUN_KEY_FILE).write_text(json.dumps(self.key, indent=1, sort_keys=True, default=str))

    @override
    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[RUN_KEY_ENTRY] = json.dumps(self.key, sort_keys=True, default=str)


class ValidateAtLastStep(pl.Callback):
    """Validate after the last training step when ``max_steps`` ends the run before the epoch does.

    Lightning validates at the end of an epoch (or every ``val_check_interval``); a run stopped by
    ``max_steps`` in the middle of an epoch would end without a metric for its final weights. At the
    last step this sets ``trainer.should_stop``, on which Lightning runs the validation loop before it
    leaves the epoch (once: not again if that step validates anyway). Every rank reaches the same step,
    so they all validate.
    """

    @override
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        max_steps = trainer.max_steps
        if max_steps is not None and max_steps > 0 and trainer.global_step >= max_steps:
            trainer.should_stop = True


def train(cfg: DictConfig, run_dir: Path, run_id: str | None) -> pl.Trainer:
    """Fit the configured recipe with the configured strategy in this process; returns the Trainer."""
    quiet_third_party()  # third-party tips and notices that are not the user's to fix (real warnings stay)
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
            experiment_name=cfg.logger.experiment,
            tracking_uri=cfg.logger.tracking_uri,
            run_id=run_id,
            log_model=False,
            # MLflow's background writer: a log step does not wait for the store (flushed when the run ends)
            synchronous=bool(cfg.logger.get("synchronous", False)),
        )
    checkpoints = checkpoint_dir(cfg, run_dir)
    callbacks: list[pl.Callback] = [
        CommHistory(run_dir, monitor),
        RecordRunKey(run_key(cfg), checkpoints),
        ModelCheckpoint(
            dirpath=checkpoints,
            save_last=True,
            monitor=monitor,
            mode=mode,
            save_top_k=1,
            every_n_train_steps=cfg.get("checkpoint_every_n_steps"),
        ),
        ValidateAtLastStep(),
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


def close_process_group() -> None:
    """Destroy this process's default process group, if any, while the interpreter is fully alive.

    Without it gloo's worker threads outlive ``main`` and, at interpreter shutdown, a rank that trained to the
    end can still abort ("terminate called without an active exception", exit code -6): seen once in CI on a
    2-rank OLGA run, and a known torch.distributed behaviour (pytorch/pytorch#190489).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


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
    try:
        train(cfg, run_dir, run_id)
    except SystemExit:
        # a SIGTERM stop leaves fit() as SystemExit; our strategies close the group then, Lightning's ddp does not
        close_process_group()
        raise
    close_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
