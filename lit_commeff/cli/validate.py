"""Check a composed config before any training process starts: build every object once, check the data.

Hydra and the structured schema (:mod:`lit_commeff.cli.schema`) already reject unknown groups
(``strategy=olgaa`` lists the options), unknown keys of ``trainer``/``logger``/``strategy`` and wrong
types (the strategies' schemas are their options objects). Here:

* the top-level keys (``seed``, ``ckpt_path``, ``checkpoint_dir``, ``checkpoint_every_n_steps``,
  ``timeout_s``), the ``trainer`` ranges Lightning would only reject once the ranks run, the
  accelerator (``gpu`` without CUDA) and the ``logger`` (a malformed ``tracking_uri``);
* unknown keys added to the object groups (``+recipe.data.foo=1``, ``+strategy.foo=1``), checked
  against the constructor of the ``_target_``;
* ranges and combinations of the objects' own options, checked by their constructors, which name the
  field, the value and the fix; the error is re-raised with the config key it came from
  (``strategy (olga): theta: ...``, ``compressor: randk.ratio: ...``, ``recipe.data: batch_size: ...``).
  A strategy's options object raises :class:`~lit_commeff.options.OptionError`, whose field, value and
  fix are used as they are; the other objects' ``ValueError`` text is read for the option it names;
* the data, loaded and checked for the run's world size (``recipe.data: path: ...``).

Every message reads ``<config key>: <what is wrong, with the value>; <how to fix it>``. The errors Hydra
raises while composing (an unknown group option, a key at the wrong path, a wrong type) are put in the
same form by :func:`explain_hydra_error`, which names the nearest real key or the group options that have
the key; the top level rejects keys added with ``+`` too.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import urlsplit

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from lit_commeff.cli.schema import ConfigSchema, LoggerSchema
from lit_commeff.cli.worker import RUN_KEY_ENTRY, RUN_KEY_FILE, build_strategy, key_hash, run_key
from lit_commeff.options import OptionError
from lit_commeff.strategy.state import CHECKPOINT_KEY


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what to do."""


@dataclass
class Plan:
    """What the checks established."""

    world_size: int
    datamodule: Any
    strategy: Any


#: A constructor message about one option: ``name: name=value ...`` (or ``owner.name: name=value ...``).
_OPTION = re.compile(r"(?:[\w-]+\.)?(\w+): \1=")
#: Words with which a message says what to do.
_HAS_FIX = re.compile(r"\b(use|set|pass|choose|pick|lower|raise|remove|give|install)\b")
#: Largest seed :func:`lightning.pytorch.seed_everything` accepts (it silently picks a random one above).
MAX_SEED = 2**32 - 1
#: ``ckpt_path`` values Lightning resolves itself rather than as a file.
CKPT_KEYWORDS = ("last", "hpc")
#: Trainer arguments the CLI passes itself (a ``trainer.`` key for one would clash).
TRAINER_RESERVED = (
    "strategy",
    "logger",
    "callbacks",
    "use_distributed_sampler",
    "default_root_dir",
    "enable_model_summary",
)
#: URI schemes an MLflow tracking store understands out of the box ("" is a local path).
TRACKING_SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "uc")


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
        raise ConfigError(
            f"trainer.num_nodes: trainer.num_nodes={nodes} must be >= 1; set trainer.num_nodes=1 or more."
        )
    return devices * nodes


def _unwrap(err: BaseException) -> BaseException:
    """The constructor's own error inside Hydra's ``InstantiationException``."""
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    return err


def _wrap_option(key: str, err: OptionError, cfg: DictConfig, name: str) -> ConfigError:
    """``key: <field>: <what is wrong>; <fix>; set <config key> accordingly.``, from the error's fields.

    Args:
        key: What the message starts with (``strategy (olga)``).
        err: The options object's error.
        cfg: The whole config: a field that is also a top-level key (``compressor``, ``seed``) is interpolated
            into the node from there, so that is the key to set.
        name: The key of the node the object was built from (``strategy``).
    """
    field = err.field
    where = field if field in cfg else f"{name}.{field}" if field in cfg[name] else None
    then = f"; set {where} accordingly" if where is not None else ""
    return ConfigError(f"{key}: {field}: {err.what}; {err.fix}{then}.")


def _wrap(key: str, err: BaseException, node: str | None = None) -> ConfigError:
    """``key: <the constructor's message>``; if that names an option but no fix, the option to set is added.

    For objects that raise plain ``ValueError`` (compressors, recipes); the strategies raise
    :class:`~lit_commeff.options.OptionError`, see :func:`_wrap_option`.

    Args:
        key: What the message starts with (``compressor``, ``recipe.data``, ...).
        err: The error (Hydra's wrapper around a constructor error is unwrapped).
        node: The config node the object was built from (``recipe.data``), for the full key of the option.
    """
    err = _unwrap(err)
    text = str(err)
    option = _OPTION.match(text)
    if node is not None and option is not None and not _HAS_FIX.search(text):
        text = f"{text.rstrip('.')}; set {node}.{option.group(1)} accordingly."
    return ConfigError(f"{key}: {text}")


def _wrap_trainer(options: dict[str, Any], err: BaseException) -> ConfigError:
    """Lightning's own message, under the ``trainer.KEY`` it names (if it names one) and with the fix."""
    text = str(err).rstrip(".")
    for key in sorted(options, key=len, reverse=True):
        if key in text.lower():
            return ConfigError(
                f"trainer.{key}: {text} (trainer.{key}={options[key]!r}); set trainer.{key} to a value Lightning "
                "accepts."
            )
    return ConfigError(f"trainer: {text}; fix the trainer options (trainer.KEY=VALUE) accordingly.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ----------------------------------------------------------------------------------- top-level keys
def _check_run_keys(cfg: DictConfig) -> None:
    """``seed``, ``timeout_s``, ``checkpoint_every_n_steps``, ``checkpoint_dir`` and ``ckpt_path``."""
    seed = cfg.get("seed", 0)
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed: seed={seed!r} is out of range; use an integer in [0, {MAX_SEED}] (e.g. seed=0).")
    timeout = cfg.get("timeout_s", 1800.0)
    if not _is_number(timeout) or timeout <= 0:
        raise ConfigError(
            f"timeout_s: timeout_s={timeout!r} is invalid; set the collective timeout to a number of seconds > 0 "
            "(e.g. timeout_s=1800)."
        )
    every = cfg.get("checkpoint_every_n_steps")
    if every is not None and (not _is_int(every) or every < 1):
        raise ConfigError(
            f"checkpoint_every_n_steps: checkpoint_every_n_steps={every!r} is invalid; set it to a number of "
            "training steps >= 1, or to null to save once per epoch."
        )
    directory = cfg.get("checkpoint_dir")
    if directory:
        _check_checkpoint_dir(Path(str(directory)).expanduser())
    _check_ckpt_path(cfg.get("ckpt_path"), directory)


def _check_checkpoint_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"checkpoint_dir: checkpoint_dir={str(path)!r} is a file, not a directory; set checkpoint_dir to a "
            "directory (it is created if missing)."
        )
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"checkpoint_dir: checkpoint_dir={str(path)!r} cannot be created: {str(existing)!r} is a file; set "
            "checkpoint_dir to a path under a directory."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"checkpoint_dir: checkpoint_dir={str(path)!r} is not writable ({str(existing)!r} is read-only for this "
            "user); set checkpoint_dir to a writable directory."
        )


def _check_ckpt_path(value: Any, directory: Any) -> None:
    if value is None or value in CKPT_KEYWORDS:
        return
    text = str(value)
    if "://" in text or text.startswith("registry:"):  # remote storage (fsspec) or a model registry: not checked here
        return
    example = f"{directory}/last.ckpt" if directory else "checkpoints/last.ckpt"
    fix = (
        f"pass the path of a saved checkpoint (e.g. ckpt_path={example}), ckpt_path=last to resume from the newest "
        "last.ckpt in checkpoint_dir, or ckpt_path=null to start fresh"
    )
    if text == "best":
        raise ConfigError(f"ckpt_path: ckpt_path='best' has no meaning before training; {fix}.")
    path = Path(text).expanduser()
    if path.is_dir():
        raise ConfigError(f"ckpt_path: ckpt_path={text!r} is a directory, not a checkpoint file; {fix}.")
    if not path.is_file():
        raise ConfigError(f"ckpt_path: checkpoint file {text!r} does not exist; {fix}.")


#: Checkpoints Lightning's ``ckpt_path="last"`` picks from: ``ModelCheckpoint._find_last_checkpoints`` takes
#: every ``.ckpt`` whose stem starts with ``last`` (``last.ckpt``, ``last-v1.ckpt``).
_LAST_CHECKPOINT = re.compile(r"^last.*\.ckpt$")


def check_resume(cfg: DictConfig, directory: Path) -> None:
    """``ckpt_path=last`` needs a last checkpoint of this run's settings in ``directory`` (where its checkpoints go).

    Lightning warns and starts from scratch when there is none; a resume that silently restarts is an
    error here unless the config says ``resume_missing_ok=true``. The newest last checkpoint (the one
    Lightning resumes) must have been written under this run's settings (:func:`check_checkpoint`); when
    there is none, a folder of the same template written under other settings is named with them.

    Raises:
        ConfigError: ``ckpt_path=last``, no ``last*.ckpt`` in ``directory`` and ``resume_missing_ok`` is false;
            or the last checkpoint was written under other settings.
    """
    if cfg.get("ckpt_path") != "last":
        return
    found = sorted(
        (p for p in directory.iterdir() if _LAST_CHECKPOINT.match(p.name)) if directory.is_dir() else [],
        key=lambda p: p.stat().st_mtime,
    )
    if found:  # Lightning resumes the newest
        check_checkpoint(cfg, found[-1], key="ckpt_path")
        return
    if cfg.get("resume_missing_ok", False):
        return
    other = _other_settings(cfg, directory)
    raise ConfigError(
        f"ckpt_path: ckpt_path='last' but there is no last checkpoint to resume from in {str(directory)!r} "
        f"(checkpoint_dir){other}; rerun without ckpt_path to start fresh, point checkpoint_dir at the directory of "
        "the run to resume, or set resume_missing_ok=true to start fresh when there is nothing to resume."
    )


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """``key=<saved> (this run: <current>)`` for every leaf where two :func:`~lit_commeff.cli.worker.run_key` differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for name in sorted(set(saved) | set(current), key=str):
            if str(name).startswith("_") and name != "_target_":
                continue
            out += _differences(saved.get(name), current.get(name), f"{prefix}.{name}" if prefix else str(name))
        return out
    if saved == current:
        return []
    return [f"{prefix}={saved!r} (this run: {current!r})"]


def _described(differences: list[str], limit: int = 3) -> str:
    more = f" and {len(differences) - limit} more" if len(differences) > limit else ""
    return ", ".join(differences[:limit]) + more


def _other_settings(cfg: DictConfig, directory: Path) -> str:
    """For a missing last checkpoint: a sibling folder of the same template with one written under other settings."""
    if not all(k in cfg for k in ("recipe", "strategy", "trainer")):
        return ""  # a partial config (the check used on its own): no settings to compare against
    current = run_key(cfg)
    name = directory.name.replace(key_hash(current), "*")
    if "*" not in name or not directory.parent.is_dir():
        return ""
    candidates = []
    for folder in directory.parent.glob(name):
        key_file = folder / RUN_KEY_FILE
        if folder == directory or not key_file.is_file():
            continue
        if not any(_LAST_CHECKPOINT.match(p.name) for p in folder.iterdir()):
            continue
        try:
            saved = json.loads(key_file.read_text())
        except (OSError, ValueError):
            continue
        differences = _differences(saved, json.loads(json.dumps(current, default=str)))
        if differences:
            candidates.append((len(differences), str(folder), differences))
    if not candidates:
        return ""
    _, nearest, differences = min(candidates)
    return f"; {nearest!r} holds one written with other settings: {_described(differences)}"


def check_checkpoint(cfg: DictConfig, path: Path, *, key: str = "ckpt_path", model: Any = None) -> None:
    """A checkpoint to resume must come from a run with this run's settings; one line naming the first that differ.

    Compared: the :func:`~lit_commeff.cli.worker.run_key` the CLI stores in its checkpoints (data path, model,
    world size, method and options); for a checkpoint without one, the world size and strategy of its
    ``lit_commeff`` state and, given ``model``, the shapes of its weights.

    Raises:
        ConfigError: The checkpoint cannot be read, or was written under other settings.
    """
    fix = (
        "resume with the settings it was written with, or start fresh without ckpt_path (checkpoints of other "
        "settings go to another checkpoint_dir folder)"
    )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # any unreadable file: one line, not a traceback on every rank
        raise ConfigError(
            f"{key}: cannot read the checkpoint {str(path)!r} ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "pass a checkpoint lit-commeff wrote, or start fresh without ckpt_path."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{key}: {str(path)!r} is not a Lightning checkpoint; pass one lit-commeff wrote.")
    current = run_key(cfg)
    stored = checkpoint.get(RUN_KEY_ENTRY)
    if isinstance(stored, str):
        differences = _differences(json.loads(stored), json.loads(json.dumps(current, default=str)))
        if differences:
            raise ConfigError(
                f"{key}: the checkpoint {str(path)!r} was written with other settings: {_described(differences)}; "
                f"{fix}."
            )
        return
    entry = checkpoint.get(CHECKPOINT_KEY)
    if isinstance(entry, dict) and entry.get("world_size") not in (None, current["world_size"]):
        raise ConfigError(
            f"{key}: the checkpoint {str(path)!r} was written by {entry['world_size']} processes, this run has "
            f"{current['world_size']} (every rank owns algorithm state); set trainer.devices × trainer.num_nodes to "
            f"{entry['world_size']}, or start fresh without ckpt_path."
        )
    weights = checkpoint.get("state_dict")
    if model is not None and isinstance(weights, dict):
        own = model.state_dict()
        for name, tensor in weights.items():
            if name in own and hasattr(tensor, "shape") and tuple(tensor.shape) != tuple(own[name].shape):
                raise ConfigError(
                    f"{key}: the checkpoint {str(path)!r} holds {name} of shape {tuple(tensor.shape)}, this run's "
                    f"recipe.model has {tuple(own[name].shape)}; {fix}."
                )


# ----------------------------------------------------------------------------------- trainer
def _check_accelerator(cfg: DictConfig) -> None:
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(
            f"trainer.accelerator: trainer.accelerator={accelerator!r}, but no CUDA GPU is available here (torch "
            f"{torch.__version__}, {build}); use trainer=cpu2 (or trainer.accelerator=cpu), or run on a machine "
            "with CUDA GPUs."
        )


def _check_trainer_keys(trainer: DictConfig) -> None:
    """Keys added with ``+trainer.KEY=...`` must be ``Trainer`` arguments the CLI does not set itself."""
    accepted = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    for name in trainer:
        if name in TRAINER_RESERVED:
            raise ConfigError(
                f"trainer.{name}: lit-commeff sets Trainer({name}=...) itself; remove trainer.{name} (choose the "
                "strategy with strategy=..., the logger with logger=...)."
            )
        if name not in accepted:
            close = difflib.get_close_matches(str(name), sorted(accepted), n=1)
            hint = f"did you mean trainer.{close[0]}? " if close else ""
            known = ", ".join(sorted(accepted - set(TRAINER_RESERVED)))
            raise ConfigError(
                f"trainer.{name!s}: {name!r} is not an argument of lightning.pytorch.Trainer; {hint}remove it "
                f"(the Trainer's arguments: {known})."
            )


def _check_trainer_ranges(trainer: DictConfig) -> None:
    """The ranges Lightning accepts at ``Trainer(...)`` but fails on (or ignores) once the ranks train."""

    def bad(key: str, value: Any, fix: str) -> ConfigError:
        return ConfigError(f"trainer.{key}: trainer.{key}={value!r} is invalid; {fix}.")

    for key in ("max_epochs", "max_steps"):
        value = trainer.get(key)
        if value is not None and (not _is_int(value) or value < -1):
            raise bad(key, value, f"set trainer.{key} to an integer >= 0, or -1 for no limit")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (not _is_number(clip) or clip < 0):
        raise bad("gradient_clip_val", clip, "set a finite norm >= 0, or null for no clipping")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, bool) or (
        isinstance(interval, int | float) and not (_is_number(interval) and interval > 0)
    ):
        raise bad(
            "val_check_interval",
            interval,
            "use a share of the epoch in (0, 1], a number of training batches >= 1, or null",
        )
    every = trainer.get("check_val_every_n_epoch")
    if every is not None and (not _is_int(every) or every < 1):
        raise bad("check_val_every_n_epoch", every, "set it to a number of epochs >= 1, or null")
    steps = trainer.get("log_every_n_steps")
    if steps is not None and (not _is_int(steps) or steps < 1):
        raise bad("log_every_n_steps", steps, "set it to a number of steps >= 1")
    sanity = trainer.get("num_sanity_val_steps")
    if sanity is not None and (not _is_int(sanity) or sanity < -1):
        raise bad("num_sanity_val_steps", sanity, "set it to a number of batches >= 0, or -1 for all")


def _check_world(strategy: Any, world: int, strategy_choice: str) -> None:
    need = int(getattr(strategy, "min_world_size", 1))
    if world < need:
        raise ConfigError(
            f"trainer.devices: strategy={strategy_choice} ({type(strategy).__name__}) needs at least {need} processes, "
            f"but trainer.devices × trainer.num_nodes = {world}; set trainer.devices={need} or more (trainer=cpu2)."
        )


# ----------------------------------------------------------------------------------- logger
def _check_logger(logger: DictConfig) -> None:
    known = [f.name for f in fields(LoggerSchema)]
    for name in logger:
        if name not in known:
            raise ConfigError(f"logger.{name!s}: {name!r} is not a logger option; remove it or use one of {known}.")
    uri = logger.get("tracking_uri")
    fix = (
        "set logger.tracking_uri to sqlite:///ABSOLUTE/PATH/mlflow.db (logger=mlflow_local), "
        "http://HOST:PORT of an MLflow server (logger=mlflow_server), or a local directory"
    )
    if not isinstance(uri, str) or not uri.strip():
        raise ConfigError(f"logger.tracking_uri: logger.tracking_uri={uri!r} is empty; {fix}.")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower().split("+")[0]  # postgresql+psycopg2 -> postgresql
    if len(scheme) == 1:  # a Windows drive letter: a local path
        scheme = ""
    if scheme not in TRACKING_SCHEMES and not scheme.startswith("databricks"):
        raise ConfigError(
            f"logger.tracking_uri: logger.tracking_uri={uri!r} has the unknown scheme {parts.scheme!r} (known: "
            f"{[s for s in TRACKING_SCHEMES if s]}); {fix}."
        )
    if scheme in ("http", "https") and not parts.hostname:
        raise ConfigError(f"logger.tracking_uri: logger.tracking_uri={uri!r} names no host; {fix}.")
    if scheme == "sqlite":
        if not uri.lower().startswith("sqlite:///") or len(uri) <= len("sqlite:///"):
            raise ConfigError(
                f"logger.tracking_uri: logger.tracking_uri={uri!r} is not a SQLite URI (it needs three slashes and a "
                f"file: sqlite:///relative.db or sqlite:////absolute/path.db); {fix}."
            )
        parent = Path(uri[len("sqlite:///") :]).expanduser().parent
        if not parent.is_dir():
            raise ConfigError(
                f"logger.tracking_uri: the directory {str(parent)!r} of the SQLite store {uri!r} does not exist; "
                f"create it, or {fix}."
            )
    experiment = logger.get("experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(
            f"logger.experiment: logger.experiment={experiment!r} is empty; set an MLflow experiment name "
            "(e.g. logger.experiment=lit_commeff)."
        )


# ----------------------------------------------------------------------------------- object groups
def _accepted_options(target: Any) -> set[str] | None:
    """Keyword options ``target`` accepts, following ``**kwargs`` up the class hierarchy (``None``: any).

    A strategy's ``options_cls`` (:mod:`lit_commeff.options`) adds its fields: its constructor takes them as
    keywords.
    """
    if inspect.isclass(target):
        inits = [cls.__dict__["__init__"] for cls in target.__mro__ if "__init__" in cls.__dict__]
        owners: list[type | None] = [cls for cls in target.__mro__ if "__init__" in cls.__dict__]
    else:
        inits, owners = [target], [None]
    options = getattr(target, "options_cls", None)
    names: set[str] = set(options.names()) if options is not None else set()
    for owner, init in zip(owners, inits, strict=True):
        try:
            params = list(inspect.signature(init).parameters.values())
        except (TypeError, ValueError):
            return None
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
        if owner is DDPStrategy:  # its **kwargs go to DistributedDataParallel
            ddp = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
            return names | {n for n in ddp if n not in ("self", "module")}
    return None


def _check_options(node: Any, key: str) -> None:
    """Every key of a ``_target_`` node must be an option of the target (``+recipe.data.foo=1`` is a typo)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        target = get_object(str(node._target_))
    except Exception as err:  # any import failure: report it with the key
        raise ConfigError(
            f"{key}._target_: cannot import {node._target_!r} ({err}); set _target_ to an importable class, or pick "
            f"a {key.split('.')[0]} from the config group."
        ) from None
    accepted = _accepted_options(target)
    if accepted is None:
        return
    documented = sorted(k for k in node if not str(k).startswith("_") and k in accepted)
    for name in node:
        if str(name).startswith("_") or name in accepted:
            continue
        close = difflib.get_close_matches(str(name), sorted(accepted), n=1)
        hint = f"did you mean {key}.{close[0]}? " if close else ""
        raise ConfigError(
            f"{key}.{name!s}: {name!r} is not an option of {getattr(target, '__name__', target)}; {hint}remove it "
            f"or use one of its options {documented}."
        )


def _check_k_or_ratio(node: DictConfig, key: str) -> None:
    """A sparsifier takes ``k`` or ``ratio``; its preset holds a ratio, so setting ``k`` needs ``ratio=null``."""
    k, ratio = node.get("k"), node.get("ratio")
    if k is not None and ratio is not None:
        raise ConfigError(
            f"{key}.k: {key}.k={k!r} and {key}.ratio={ratio!r} are both set (the preset holds ratio={ratio!r}); "
            f"a compressor takes one of them: set {key}.ratio=null to use {key}.k={k!r}, or {key}.k=null to keep "
            "the ratio."
        )


def _check_top_keys(cfg: DictConfig) -> None:
    """Keys added at the top level (``+anything=1``) are no option of ``lit-commeff``."""
    known = [f.name for f in fields(ConfigSchema)]
    for name in cfg:
        if name in known:
            continue
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ConfigError(
            f"{name!s}: {name!r} is not a lit-commeff key (+{name!s}=... added it); {hint}remove it, or use one of the "
            f"top-level keys {known}."
        )


def _check_recipe_keys(recipe: Any) -> None:
    if not isinstance(recipe, DictConfig):
        raise ConfigError(f"recipe: recipe={recipe!r} is not a recipe; use recipe=finance_credit (or another recipe).")
    for name in recipe:
        if name not in ("name", "data", "model"):
            raise ConfigError(
                f"recipe.{name!s}: a recipe has the keys name, data and model, not {name!r}; remove it, or move it "
                f"under recipe.data or recipe.model."
            )
    for part in ("data", "model"):
        if "_target_" not in (recipe.get(part) or {}):
            raise ConfigError(f"recipe.{part}: the recipe has no {part}._target_; use a recipe from the recipe group.")
        _check_options(recipe[part], f"recipe.{part}")


def validate(cfg: DictConfig, *, strategy_choice: str = "?") -> Plan:
    """Check every key, build the strategy, compressor, data module and model once, and check the data.

    Raises:
        ConfigError: The first problem found, naming the config key, the value and the fix.
    """
    _check_top_keys(cfg)
    _check_run_keys(cfg)
    _check_accelerator(cfg)
    world = world_size(cfg)
    _check_trainer_keys(cfg.trainer)
    _check_trainer_ranges(cfg.trainer)
    _check_logger(cfg.logger)
    if cfg.compressor is not None and "compressor" not in cfg.strategy:
        warnings.warn(
            f"compressor: strategy={strategy_choice} has no compressor of its own kind; compressor= is ignored "
            "for it (it applies to olga, ef_olga and compressed).",
            stacklevel=2,
        )
    if cfg.compressor is not None:
        if not isinstance(cfg.compressor, DictConfig) or "_target_" not in cfg.compressor:
            given = OmegaConf.to_container(cfg.compressor) if isinstance(cfg.compressor, DictConfig) else cfg.compressor
            raise ConfigError(
                f"compressor: compressor={given!r} "
                "names no compressor; pick one from the group first (compressor=topk, compressor=randk, ...), "
                "then set its keys, or compressor=null for the strategy's own default."
            )
        _check_options(cfg.compressor, "compressor")
        _check_k_or_ratio(cfg.compressor, "compressor")
        try:
            instantiate(cfg.compressor)
        except Exception as err:  # the compressor's own message names its option
            raise _wrap("compressor", err, "compressor") from None
    _check_options(cfg.strategy, "strategy")
    try:
        strategy = build_strategy(cfg)
    except Exception as err:
        cause = _unwrap(err)
        if isinstance(cause, OptionError):
            raise _wrap_option(f"strategy ({strategy_choice})", cause, cfg, "strategy") from None
        raise _wrap(f"strategy ({strategy_choice})", cause) from None
    _check_world(strategy, world, strategy_choice)
    _check_recipe_keys(cfg.recipe)
    try:
        datamodule = instantiate(cfg.recipe.data)
    except Exception as err:
        raise _wrap("recipe.data", err, "recipe.data") from None
    check = getattr(datamodule, "check", None)
    if check is not None:  # before the model: its options may be interpolated from the data's (window)
        try:
            check(world)
        except (ValueError, FileNotFoundError, OSError) as err:
            raise _wrap("recipe.data", err, "recipe.data") from None
    try:
        model = instantiate(cfg.recipe.model)
    except Exception as err:
        raise _wrap("recipe.model", err, "recipe.model") from None
    params = _model_parameters(model, datamodule)
    if params is not None:
        _check_compressors(cfg, strategy, strategy_choice, sum(p.numel() for p in params))
    ckpt = cfg.get("ckpt_path")
    if ckpt is not None and ckpt not in CKPT_KEYWORDS and Path(str(ckpt)).expanduser().is_file():
        check_checkpoint(cfg, Path(str(ckpt)).expanduser(), model=model)
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.trainer, resolve=True))  # stub: any container
    try:  # Lightning's own checks (precision, accelerator, devices) and the strategy's world-size check
        trainer = pl.Trainer(
            **options,
            strategy=strategy,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,
        )
    except Exception as err:
        raise _wrap_trainer(options, err) from None
    _check_training_setup(strategy, trainer, strategy_choice)
    return Plan(world_size=world, datamodule=datamodule, strategy=strategy)


# ----------------------------------------------------------------------------------- the model
def _model_parameters(model: Any, datamodule: Any) -> list[torch.Tensor] | None:
    """The parameters the model's optimizer trains, with the layers built as the ranks build them.

    A recipe's model may take its input sizes from the data module in ``configure_model`` (it reads
    ``trainer.datamodule``): here it is given a stand-in Trainer that holds only the checked data module.

    Returns:
        The trained parameters in the optimizer's order, or ``None`` if the model is no LightningModule.

    Raises:
        ConfigError: The model cannot be built from this data, or its optimizer cannot be made.
    """
    if not isinstance(model, pl.LightningModule):
        return None
    previous = model.__dict__.get("_trainer")
    try:
        model.__dict__["_trainer"] = SimpleNamespace(datamodule=datamodule)
        model.configure_model()
        optimizers = model.configure_optimizers()
    except Exception as err:  # the model's own message names its option
        raise _wrap("recipe.model", err, "recipe.model") from None
    finally:
        model.__dict__["_trainer"] = previous
    if isinstance(optimizers, dict):
        optimizers = optimizers.get("optimizer")
    if isinstance(optimizers, list | tuple) and optimizers:
        optimizers = optimizers[0]
    if isinstance(optimizers, torch.optim.Optimizer):
        seen: set[int] = set()
        params = []
        for group in optimizers.param_groups:
            for p in group["params"]:
                if id(p) not in seen and p.requires_grad:
                    seen.add(id(p))
                    params.append(p)
        return params
    return [p for p in model.parameters() if p.requires_grad]


def _check_training_setup(strategy: Any, trainer: pl.Trainer, strategy_choice: str) -> None:
    """Trainer settings a strategy that steps the optimizer itself rejects in its ``setup`` (on every rank)."""
    if not hasattr(strategy, "_check_training_setup"):  # Lightning's own strategies (ddp, powersgd) take them
        return
    name = type(strategy).__name__
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(
            f"trainer.accumulate_grad_batches: strategy={strategy_choice} ({name}) does not support "
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} (it steps the optimizer itself, one "
            "step per batch); remove it and raise recipe.data.batch_size instead."
        )
    plugin = trainer.precision_plugin
    if isinstance(plugin, MixedPrecision) and plugin.scaler is not None:
        raise ConfigError(
            f"trainer.precision: strategy={strategy_choice} ({name}) does not support "
            f"trainer.precision={trainer.precision!r} (fp16 with a gradient scaler); set trainer.precision=bf16-mixed "
            "or trainer.precision=32-true."
        )


def _compressor_key(cfg: DictConfig, name: str) -> str:
    """The config key that holds the options of the strategy's compressor ``name`` (``compressor``, ``dense_...``)."""
    if name == "compressor" and cfg.get("compressor") is not None and "compressor" in cfg.strategy:
        return "compressor"
    return f"strategy.{name}_options"


def _check_compressors(cfg: DictConfig, strategy: Any, strategy_choice: str, d: int) -> None:
    """Every compressor of a hub strategy must fit the flat vector of the model's ``d`` trained parameters.

    The hub strategies compress one vector of all trained parameters, so a ``k`` above ``d`` (or a
    compressor that cannot take a vector) would otherwise fail on every rank once the job has started.
    """
    options = getattr(strategy, "options", None)
    if options is None:
        return
    names = sorted(n for n in dir(type(options)) if n.startswith("built_") and n.endswith("compressor"))
    for attribute in names:
        compressor = getattr(options, attribute, None)
        if compressor is None or not hasattr(compressor, "wire_spec"):
            continue
        name = attribute[len("built_") :]
        key = _compressor_key(cfg, name)
        k = getattr(compressor, "k", None)
        if isinstance(k, int) and not isinstance(k, bool) and k > d:
            if key == "compressor":
                fix = f"set {key}.k to at most {d} (e.g. {key}.k={max(1, d // 100)}), or {key}.k=null {key}.ratio=0.01"
            else:  # a mapping option: set as a whole ({k: ...})
                fix = f"set {key}={{k:{max(1, d // 100)}}} (k at most {d}), or {key}={{ratio:0.01}}"
            raise ConfigError(
                f"{key}.k: {key}.k={k} is more than the {d:,} trained parameters of recipe.model, which "
                f"strategy={strategy_choice} compresses as one vector; {fix} to send a share of them."
            )
        try:
            compressor.wire_spec((d,))
        except ValueError as err:
            raise ConfigError(
                f"{key}: {str(err).rstrip('.')} (strategy={strategy_choice} compresses the {d:,} trained parameters "
                f"of recipe.model as one vector); set {key} accordingly."
            ) from None


# ----------------------------------------------------------------------------------- errors Hydra raises
#: Config groups whose options a key may live under (``compressor=randk`` has ``ratio``).
_GROUPS = ("compressor", "strategy", "recipe", "trainer", "logger")
#: Hydra's schema entries in the groups, not options a user picks.
_NOT_OPTIONS = ("schema",)
#: OmegaConf's type names in its conversion errors, as a user would say them.
_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _compose_keys(overrides: list[str]) -> tuple[Any, dict[str, Any]]:
    """Compose the config with ``overrides`` (unresolved); its dotted keys with their values.

    Returns:
        The composed config as a plain container, and ``{"recipe.data.batch_size": 64, ...}`` (leaves only).
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lit_commeff.cli import schema

    schema.register()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    tree = OmegaConf.to_container(cfg, resolve=False)
    keys: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for name, value in node.items():
                walk(value, f"{prefix}.{name}" if prefix else str(name))
        elif prefix:
            keys[prefix] = node

    walk(tree, "")
    return tree, keys


def _base_keys(overrides: list[str], drop: str) -> tuple[Any, dict[str, Any]]:
    """The config's keys without the override of ``drop`` (and without sweeps and ``hydra.`` overrides).

    Falls back to the group choices only, then to the defaults, if the other overrides do not compose either.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # the overrides do not parse: the defaults
        parsed = []
    kept = [
        o
        for o in parsed
        if not o.is_sweep_override() and o.key_or_group != drop and not o.key_or_group.startswith("hydra")
    ]
    groups = [o for o in kept if o.key_or_group in _GROUPS and not o.is_delete()]
    for attempt in ([o.input_line for o in kept], [o.input_line for o in groups], []):
        try:
            return _compose_keys([str(a) for a in attempt])
        except Exception:  # any composition error: try the next, smaller set of overrides
            continue
    return {}, {}


def _group_options(group: str) -> list[str]:
    """The options of a config group (``compressor``: ``bf16``, ..., ``topk``), without the schema entries."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        names = GlobalHydra.instance().config_loader().get_group_options(group)
    return sorted(name for name in names if name not in _NOT_OPTIONS)


def _options_with(group: str) -> dict[str, list[str]]:
    """``{option: its keys}`` for every option of ``group``, composed with ``group=option`` (keys below the group)."""
    result: dict[str, list[str]] = {}
    for option in _group_options(group):
        try:
            _, keys = _compose_keys([f"{group}={option}"])
        except Exception:  # an option that does not compose alone is not offered
            continue
        result[option] = [
            k[len(group) + 1 :] for k in keys if k.startswith(f"{group}.") and not k.startswith(f"{group}._")
        ]
    return result


def _override_value(overrides: list[str], key: str) -> str:
    for item in overrides:
        name, _, value = item.lstrip("+~").partition("=")
        if name == key:
            return value
    return "VALUE"


def _missing_key(key: str, overrides: list[str]) -> str:
    """``key`` is not in the composed config: the group option that has it, or the nearest real key."""
    value = _override_value(overrides, key)
    tree, keys = _base_keys(overrides, key)
    head, _, rel = key.partition(".")
    leaf = key.rsplit(".", 1)[-1]
    if head in _GROUPS and rel:
        choice = None
        try:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            for o in OverridesParser.create().parse_overrides(overrides):
                if o.key_or_group == head and not o.is_sweep_override():
                    choice = str(o.value())
        except Exception:  # the overrides do not parse: no choice, the group's default
            pass
        options = _options_with(head)
        having = [name for name, names in options.items() if rel in names]
        if having and (choice is None or choice not in having):
            current = f"{head}={choice}" if choice else f"{head}=null (the default)"
            if tree.get(head) is None and choice is None:
                what = f"{current} has no options of its own"
            else:
                own = [n for n in (options.get(choice or "", [])) if "." not in n] or sorted(
                    k[len(head) + 1 :] for k in keys if k.startswith(f"{head}.") and not k.startswith(f"{head}._")
                )
                what = f"{current} has no {rel!r} (it has {', '.join(own) or 'no options'})"
            has = "; ".join(f"{head}={name} has {rel}" for name in having)
            example = f"{head}={having[0]} {key}={value}"
            if rel == "k" and "ratio" in options.get(having[0], []):
                example += f" {head}.ratio=null"
            return f"{key}: {what}; {has}: choose one, e.g. {example}."
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    siblings = sorted(
        {
            (k[len(parent) + 1 :] if parent else k).split(".")[0]
            for k in keys
            if (k.startswith(f"{parent}.") if parent else True) and not k.rsplit(".", 1)[-1].startswith("_")
        }
    )
    same_leaf = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and not leaf.startswith("_")]
    near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.7)
    close = same_leaf or [f"{parent}.{n}" if parent else n for n in near]
    if close:
        return f"{key}: no such key; did you mean {close[0]}? set {close[0]}={value}."
    where = f"{parent} has" if parent else "the top level has"
    return f"{key}: no such key; remove it, or set one of the keys {where}: {', '.join(siblings) or 'none'}."


def explain_hydra_error(err: BaseException, overrides: list[str]) -> str:
    """One line ``<key>: <what is wrong>; <fix>`` for an error Hydra raised while composing ``overrides``.

    Hydra's own text advises ``+key=...`` for a key that exists under another path or under another
    option of its group; this names the real key (the nearest one in the composed config) or the group
    options that have it, the options of an unknown group choice, and the type a value must have.

    Args:
        err: What Hydra raised (``MissingConfigException``, ``ConfigCompositionException``,
            ``OverrideParseException``).
        overrides: The command line's overrides, to compose the config without the failing one.
    """
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import ConfigKeyError, ValidationError

    text = str(err).strip()
    first = text.splitlines()[0] if text else type(err).__name__
    cause = err.__cause__
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        options = [o for o in err.options if o not in _NOT_OPTIONS]
        close = difflib.get_close_matches(name, options, n=1)
        hint = f"did you mean {group}={close[0]}? " if close else ""
        listed = ", ".join(f"{group}={o}" for o in options)
        return f"{group}: {name!r} is not an option of the {group} group; {hint}use one of {listed}."
    if isinstance(err, OverrideParseException):
        return (
            f"{err.override}: cannot parse this override ({first}); write KEY=VALUE, quoting a value with spaces "
            "or special characters (see https://hydra.cc/docs/advanced/override_grammar/basic)."
        )
    if isinstance(cause, ValidationError) and cause.full_key:
        key = str(cause.full_key)
        words = re.search(r"converted to (\w+)", str(cause))
        wanted = _TYPE_WORDS.get(words.group(1), f"a {words.group(1)}") if words else "a value of the right type"
        message = str(cause).splitlines()[0]
        _, keys = _base_keys(overrides, key)
        default = keys.get(key)
        example = f" (the default is {key}={default})" if default is not None and not isinstance(default, dict) else ""
        return f"{key}: {message} ({key}={_override_value(overrides, key)}); set {key} to {wanted}{example}."
    missing = getattr(cause, "full_key", None) if isinstance(cause, ConfigKeyError | AttributeError) else None
    if missing:
        return _missing_key(str(missing), overrides)
    already = re.search(r"An item is already at '([^']+)'", text)
    if already:
        key = already.group(1)
        value = _override_value(overrides, key)
        return f"{key}: the key exists, so +{key}=... cannot add it; set it without the +: {key}={value}."
    return f"{first.rstrip('.')}; fix the override (lit-commeff --help lists the groups and keys)."
