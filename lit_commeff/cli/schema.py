"""The structured schema of the Hydra tree in ``lit_commeff/conf``: unknown keys and wrong types fail at compose time.

Each strategy with options extends the schema made from its options object (:mod:`lit_commeff.options`):
``conf/strategy/olga.yaml`` starts with ``defaults: [schema/olga@_here_]``, so the option names, types
and defaults come from :class:`~lit_commeff.options.OLGAOptions` and the yaml states none of them.
Ranges and combinations are checked when the objects are built in the launching process (the options
raise :class:`~lit_commeff.options.OptionError`, naming field, value and fix); the groups whose content
is another object (``recipe``, ``compressor``) are checked by their constructors. See
:mod:`lit_commeff.cli.validate`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from lit_commeff.options import STRATEGY_OPTIONS, Options


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
    # false: rank 0 hands metrics to MLflow's background writer and trains on (a synchronous write stalled rank 0,
    # and through it every rank, 17-75 ms every log_every_n_steps on a busy 2-core machine: session 16)
    synchronous: bool = False


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


def _mergeable(hint: Any) -> Any:
    """``Any`` for an optional mapping (``dense_compressor_options: dict | None = None``), else the hint.

    OmegaConf cannot merge a command-line mapping (``strategy.dense_compressor_options={ratio:0.1}``) into a
    typed mapping node that holds ``None`` (it raises ``AttributeError``); the options object checks the value.
    """
    args = typing.get_args(hint)
    if type(None) in args and any(typing.get_origin(a) is dict or a is dict for a in args):
        return Any
    return hint


def strategy_schema(options: type[Options]) -> type:
    """The structured config of a strategy: a required ``_target_`` and the options' fields, types and defaults.

    A plain (not frozen) dataclass, so that command-line overrides can merge into it; the options object
    itself is frozen and checks the values when the strategy builds it.
    """
    hints = {name: _mergeable(hint) for name, hint in typing.get_type_hints(options).items()}
    spec = [(f.name, hints[f.name], field(default=f.default)) for f in fields(options)]
    return make_dataclass(f"{options.__name__}Schema", [("_target_", str, field(default=MISSING)), *spec])


def register() -> None:
    """Put the schemas in Hydra's ConfigStore.

    ``schema``, ``trainer/schema``, ``logger/schema`` and, per strategy with options, ``strategy/schema/<name>``.
    """
    cs = ConfigStore.instance()
    cs.store(name="schema", node=ConfigSchema)
    cs.store(group="trainer", name="schema", node=TrainerSchema)
    cs.store(group="logger", name="schema", node=LoggerSchema)
    for name, options in STRATEGY_OPTIONS.items():
        cs.store(group="strategy/schema", name=name, node=strategy_schema(options))


if __name__ == "__main__":  # python -m lit_commeff.cli.schema docs/strategies.md: regenerate the option tables
    import sys
    from pathlib import Path

    from lit_commeff.options import render_tables

    for path in map(Path, sys.argv[1:]):
        path.write_text(render_tables(path.read_text()))
