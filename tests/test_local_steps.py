"""OLGA / EF-OLGA local steps (``local_steps=H``): the schedule, the hub's silent prox steps, resume, guard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from _strategy_utils import Recorder, TinyRegressor, read_ranks, regression_data, trainer
from test_nonfinite import StepParams, recording
from torch.utils.data import DataLoader

from lit_commeff.algorithms import EFOLGA, OLGA, ProblemOracle
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.strategy import EFOLGAStrategy, OLGAStrategy
from lit_commeff.transport import SimulatorTransport


@pytest.fixture(scope="module")
def problem():
    return synthetic_ridge(workers=4, n=40, dim=10, similarity=0.3, lam=0.1, seed=3)


class GradientStepOracle(ProblemOracle):
    """The hub solves its prox subproblem inexactly: 2 gradient steps per call, continued by ``prox_from``."""

    def __init__(self, problem: Any, workers: torch.Tensor, lr: float) -> None:
        super().__init__(problem, workers)
        self.lr = lr
        self.prox_calls = 0
        self.prox_from_calls = 0

    def _steps(self, x: torch.Tensor, x_k: torch.Tensor, t: torch.Tensor, theta: float) -> torch.Tensor:
        for _ in range(2):
            x = x - self.lr * (self.hub_grad(x) + t + (x - x_k) / theta)
        return x

    def prox(self, x_k: torch.Tensor, t: torch.Tensor, theta: float) -> torch.Tensor:
        self.prox_calls += 1
        return self._steps(x_k, x_k, t, theta)

    def prox_from(self, start: torch.Tensor, x_k: torch.Tensor, t: torch.Tensor, theta: float) -> torch.Tensor:
        self.prox_from_calls += 1
        return self._steps(start, x_k, t, theta)


def _make(problem, cls=OLGA, *, oracle=None, compressor=("identity", {}), **kw):
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    oracle = oracle(problem, transport.workers) if oracle is not None else ProblemOracle(problem, transport.workers)
    return cls(
        transport=transport,
        oracle=oracle,
        x0=torch.zeros(problem.dim, dtype=torch.float64),
        compressor=build(compressor[0], **compressor[1]),
        mu=problem.mu,
        delta=problem.delta,
        seed=4,
        **kw,
    )


def _silent_in_local_steps(alg) -> list[bool]:
    """Make every transport call fail inside a local step; returns the record of ``communicates()`` per step."""
    record: list[bool] = []
    transport = alg.transport
    for name in ("begin_round", "broadcast", "gather", "gather_compressed"):
        real = getattr(transport, name)

        def guarded(*args, _real=real, _name=name, **kwargs):
            assert record[-1], f"{_name} was called in a local step"
            return _real(*args, **kwargs)

        setattr(transport, name, guarded)
    return record


@pytest.mark.parametrize(
    ("cls", "compressor"), [(OLGA, ("identity", {})), (EFOLGA, ("topk", {"k": 3}))], ids=["olga", "ef_olga"]
)
def test_local_steps_converge_and_talk_only_at_round_starts(problem, cls, compressor):
    """Exact prox, stale-by-one corrections: still linear convergence; no transport call in a local step."""
    alg = _make(problem, cls, compressor=compressor, p=0.3, local_steps=3)
    record = _silent_in_local_steps(alg)
    start = problem.suboptimality(torch.zeros(problem.dim, dtype=torch.float64))
    for _ in range(900):
        record.append(alg.communicates())
        alg.step()
    assert problem.suboptimality(alg.output()) < 1e-9 * start
    assert record.count(False) > record.count(True)  # most steps were silent
    assert alg.transport.ledger.summary()["cc1"] == record.count(True)


def test_the_hubs_correction_is_the_exact_difference_one_round_late(problem):
    """With Q = identity and full-batch gradients, round k's correction is ∇f(x_{k-1}) − ∇f_1(x_{k-1})."""
    alg = _make(problem, OLGA, p=0.2, local_steps=2)
    hub = torch.tensor([0])
    checked = 0
    centre = alg.xk
    while checked < 20:
        phase, before = alg.phase, alg.xk
        alg.step()
        if phase == "inner":  # a round's first step: x_{k-1} was the centre before it
            expected = problem.grad(before) - problem.worker_grads(before, hub)[0]
            assert torch.allclose(alg.tk, expected, atol=1e-12)
            assert alg.acc_n == 1 and torch.equal(alg.xk, alg.last)
            checked += 1
        if phase == "local" and alg.local_k == 0 and alg.phase == "inner":
            assert alg.acc_n == 2  # every step of the round reached the average
        centre = alg.xk
    assert centre is alg.xk


@pytest.mark.parametrize(
    ("cls", "compressor"), [(OLGA, ("randk", {"k": 3})), (EFOLGA, ("topk", {"k": 3}))], ids=["olga", "ef_olga"]
)
def test_the_hub_keeps_solving_its_subproblem_in_local_steps(problem, cls, compressor):
    """With an inexact hub solver every step of a round continues the same subproblem, and the method converges."""
    oracle = {}

    def make_oracle(p, workers):
        oracle["hub"] = GradientStepOracle(p, workers, lr=0.5 / problem.L)
        return oracle["hub"]

    alg = _make(problem, cls, oracle=make_oracle, compressor=compressor, p=0.3, theta=2.0 / problem.L, local_steps=4)
    record = _silent_in_local_steps(alg)
    start = problem.suboptimality(torch.zeros(problem.dim, dtype=torch.float64))
    round_steps = 0
    for _ in range(1500):
        record.append(alg.communicates())
        round_steps += alg.phase in ("inner", "local")
        alg.step()
    hub = oracle["hub"]
    assert (hub.prox_calls, hub.prox_from_calls) == (0, round_steps)  # one continued solve per step of a round
    assert record.count(False) > 0.5 * len(record)
    assert problem.suboptimality(alg.output()) < 1e-6 * start


def test_resume_inside_local_steps_is_exact(problem):
    def oracle(p, workers):
        return GradientStepOracle(p, workers, lr=0.5 / problem.L)

    kw = {"oracle": oracle, "compressor": ("randk", {"k": 3}), "p": 0.3, "theta": 2.0 / problem.L}
    alg = _make(problem, local_steps=5, **kw)
    while not (alg.phase == "local" and alg.local_k == 2):
        alg.step()
    state = alg.state_dict()
    resumed = _make(problem, local_steps=5, **kw)
    resumed.load_state_dict(state)
    for _ in range(23):
        alg.step()
        resumed.step()
    assert torch.equal(alg.output(), resumed.output())
    with pytest.raises(ValueError, match="local_steps: the checkpoint was written inside the local steps"):
        _make(problem, **kw).load_state_dict(state)


def test_a_dropped_local_step_keeps_the_schedule(problem):
    def oracle(p, workers):
        return GradientStepOracle(p, workers, lr=0.5 / problem.L)

    alg = _make(problem, oracle=oracle, compressor=("randk", {"k": 3}), p=0.3, local_steps=3)
    with pytest.raises(RuntimeError, match="skip_local_step"):
        alg.skip_local_step()  # phase 'anchor'
    while alg.phase != "local":
        alg.step()
    before, acc, rounds, local_k = alg.xloc, alg.acc, alg.round, alg.local_k
    alg.skip_local_step()
    assert (alg.round, alg.local_k) == (rounds + 1, local_k + 1)
    assert alg.xloc is before and alg.acc is acc  # no progress, no gradient
    while alg.local_k > 0:  # to the round's last step
        alg.skip_local_step()
    assert alg.phase in ("inner", "y") and alg.round == rounds + 3
    for _ in range(8):  # the next rounds go on, although this round reached no gradient at all
        alg.step()
    assert torch.isfinite(alg.output()).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"local_steps": 0}, "local_steps: local_steps=0 is invalid"),
        ({"local_steps": 2.5}, "local_steps: local_steps=2.5 is invalid"),
        ({"local_steps": True}, "local_steps: local_steps=True is invalid"),
        ({"local_steps": 3, "gate": 0.5}, "gate: "),
        ({"local_steps": 3, "same_batch": True}, "same_batch: "),
    ],
)
def test_bad_local_steps_are_rejected_with_the_fix(problem, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _make(problem, **kwargs)
    with pytest.raises(ValueError, match=match):
        OLGAStrategy(**kwargs)


# ----------------------------------------------------------------------------------- Lightning, 2 gloo ranks
H, STEPS = 4, 21
# p = 0.001: one long inner epoch. Step 0 is the anchor round, steps 1-4 are round 0 (silent: the anchor's
# correction is exact), and rounds 1, 2, ... communicate at their first step: 5, 9, 13, 17.
COMM_STEPS = [0, 5, 9, 13, 17]


@pytest.mark.parametrize("cls", [OLGAStrategy, EFOLGAStrategy], ids=["olga", "ef_olga"])
def test_strategy_talks_once_per_inner_round_and_trains(cls, tmp_path):
    pl.seed_everything(0)
    rec = Recorder(tmp_path, every_step_params=True)
    strategy = cls(start_method="fork", local_steps=H, p=0.001)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    trainer(strategy, max_steps=STEPS, callbacks=[rec]).fit(TinyRegressor(lr=0.05), loader)
    hub, worker = read_ranks(tmp_path, 2)
    assert hub["phases"] == worker["phases"]
    silent = [i for i, phase in enumerate(hub["phases"]) if phase == "local"]
    assert sorted(set(range(STEPS)) - set(silent)) == COMM_STEPS
    assert hub["summary"]["cc1"] == 1 + len(COMM_STEPS)  # + the setup broadcast of the initial weights
    assert hub["summary"]["control_bytes"] == len(COMM_STEPS) * (4 + 2 * 4)  # the guard, on communicating steps only
    assert hub["params"] == worker["params"]  # the model holds the centre x_k, which every rank has
    for i in range(1, STEPS):  # the model changes only when a new centre is broadcast
        if i not in COMM_STEPS:
            assert hub["step_params"][i] == hub["step_params"][i - 1], i
    # each rank's first evaluation of a step is at the centre: later centres have a lower loss
    first, last = hub["losses"][1:5] + worker["losses"][1:5], hub["losses"][17:] + worker["losses"][17:]
    assert sum(last) < 0.5 * sum(first), (first, last)
    assert all(math.isfinite(v) for v in hub["params"])


BAD_STEP = 6  # a silent step of round 1


class PoisonedAt(TinyRegressor):
    """NaN in one rank's gradient at one silent step (every evaluation of that step)."""

    def __init__(self, rank: int, step: int = BAD_STEP) -> None:
        super().__init__()
        self.bad_rank, self.bad_step = rank, step

    def on_after_backward(self) -> None:
        if self.trainer.global_step == self.bad_step and self.global_rank == self.bad_rank:
            self.net[2].bias.grad.fill_(float("nan"))


class RankRecords(StepParams):
    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._write(trainer, module, local_k=trainer.strategy.algorithm.local_k)


def _fit_poisoned(policy: str, rank: int, out: Path) -> Exception | None:
    pl.seed_everything(0)
    strategy = recording(OLGAStrategy)(start_method="fork", nonfinite=policy, local_steps=H, p=0.001)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    try:
        trainer(strategy, max_steps=STEPS, callbacks=[RankRecords(out)]).fit(PoisonedAt(rank), loader)
    except Exception as error:
        return error
    return None


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize("bad_rank", [0, 1], ids=["hub", "worker"])
def test_skip_drops_a_silent_step_on_that_rank_only(bad_rank, tmp_path):
    assert _fit_poisoned("skip", bad_rank, tmp_path) is None
    ranks = _records(tmp_path)
    assert [r["skipped"] for r in ranks] == [int(i == bad_rank) for i in range(2)]
    assert ranks[0]["rounds"] == ranks[1]["rounds"] == STEPS  # the same schedule: no rank waited on another
    assert ranks[0]["local_k"] == ranks[1]["local_k"]
    assert ranks[0]["final"] == ranks[1]["final"]
    assert all(math.isfinite(v) for v in ranks[0]["final"])


@pytest.mark.parametrize("bad_rank", [0, 1], ids=["hub", "worker"])
def test_raise_reports_a_silent_steps_fault_at_the_next_communicating_step(bad_rank, tmp_path):
    error = _fit_poisoned("raise", bad_rank, tmp_path)
    assert error is not None
    time.sleep(0.5)
    ranks = _records(tmp_path)
    next_comm = min(s for s in COMM_STEPS if s > BAD_STEP)
    assert f"step {BAD_STEP}, rank {bad_rank}: non-finite gradient" in ranks[bad_rank]["error"]
    assert f"ranks [{bad_rank}]" in ranks[1 - bad_rank]["error"]
    for rank in ranks:
        assert len(rank["after"]) == next_comm  # the steps before the next communicating step completed
        assert all(math.isfinite(v) for v in rank["final"])
