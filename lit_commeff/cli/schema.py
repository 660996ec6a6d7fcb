"""The structured schema of the Hydra tree in ``lit_commeff/conf``: unknown keys and wrong types fail at compose time.

Groups whose content is an object (``recipe``, ``strategy``, ``compressor``) are validated by building
the objects in the launching process (their constructors check every value and name the field);
see :mod:`lit_commeff.cli.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TrainerSchema:
    """Keys of the ``trainer`` group: arguments of ``lightning.pytorch.Trainer`` that a run may set."""

    accelerator: str = "cpu"
    devices: Any = 2
    num_nodes: int = 1
    max_epochs: int = 3
    max_steps: int = -1
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    val_check_interval: Any = 1.0
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    log_every_n_steps: int = 10
    num_sanity_val_steps: int = 2
    enable_progress_bar: bool = True
    deterministic: bool = False


@dataclass
class LoggerSchema:
    """Keys of the ``logger`` group: where MLflow runs go."""

    tracking_uri: str = MISSING
    experiment: str = "lit_commeff"
    run_name: str | None = None


@dataclass
class ConfigSchema:
    """The whole run."""

    recipe: Any = MISSING
    strategy: Any = MISSING
    compressor: Any = None
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    seed: int = 0
    ckpt_path: str | None = None
    resume_missing_ok: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every_n_steps: int | None = None
    timeout_s: float = 1800.0


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (``schema``, ``trainer/schema``, ``logger/schema``)."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=ConfigSchema)
    cs.store(group="trainer", name="schema", node=TrainerSchema)
    cs.store(group="logger", name="schema", node=LoggerSchema)
