"""Check a composed config before any training process starts: build every object once, check the data.

Hydra and the structured schema (:mod:`lit_commeff.cli.schema`) already reject unknown groups
(``strategy=olgaa`` lists the options), unknown keys and wrong types. Ranges and combinations are
checked here by the objects' own constructors, which name the field, the value and the fix; the error
is re-raised with the config key it came from (``strategy.theta``, ``compressor.ratio``, ...).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lit_commeff.cli.worker import build_recipe, build_strategy


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what to do."""


@dataclass
class Plan:
    """What the checks established."""

    world_size: int
    datamodule: Any
    strategy: Any


def world_size(cfg: DictConfig) -> int:
    """Processes of the run: ``trainer.devices × trainer.num_nodes`` (devices must be a count here)."""
    devices = cfg.trainer.devices
    if devices in (-1, "auto") and cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        devices = torch.cuda.device_count()
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ConfigError(
            f"trainer.devices: trainer.devices={devices!r} is not a process count; set trainer.devices=N "
            "(processes per node, e.g. 2 or 4 on CPU)."
        )
    nodes = int(cfg.trainer.num_nodes)
    if nodes < 1:
        raise ConfigError(f"trainer.num_nodes: trainer.num_nodes={nodes} must be >= 1.")
    return devices * nodes


def _wrap(key: str, err: BaseException) -> ConfigError:
    # Hydra wraps constructor errors ("Error in call to target ..."): report the constructor's own message.
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return ConfigError(f"{key}: {err}")


def validate(cfg: DictConfig, *, strategy_choice: str = "?") -> Plan:
    """Build the strategy, compressor, data module and model once and check the data for ``world_size``.

    Raises:
        ConfigError: The first problem found, naming the config key.
    """
    world = world_size(cfg)
    if cfg.compressor is not None and "compressor" not in cfg.strategy:
        warnings.warn(
            f"compressor: strategy={strategy_choice} has no compressor of its own kind; compressor= is ignored "
            "for it (it applies to olga, ef_olga and compressed).",
            stacklevel=2,
        )
    if cfg.compressor is not None:
        try:
            instantiate(cfg.compressor)
        except Exception as err:  # the compressor's own message names its option
            raise _wrap("compressor", err) from None
    try:
        strategy = build_strategy(cfg)
    except Exception as err:
        raise _wrap(f"strategy ({strategy_choice})", err) from None
    try:
        datamodule, _model = build_recipe(cfg)
    except Exception as err:
        raise _wrap(f"recipe ({cfg.recipe.get('name', '?')})", err) from None
    check = getattr(datamodule, "check", None)
    if check is not None:
        try:
            check(world)
        except (ValueError, FileNotFoundError, OSError) as err:
            raise _wrap("recipe.data", err) from None
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    try:  # Lightning's own checks (precision, accelerator, devices) and the strategy's world-size check
        pl.Trainer(
            **options,
            strategy=strategy,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
    except Exception as err:
        raise _wrap("trainer", err) from None
    return Plan(world_size=world, datamodule=datamodule, strategy=strategy)
