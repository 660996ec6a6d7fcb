"""Keep third-party noise off a user's console without hiding real warnings.

What a ``lit-commeff`` run printed before this module, on every run: Lightning's device lines ("GPU
available: ...", "TPU available: ...") and its note on ``val_check_interval`` twice (once from the checks
before launch, once from rank 0), Lightning's advertisement for its cloud logger, MLflow's notes on
creating its SQLite tables, and a ``FutureWarning`` that torch raises inside Lightning. None of it is the
user's to act on. Two filters, each by exact message, so anything else (a real warning, an error, a
warning about the user's own settings) still reaches the console:

* :func:`quiet_third_party`: drops :data:`NOISE` (Lightning's tip, MLflow's table notes) and the warnings
  in :data:`FOREIGN_WARNINGS`, in this process; :func:`child_warnings_env` gives the same warning filters
  to the processes it starts (``PYTHONWARNINGS``).
* :func:`info_silenced`: while the CLI checks a configuration (it builds a ``Trainer`` to let Lightning
  validate the trainer options), Lightning's information lines are dropped; its warnings are not. Rank 0
  prints the information lines once when it builds the real ``Trainer``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Loggers whose information lines are third-party noise, and the starts of those lines.
NOISE: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
    "mlflow.store.db.utils": ("Creating initial MLflow database tables", "Updating database tables"),
}

#: Warnings raised inside third-party code that the user cannot fix: (category, start of the message).
FOREIGN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # torch deprecates LeafSpec; Lightning's own _pytree module still builds one (lightning 2.6)
    (FutureWarning, "`isinstance(treespec, LeafSpec)` is deprecated"),
)

#: Loggers of Lightning whose information lines the configuration check repeats.
LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")


class _DropStarts(logging.Filter):
    """Drops records whose message starts with one of ``starts``."""

    def __init__(self, starts: tuple[str, ...]) -> None:
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


class _BelowWarning(logging.Filter):
    """Drops records below WARNING (information, debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def quiet_third_party() -> None:
    """Drop :data:`NOISE` and :data:`FOREIGN_WARNINGS` in this process (idempotent)."""
    for name, starts in NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropStarts) and f.starts == starts for f in logger.filters):
            logger.addFilter(_DropStarts(starts))
    for category, message in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)


def child_warnings_env(environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """``PYTHONWARNINGS`` for processes this one starts: theirs, plus a filter per :data:`FOREIGN_WARNINGS`.

    ``PYTHONWARNINGS`` separates filters by commas and fields by colons and matches the start of a message,
    so each message is cut before its first comma or colon.
    """
    current = (os.environ if environ is None else environ).get("PYTHONWARNINGS", "")
    ours = [f"ignore:{m.split(',')[0].split(':')[0]}:{category.__name__}" for category, m in FOREIGN_WARNINGS]
    have = [f for f in current.split(",") if f]
    return ",".join([*have, *(f for f in ours if f not in have)])


@contextmanager
def info_silenced(names: tuple[str, ...] = LIGHTNING_LOGGERS) -> Iterator[None]:
    """Within the block, the information lines of these loggers (and their children) are dropped.

    Filters act on the logger a record is created on, so the filter goes on the handlers that print
    them: Lightning attaches its console handler to ``lightning.pytorch`` / ``lightning.fabric``.
    """
    flt = _BelowWarning()
    handlers = [h for name in names for h in logging.getLogger(name).handlers]
    handlers += logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(flt)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(flt)
