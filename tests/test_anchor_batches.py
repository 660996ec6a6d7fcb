"""OLGA / EF-OLGA averaged anchors (``anchor_batches=K``): the average, the schedule, bytes, resume, guard."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from _strategy_utils import Recorder, TinyRegressor, read_ranks, regression_data, trainer
from test_local_steps import PoisonedAt, _make, _silent_in_local_steps
from test_nonfinite import StepParams, recording
from torch.utils.data import DataLoader

from lit_commeff.algorithms import EFOLGA, OLGA, ProblemOracle
from lit_commeff.problems import synthetic_ridge
from lit_commeff.strategy import EFOLGAStrategy, OLGAStrategy


@pytest.fixture(scope="module")
def problem():
    return synthetic_ridge(workers=4, n=40, dim=10, similarity=0.3, lam=0.1, seed=3)


class NoisyOracle(ProblemOracle):
    """A minibatch stand-in: every evaluation adds fresh noise per worker row, and is recorded."""

    def __init__(self, problem, workers, scale: float = 0.5) -> None:
        super().__init__(problem, workers)
        self.scale = scale
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._gen = torch.Generator().manual_seed(11)

    def grads(self, x: torch.Tensor) -> torch.Tensor:
        g = super().grads(x)
        g = g + self.scale * torch.randn(g.shape, generator=self._gen, dtype=g.dtype)
        self.calls.append((x.clone(), g.clone()))
        return g


def _noisy(problem, workers):
    return NoisyOracle(problem, workers)


@pytest.mark.parametrize("accelerate", [True, False], ids=["momentum", "no_momentum"])
def test_the_anchor_gradient_is_the_average_of_k_batches_at_the_anchor(problem, accelerate):
    """Every anchor's G0 is the mean of exactly the K evaluations made at its point, and the hub's ∇f(x_0) the
    mean of the rows; without momentum the y round is the next anchor and is averaged too."""
    K = 3
    alg = _make(problem, OLGA, oracle=_noisy, compressor=("randk", {"k": 3}), p=0.3, accelerate=accelerate,
                anchor_batches=K)  # fmt: skip
    oracle = alg.oracle
    anchors = 0
    for _ in range(60):
        before = alg.phase
        start = len(oracle.calls)
        if before in ("anchor", "y") and (before == "anchor" or not accelerate):
            for _ in range(K):  # K steps at one point, the anchor round's
                alg.step()
            calls = oracle.calls[start:]
            assert len(calls) == K and all(torch.equal(x, calls[0][0]) for x, _ in calls)
            assert alg.phase == "inner" and torch.equal(alg.x0, calls[0][0])
            expected = torch.stack([g for _, g in calls]).sum(dim=0) / K
            assert torch.allclose(alg.G0, expected, rtol=0, atol=1e-14)
            assert torch.allclose(alg.gf0, expected.mean(dim=0), rtol=0, atol=1e-14)
            anchors += 1
        else:
            alg.step()
            if before == "y":  # with momentum the y round stays one batch
                assert len(oracle.calls) == start + 1 and alg.phase == "anchor"
    assert anchors >= 4


@pytest.mark.parametrize(
    ("cls", "compressor", "accelerate"),
    [(OLGA, ("identity", {}), False), (EFOLGA, ("topk", {"k": 3}), True)],
    ids=["olga", "ef_olga"],
)
def test_full_batch_rounds_are_unchanged_and_silent_steps_talk_to_no_one(problem, cls, compressor, accelerate):
    """With full-batch gradients the K-batch average is the gradient: the same iterates and the same bytes as
    K = 1 round for round, only spread over more steps, none of which touches the transport between the first
    and the last of an averaged round. And it still converges linearly."""
    kw = {"compressor": compressor, "p": 0.3, "accelerate": accelerate}
    one = _make(problem, cls, **kw)
    four = _make(problem, cls, anchor_batches=4, **kw)
    record = _silent_in_local_steps(four)
    start = problem.suboptimality(torch.zeros(problem.dim, dtype=torch.float64))
    rounds = 0
    while rounds < 300:
        record.append(four.communicates())
        four.step()
        if four.phase in ("anchor_acc", "y_acc"):
            continue
        one.step()
        rounds += 1
        assert torch.allclose(four.output(), one.output(), rtol=1e-10, atol=1e-13), rounds
    assert problem.suboptimality(four.output()) < 1e-9 * start
    silent = record.count(False)
    averaged = sum(1 for i in range(len(record) - 1) if not record[i] and record[i + 1])
    assert silent == 2 * averaged and averaged >= 10  # K − 2 = 2 silent steps per averaged round
    a, b = one.transport.ledger.summary(), four.transport.ledger.summary()
    for key in ("uplink_bytes", "downlink_bytes", "dense_bytes"):
        assert a[key] == b[key], key
    assert b["cc1"] == a["cc1"] + averaged  # an averaged round talks in its first and its last step


def test_resume_inside_an_averaged_anchor_is_exact(problem):
    kw = {"oracle": _noisy, "compressor": ("topk", {"k": 3}), "p": 0.3, "anchor_batches": 5}
    alg = _make(problem, EFOLGA, **kw)
    for _ in range(2):  # into the anchor's silent steps: the second of five
        alg.step()
    assert (alg.phase, alg.dense_k, alg.communicates()) == ("anchor_acc", 2, False)
    state = alg.state_dict()
    resumed = _make(problem, EFOLGA, **kw)
    resumed.load_state_dict(state)
    resumed.oracle._gen.set_state(alg.oracle._gen.get_state())
    for _ in range(30):
        alg.step()
        resumed.step()
    assert torch.equal(alg.output(), resumed.output())
    legacy = {k: v for k, v in alg.state_dict().items() if not k.startswith("dense_")}
    if alg.phase not in ("anchor_acc", "y_acc"):  # a checkpoint from before the option loads outside them
        _make(problem, EFOLGA, **kw).load_state_dict(legacy)


def test_a_dropped_averaging_step_leaves_its_batch_out(problem):
    alg = _make(problem, OLGA, oracle=_noisy, compressor=("randk", {"k": 3}), p=0.3, anchor_batches=4)
    with pytest.raises(RuntimeError, match="skip_local_step"):
        alg.skip_local_step()  # the anchor's first step communicates
    alg.step()
    acc, rounds = alg.dense_acc, alg.round
    alg.skip_local_step()
    assert (alg.round, alg.dense_k, alg.dense_n) == (rounds + 1, 2, 1) and alg.dense_acc is acc
    alg.step()  # the third: silent, counted
    assert (alg.dense_k, alg.dense_n, alg.communicates()) == (3, 2, True)
    with pytest.raises(RuntimeError, match="skip_local_step"):
        alg.skip_local_step()  # the last step gathers: every rank takes it
    first, third = alg.oracle.calls[0][1], alg.oracle.calls[1][1]
    alg.step()
    last = alg.oracle.calls[2][1]
    assert alg.phase == "inner" and torch.allclose(alg.G0, (first + third + last) / 3, rtol=0, atol=1e-14)


@pytest.mark.parametrize("value", [0, 2.5, True, -1])
def test_bad_anchor_batches_are_rejected_with_the_fix(problem, value):
    with pytest.raises(ValueError, match=rf"anchor_batches: anchor_batches={value!r} is invalid"):
        _make(problem, anchor_batches=value)
    with pytest.raises(ValueError, match=rf"anchor_batches: anchor_batches={value!r} is invalid"):
        EFOLGAStrategy(anchor_batches=value)


# ----------------------------------------------------------------------------------- Lightning, 2 gloo ranks
K, STEPS = 3, 14


@pytest.mark.parametrize("cls", [OLGAStrategy, EFOLGAStrategy], ids=["olga", "ef_olga"])
def test_strategy_averages_the_anchor_over_k_steps_and_trains(cls, tmp_path):
    """p = 0.001: one long inner epoch. Steps 0-2 are the anchor round (step 1 silent), 3+ the inner rounds."""
    pl.seed_everything(0)
    rec = Recorder(tmp_path, every_step_params=True)
    strategy = cls(start_method="fork", anchor_batches=K, p=0.001)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    trainer(strategy, max_steps=STEPS, callbacks=[rec]).fit(TinyRegressor(lr=0.05), loader)
    hub, worker = read_ranks(tmp_path, 2)
    assert hub["phases"] == worker["phases"]
    assert hub["phases"][:4] == ["anchor", "anchor_acc", "anchor_acc", "inner"]
    assert hub["summary"]["cc1"] == 1 + STEPS - 1  # + setup, − the silent step
    assert hub["step_params"][0] == hub["step_params"][1] == hub["step_params"][2]  # the model waits at the anchor
    assert hub["params"] == worker["params"]
    assert sum(hub["losses"][-3:]) < 0.5 * sum(hub["losses"][:3]), hub["losses"]
    assert all(math.isfinite(v) for v in hub["params"])


SILENT = 1  # the anchor's silent step (K = 3, p = 0.001)


class Records(StepParams):
    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        alg = trainer.strategy.algorithm
        self._write(trainer, module, g0=alg.G0.tolist(), phase=alg.phase)


def _fit_poisoned(policy: str, rank: int, out: Path) -> Exception | None:
    pl.seed_everything(0)
    strategy = recording(EFOLGAStrategy)(start_method="fork", nonfinite=policy, anchor_batches=K, p=0.001)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    try:
        trainer(strategy, max_steps=6, callbacks=[Records(out)]).fit(PoisonedAt(rank, step=SILENT), loader)
    except Exception as error:
        return error
    return None


@pytest.mark.parametrize("bad_rank", [0, 1], ids=["hub", "worker"])
def test_skip_leaves_a_poisoned_batch_out_of_that_ranks_anchor_only(bad_rank, tmp_path):
    assert _fit_poisoned("skip", bad_rank, tmp_path) is None
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["skipped"] for r in ranks] == [int(i == bad_rank) for i in range(2)]
    assert ranks[0]["rounds"] == ranks[1]["rounds"] == 6  # one schedule: no rank waited on another
    assert ranks[0]["final"] == ranks[1]["final"]
    for r in ranks:  # the anchor averaged the rank's two finite batches
        assert r["phase"] == "inner" and torch.isfinite(torch.tensor(r["g0"])).all()
        assert all(math.isfinite(v) for v in r["final"])


@pytest.mark.parametrize("bad_rank", [0, 1], ids=["hub", "worker"])
def test_raise_reports_a_silent_averaging_fault_at_the_gather(bad_rank, tmp_path):
    error = _fit_poisoned("raise", bad_rank, tmp_path)
    assert error is not None
    time.sleep(0.5)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert f"step {SILENT}, rank {bad_rank}: non-finite gradient" in ranks[bad_rank]["error"]
    assert f"ranks [{bad_rank}]" in ranks[1 - bad_rank]["error"]
    for rank in ranks:
        assert len(rank["after"]) == K - 1  # the silent step completed; the gather (step 2) raised
        assert all(math.isfinite(v) for v in rank["final"])
