"""Helpers several test files share: composing and validating a CLI config, free ports, spawned gloo workers."""

from __future__ import annotations

import json
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

#: Trainer overrides of a short CLI run: 6 steps, 2 validations of 2 batches, a metric every step.
FAST = [
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
]


def validate_overrides(overrides: list[str], strategy_choice: str = "test") -> Any:
    """Compose the overrides as ``lit-commeff`` does and run its pre-launch validation (nothing is started)."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from lit_commeff.cli.validate import validate

    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # the ${hydra:...} resolver reads the HydraConfig instance set above
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return validate(resolved, strategy_choice=strategy_choice)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_reports(worker: Callable[..., None], folder: Path, world: int) -> list[dict]:
    """Run ``worker(rank, port, out)`` on ``world`` spawned processes; each writes JSON to ``f"{out}.{rank}"``."""
    out = str(folder / "report")
    mp.start_processes(worker, args=(free_port(), out), nprocs=world, join=True, start_method="spawn")
    return [json.loads(Path(f"{out}.{rank}").read_text()) for rank in range(world)]
