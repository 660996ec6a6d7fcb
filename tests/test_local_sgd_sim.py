"""Local SGD and DiLoCo as algorithms in the simulator, on convex ridge problems."""

from __future__ import annotations

import itertools

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms import ALGORITHMS, DiLoCo, GradientDescent, LocalSGD, ProblemOracle
from lit_commeff.algorithms.local_sgd import nesterov_outer_step
from lit_commeff.options import DiLoCoOptions
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import SimulatorTransport

M, D = 4, 8


def _ridge(similarity: float):
    """Identical shards at similarity 0; heterogeneous (each shard its own minimiser) above."""
    return synthetic_ridge(workers=M, n=30, dim=D, similarity=similarity, lam=0.1, seed=1)


def _make(cls, problem, **options):
    transport = SimulatorTransport(num_workers=M, dim=D)
    oracle = ProblemOracle(problem, transport.workers)
    return cls(transport=transport, oracle=oracle, x0=torch.zeros(D, dtype=torch.float64), L=problem.L, **options)


def test_registered_where_sim_run_finds_methods():
    assert ALGORITHMS["local_sgd"] is LocalSGD
    assert ALGORITHMS["diloco"] is DiLoCo


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_outer_step_is_torch_sgd_with_nesterov_bit_for_bit(momentum):
    torch.manual_seed(0)
    theta = torch.randn(7, dtype=torch.float32)
    param = torch.nn.Parameter(theta.clone())
    sgd = torch.optim.SGD([param], lr=0.7, momentum=momentum, nesterov=momentum > 0)
    buffer = None
    for _ in range(5):
        delta = torch.randn(7)
        param.grad = delta.clone()
        sgd.step()
        before = theta.clone()
        theta, buffer = nesterov_outer_step(theta, delta, buffer, lr=0.7, momentum=momentum)
        assert torch.equal(theta, param.detach())
        assert not torch.equal(theta, before)
    assert (buffer is None) == (momentum == 0)


@pytest.mark.parametrize(
    ("cls", "options"),
    [(LocalSGD, {}), (DiLoCo, {"outer_lr": 1.0, "outer_momentum": 0.0})],
    ids=["local_sgd", "diloco"],
)
def test_one_inner_step_without_outer_momentum_is_distributed_gradient_descent(cls, options):
    problem = _ridge(similarity=1.0)
    gd = _make(GradientDescent, problem)
    method = _make(cls, problem, inner_steps=1, **options)
    start = gd.output().clone()
    for step in range(30):
        gd.step()
        method.step()
        torch.testing.assert_close(method.output(), gd.output(), rtol=1e-12, atol=1e-14, msg=f"step {step}")
    assert not torch.allclose(gd.output(), start)  # the iterates moved
    assert method.transport.ledger.cc1 == gd.transport.ledger.cc1 == 30


def _after_syncs(problem, name: str, h: int, rounds: int, **options) -> list[float]:
    history = sim.run(problem, name, rounds=h * rounds, inner_steps=h, lr=0.05 / problem.L, **options)
    return [row["rel_subopt"] for row in history.rows[h - 1 :: h]]  # the output after each sync


def test_heterogeneous_shards_stall_at_a_drift_floor_identical_shards_do_not():
    """Client drift: between syncs each worker walks towards its own shard's minimiser (H = 10 local steps)."""
    h, rounds = 10, 200
    heterogeneous, identical = _ridge(similarity=1.0), _ridge(similarity=0.0)
    local = _after_syncs(heterogeneous, "local_sgd", h, rounds)
    diloco = _after_syncs(heterogeneous, "diloco", h, rounds, outer_lr=0.7, outer_momentum=0.9)
    for rel in (local, diloco):
        assert rel[0] < 1  # the loss falls from f(x0) ...
        assert rel[20] < 0.01 * rel[0]  # ... by orders of magnitude ...
        assert rel[-1] > 1e-5  # ... but stops above the optimum (about 3e-5 here) ...
        assert rel[-1] == pytest.approx(rel[150], rel=1e-6)  # ... and stays there: a fixed point, not slow progress
    assert all(b < a for a, b in itertools.pairwise(local[:21]))  # local SGD falls at every sync
    # the outer step cannot remove drift: DiLoCo's fixed point (mean Δ = 0) is local SGD's
    assert diloco[-1] == pytest.approx(local[-1], rel=1e-6)
    assert sim.run(heterogeneous, "gd", rounds=rounds, lr=0.05 / heterogeneous.L * h).final["rel_subopt"] < 1e-12
    for name, options in (("local_sgd", {}), ("diloco", {"outer_lr": 0.7, "outer_momentum": 0.9})):
        assert _after_syncs(identical, name, h, rounds, **options)[-1] < 1e-12  # nothing to drift from


@pytest.mark.parametrize(("name", "tag"), [("local_sgd", "params"), ("diloco", "delta")])
def test_each_sync_round_books_the_all_reduce_bytes_and_local_steps_book_nothing(name, tag):
    h, syncs = 4, 5
    history = sim.run(_ridge(similarity=1.0), name, rounds=h * syncs, inner_steps=h)
    ledger = history.meta["ledger"]
    assert ledger["cc1"] == syncs  # one round per H local steps
    assert [row["cc1"] for row in history.rows] == [(step + 1) // h for step in range(h * syncs)]
    row = D * 8  # every worker's dense d-vector of float64, the hub's included
    assert ledger["allreduce_bytes"] == ledger["uplink_bytes"] == syncs * M * row
    assert ledger["uplink_bytes_per_worker"] == [syncs * row] * M
    assert ledger["downlink_bytes"] == 0 and ledger["cc2"] == syncs * M
    assert ledger["cc3"] == pytest.approx(syncs)  # one dense unit per round
    assert set(ledger["gamma_by_tag"]) == {tag}


def test_a_step_never_changes_state_in_place_and_resumes_mid_round():
    problem = _ridge(similarity=1.0)
    alg = _make(DiLoCo, problem, inner_steps=3)
    for _ in range(4):  # one sync, then one local step into the next round
        refs = alg.state_refs()
        copies = {k: v.clone() for k, v in refs.items() if isinstance(v, torch.Tensor)}
        alg.step()
        for key, before in copies.items():
            assert torch.equal(refs[key], before), key
    assert alg.local is not None and alg.momentum is not None
    saved = alg.state_dict()
    twin = _make(DiLoCo, problem, inner_steps=3)
    twin.load_state_dict(saved)
    for _ in range(5):
        alg.step()
        twin.step()
    assert torch.equal(alg.output(), twin.output())
    assert alg.transport.ledger.cc1 == 3 and twin.transport.ledger.cc1 == 2  # the twin's ledger started later


def test_a_skipped_local_step_keeps_the_schedule():
    alg = _make(LocalSGD, _ridge(similarity=1.0), inner_steps=3)
    alg.skip_local_step()
    alg.step()
    assert alg.communicates()
    with pytest.raises(RuntimeError, match=r"local_sgd: skip_local_step\(\) called on the step that syncs"):
        alg.skip_local_step()
    alg.step()
    assert alg.transport.ledger.cc1 == 1 and alg.local_k == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inner_steps": 0}, r"inner_steps: inner_steps=0 is invalid; use an integer >= 1"),
        ({"inner_steps": 2.0}, r"inner_steps: inner_steps=2.0 is invalid"),
        ({"outer_lr": 0.0}, r"outer_lr: outer_lr=0.0 is invalid; use a finite number > 0"),
        ({"outer_momentum": 1.0}, r"outer_momentum: outer_momentum=1.0 is invalid; use a number in \[0, 1\)"),
        ({"lr": -1.0}, r"lr: lr=-1.0 is out of range"),
    ],
)
def test_options_are_validated_with_the_fix(options, message):
    """One home for the rules: DiLoCoOptions checks the algorithm's options as it checks the strategy's."""
    with pytest.raises(ValueError, match=message):
        _make(DiLoCo, _ridge(similarity=1.0), **options)
    if "outer_lr" not in options and "outer_momentum" not in options:
        with pytest.raises(ValueError, match=message):
            _make(LocalSGD, _ridge(similarity=1.0), **options)


def test_defaults_are_the_options_objects():
    diloco = _make(DiLoCo, _ridge(similarity=1.0))
    assert diloco.options == DiLoCoOptions()
    assert (diloco.inner_steps, diloco.outer_lr, diloco.outer_momentum) == (50, 0.7, 0.9)
    assert _make(LocalSGD, _ridge(similarity=1.0)).inner_steps == DiLoCoOptions().inner_steps
    history = sim.run(_ridge(similarity=1.0), "diloco", rounds=3, inner_steps=3, outer_momentum=0.0)
    assert history.meta["hyperparameters"]["outer_momentum"] == 0.0 and history.final["cc1"] == 1
