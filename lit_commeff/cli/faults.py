"""Fault drills: kill one rank of a ``lit-commeff`` run at a chosen step, to rehearse crash and resume.

Set ``LIT_COMMEFF_KILL=RANK:STEP`` in the environment of a run: global rank ``RANK`` sends itself SIGKILL
when training step ``STEP`` starts (before the step runs, so the last checkpoint is the newest state that
survives). The launcher then stops the other ranks and names the rank that died; rerunning the same
command with ``ckpt_path=last`` resumes. ``docs/reliability.md`` shows the drill.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl

ENV = "LIT_COMMEFF_KILL"


class KillAtStep(pl.Callback):
    """SIGKILLs this process when global rank ``rank`` is about to run global step ``step``."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def from_env(environ: dict[str, str] | None = None) -> list[pl.Callback]:
    """The drill callbacks that ``LIT_COMMEFF_KILL`` asks for (none when it is unset)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return []
    try:
        rank, step = (int(part) for part in value.split(":"))
    except ValueError:
        raise ValueError(f"{ENV}: {ENV}={value!r} is invalid; use RANK:STEP, e.g. {ENV}=1:25.") from None
    if rank < 0 or step < 0:
        raise ValueError(f"{ENV}: {ENV}={value!r} is invalid; RANK and STEP are integers >= 0.")
    return [KillAtStep(rank, step)]
