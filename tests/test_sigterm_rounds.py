"""No collective of its own per step: rank 0's SIGTERM flag rides on the strategies' rounds (real gloo ranks).

Lightning broadcasts rank 0's SIGTERM flag before every training step; our strategies carry it in their own
rounds instead (``CommStrategy._install_sigterm_check``), so silent steps stay silent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.distributed as dist
from _strategy_utils import TinyRegressor, regression_data, trainer
from torch.utils.data import DataLoader

from lit_commeff.strategy import DiLoCoStrategy, EFOLGAStrategy

COLLECTIVES = ("broadcast", "all_reduce", "scatter", "gather", "all_gather", "barrier", "reduce")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``torch.distributed`` collective a (forked) rank calls, in order."""
    seen: list[str] = []
    for name in COLLECTIVES:
        real = getattr(dist, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            seen.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(dist, name, spy)
    return seen


class PerStep(pl.Callback):
    """Per rank: the collectives between the end of one step and the end of the next, and the last step."""

    def __init__(self, out: Path, calls: list[str]) -> None:
        self.out, self.calls = out, calls
        self.steps: list[list[str]] = []
        self.last = -1

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.calls.clear()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        self.steps.append(list(self.calls))
        self.calls.clear()
        self.last = trainer.global_step - 1
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps({"steps": self.steps, "last": self.last}))


def _fit(strategy: Any, out: Path, calls: list[str], steps: int) -> list[dict]:
    pl.seed_everything(0)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    trainer(strategy, max_steps=steps, callbacks=[PerStep(out, calls)]).fit(TinyRegressor(), loader)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_silent_steps_of_local_steps_make_no_collective(calls, tmp_path):
    ranks = _fit(EFOLGAStrategy(start_method="fork", local_steps=4, p=0.001), tmp_path, calls, steps=13)
    for rank in ranks:
        busy = [i for i, names in enumerate(rank["steps"]) if names]
        assert busy == [0, 5, 9], rank["steps"]  # the anchor round, then the first step of rounds 1 and 2
        assert all("broadcast" not in names for names in rank["steps"])  # no Lightning SIGTERM broadcast


def test_every_step_strategy_adds_no_sigterm_broadcast_with_the_guard(calls, tmp_path):
    ranks = _fit(EFOLGAStrategy(start_method="fork"), tmp_path, calls, steps=6)
    for rank in ranks:
        assert all(names and "broadcast" not in names for names in rank["steps"]), rank["steps"]


def test_without_the_guard_lightnings_broadcast_runs_before_communicating_steps_only(calls, tmp_path):
    strategy = EFOLGAStrategy(start_method="fork", local_steps=4, p=0.001, nonfinite="off")
    ranks = _fit(strategy, tmp_path, calls, steps=13)
    for rank in ranks:
        with_broadcast = [i for i, names in enumerate(rank["steps"]) if "broadcast" in names]
        assert with_broadcast == [0, 5, 9], rank["steps"]


def test_diloco_talks_only_at_its_syncs(calls, tmp_path):
    ranks = _fit(DiLoCoStrategy(start_method="fork", inner_steps=5), tmp_path, calls, steps=12)
    for rank in ranks:
        busy = [i for i, names in enumerate(rank["steps"]) if names]
        assert busy == [4, 9], rank["steps"]


@pytest.mark.slow
def test_rank_zeros_sigterm_stops_every_rank_after_the_same_step(tmp_path):
    """A real SIGTERM reaches rank 0 alone as step 3 starts (the ranks are started as the lit-commeff launcher
    does, so nothing forwards it). The flag rides in step 3's guard agreement: every rank completes step 3,
    saves the step's checkpoint (a collective) and stops before step 4, and nobody waits on a dead peer."""
    script = Path(__file__).parent / "scripts" / "sigterm_stop.py"
    argv = [sys.executable, str(script), str(tmp_path), "3", "--launch", "external"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    # Lightning's handler ran in rank 0 only: the signal was real, and rank 1 learnt of it from the round
    assert done.stderr.count("Received SIGTERM") == 1 and "[rank: 0] Received SIGTERM" in done.stderr, done.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["last"] for r in ranks] == [3, 3], done.stderr[-3000:]
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    # the strategy closed the process group on the way out (an exit-time abort of gloo's threads otherwise)
    assert [json.loads((tmp_path / f"exit{r}.json").read_text()) for r in range(2)] == [{"group_closed": True}] * 2
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 4  # steps 0-3 done: ckpt_path=last continues at step 4
