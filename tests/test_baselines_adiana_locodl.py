"""ADIANA and LoCoDL baselines on a small synthetic ridge problem (simulator transport)."""

from __future__ import annotations

import math

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms import ADIANA, ALGORITHMS, LoCoDL, ProblemOracle
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import SimulatorTransport


@pytest.fixture(scope="module")
def problem():
    p = synthetic_ridge(workers=8, n=40, dim=10, similarity=0.3, lam=0.1, seed=3)
    assert 0 < p.delta < p.L
    return p


def _make(problem, cls, compressor, **kw):
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim)
    oracle = ProblemOracle(problem, transport.workers)
    x0 = torch.zeros(problem.dim, dtype=torch.float64)
    constants = {"L": problem.L, "mu": problem.mu}
    if cls is LoCoDL:
        constants["delta"] = problem.delta
    constants.update(kw)
    return cls(transport=transport, oracle=oracle, x0=x0, compressor=compressor, **constants)


def test_registered():
    assert ALGORITHMS["adiana"] is ADIANA
    assert ALGORITHMS["locodl"] is LoCoDL


# Budgets: twice the CC-3 units measured to reach 1e-8 with seed 1 (581, 161, 25, 74).
CONVERGENCE = [
    ("adiana", {"compressor": ("randk", {"k": 2})}, 1200),
    ("adiana", {"compressor": ("qsgd", {"s": 2})}, 330),
    ("locodl", {"compressor": ("randk", {"k": 2})}, 50),
    ("locodl", {"compressor": ("randk", {"k": 2}), "p": 0.3}, 150),  # with silent local steps
]


@pytest.mark.parametrize(("name", "options", "budget"), CONVERGENCE, ids=lambda v: str(v))
def test_converges_linearly(problem, name, options, budget):
    history = sim.run(problem, name, cc3_budget=budget, tol=1e-8, seed=1, **options)
    assert history.final["rel_subopt"] <= 1e-8, (name, history.final, history.meta["hyperparameters"])
    # Linear rate: the last three decades cost about what the three before them did.
    c2, c5, c8 = (history.cc3_to(eps) for eps in (1e-2, 1e-5, 1e-8))
    assert c8 - c5 <= 3 * (c5 - c2) + 10


def test_adiana_constants(problem):
    alg = _make(problem, ADIANA, build("randk", k=2))
    n, L, mu = problem.num_workers, problem.L, problem.mu
    w = problem.dim / 2  # the paper's ω = d/K
    p = min(1.0, max(1.0, math.sqrt(n / (32 * w)) - 1) / (2 * (1 + w)))
    eta = min(1 / (2 * L), n / (64 * w * L * (2 * p * (w + 1) + 1) ** 2))
    theta1 = min(0.25, math.sqrt(eta * mu / p))
    gamma = eta / (2 * (theta1 + eta * mu))
    expected = {"alpha": 1 / (w + 1), "p": p, "eta": eta, "theta1": theta1, "theta2": 0.5, "gamma": gamma}
    expected["beta"] = 1 - gamma * mu
    got = alg.hyperparameters()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key
    assert got["omega_used"] == w


def test_locodl_constants(problem):
    """The poster's ω = d/K − 1 and γ < 2/(L + μ); p balances the two terms of the rate (issue 20)."""
    alg = _make(problem, LoCoDL, build("randk", k=2))
    w, n = problem.dim / 2 - 1, problem.num_workers
    mu_g = problem.mu / 2
    l_s = problem.L + problem.delta - mu_g
    got = alg.hyperparameters()
    assert got["omega_used"] == w
    assert got["mu_g"] == pytest.approx(mu_g)
    assert got["gamma"] == pytest.approx(0.99 * 2 / (l_s + mu_g))
    assert got["gamma"] < 2 / (l_s + mu_g)
    chi = 1 / (1 + w / n)
    assert got["rho"] == got["chi"] == pytest.approx(chi)
    rate_gamma = (1 - got["gamma"] * mu_g) ** 2
    assert got["p"] == pytest.approx(min(1.0, math.sqrt((1 + 2 * w) * (1 - rate_gamma) / chi)))
    if got["p"] < 1:  # the two terms of the rate balance
        assert 1 - got["p"] ** 2 * chi / (1 + 2 * w) == pytest.approx(rate_gamma)
    assert got["hub_compressed"] == 1.0


def test_locodl_hub_message_is_compressed_and_free(problem):
    """The poster's server holds no data: the hub's client message is compressed too, and costs no bytes."""
    compressor = build("randk", k=2)
    on, off = (_make(problem, LoCoDL, compressor, p=1.0, hub_compressed=h) for h in (True, False))
    for alg in (on, off):
        alg.step()
    assert on.transport.ledger.uplink_bytes == off.transport.ledger.uplink_bytes
    # the hub's row of u moved by its compressed message, not by its exact one
    u_hub_on, u_hub_off = on.control.rows[0], off.control.rows[0]
    assert not torch.equal(u_hub_on, u_hub_off)
    zero = torch.zeros(problem.dim, dtype=torch.float64)
    assert torch.allclose(on.control.rows.mean(dim=0) + on.control.shared, zero)  # (1/n) Σ u_m + v = 0 holds


def test_adiana_ledger_two_messages_per_round_and_w_resent_only_after_change(problem):
    m, d, k, rounds = problem.num_workers, problem.dim, 3, 40
    compressor = build("randk", k=k)
    alg = _make(problem, ADIANA, compressor, p=0.3, seed=2)
    ledger = alg.transport.ledger
    resends = 0
    for _ in range(rounds):
        resends += alg.w_pending
        y_before = alg.y.clone()
        alg.step()
        if alg.w_pending:  # the coin fired: w is the old y
            assert torch.equal(alg.w, y_before)
    assert 0 < resends < rounds - 1
    message = compressor.wire_nbytes(d, torch.float64)
    assert message == k * 8
    assert ledger.cc1 == rounds
    assert ledger.cc2 == 2 * rounds * (m - 1)
    assert ledger.uplink_bytes == 2 * rounds * (m - 1) * message
    assert ledger.cc3 == pytest.approx(rounds * 2 * k * 8 / (d * 8))
    assert ledger.downlink_bytes_per_worker()[1] == (rounds + resends) * d * 8


def test_locodl_ledger_one_message_per_round_local_steps_free(problem):
    m, d, k, rounds = problem.num_workers, problem.dim, 3, 40
    compressor = build("randk", k=k)
    alg = _make(problem, LoCoDL, compressor, p=0.25, seed=2)
    ledger = alg.transport.ledger
    for _ in range(rounds):
        alg.step()
        # The dual variables keep the invariant (1/n) Σ u_m + v = 0 (any compressor).
        u, v = alg.control.rows, alg.control.shared
        assert torch.allclose(u.mean(dim=0) + v, torch.zeros(d, dtype=torch.float64), atol=1e-12)
    assert alg.local_steps > 2 * rounds  # E[N] = 1/p = 4 iterations per round
    assert ledger.cc1 == rounds
    assert ledger.cc2 == rounds * (m - 1)
    assert ledger.uplink_bytes == rounds * (m - 1) * k * 8
    assert ledger.cc3 == pytest.approx(rounds * k / d)
    assert ledger.downlink_bytes_per_worker()[1] == rounds * d * 8  # d̄ only
    assert torch.equal(alg.output(), alg.x.mean(dim=0))


@pytest.mark.parametrize("name", ["adiana", "locodl"])
def test_same_seed_same_run_different_seed_different_run(problem, name):
    kw = {"compressor": ("randk", {"k": 2}), "rounds": 40}
    if name == "locodl":
        kw["p"] = 0.5
    a = sim.run(problem, name, seed=7, **kw)
    b = sim.run(problem, name, seed=7, **kw)
    c = sim.run(problem, name, seed=8, **kw)
    assert a.rows == b.rows
    assert a.rows != c.rows


@pytest.mark.parametrize(("cls", "kw"), [(ADIANA, {"p": 0.3}), (LoCoDL, {"p": 0.3})])
def test_resume_from_state_dict_continues_identically(problem, cls, kw):
    def make():
        return _make(problem, cls, build("randk", k=2), seed=4, **kw)

    full = make()
    for _ in range(50):
        full.step()
    part = make()
    for _ in range(23):
        part.step()
    state, ledger_state = part.state_dict(), part.transport.ledger.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    resumed.transport.ledger.load_state_dict(ledger_state)
    for _ in range(27):
        resumed.step()
    assert torch.equal(resumed.output(), full.output())
    assert resumed.transport.ledger.summary() == full.transport.ledger.summary()


BAD = [
    (ADIANA, {"p": 0.0}, r"p: p=0\.0 is out of range; it must be in \(0, 1\.0\]"),
    (ADIANA, {"p": 1.5}, r"p: p=1\.5 is out of range"),
    (ADIANA, {"eta": -1.0}, r"eta: eta=-1\.0 is out of range"),
    (ADIANA, {"alpha": 2.0}, r"alpha: alpha=2\.0 is out of range"),
    (ADIANA, {"theta1": 0.6, "theta2": 0.5}, r"theta1: theta1 \+ theta2 = 0\.6 \+ 0\.5 exceeds 1"),
    (ADIANA, {"omega": -1.0}, r"omega: omega=-1\.0 is out of range"),
    (ADIANA, {"mu": 0.0}, r"mu: mu=0\.0 is out of range"),
    (LoCoDL, {"gamma": 0.0}, r"gamma: gamma=0\.0 is out of range"),
    (LoCoDL, {"chi": 1.5}, r"chi: chi=1\.5 is out of range"),
    (LoCoDL, {"p": 0}, r"p: p=0 is out of range"),
    (LoCoDL, {"mu_g": -1.0}, r"mu_g: mu_g=-1\.0 is out of range"),
    (LoCoDL, {"mu_g": 100.0}, r"mu_g: mu_g=100\.0 must be below the workers' smoothness"),
    (LoCoDL, {"delta": -1.0}, r"delta: delta=-1\.0 is out of range"),
    (LoCoDL, {"L_max": float("nan")}, r"L_max: L_max=nan is out of range"),
]


@pytest.mark.parametrize(("cls", "kw", "message"), BAD, ids=lambda v: str(v))
def test_bad_parameters(problem, cls, kw, message):
    with pytest.raises(ValueError, match=message):
        _make(problem, cls, build("randk", k=2), **kw)


def test_compressor_family_mismatch(problem):
    with pytest.raises(ValueError, match=r"ADIANA needs an unbiased compressor .* use EF21"):
        sim.run(problem, "adiana", compressor=("topk", {"k": 1}), rounds=1)
    with pytest.raises(ValueError, match=r"LoCoDL needs an unbiased compressor .* use EF21"):
        sim.run(problem, "locodl", compressor=("topk", {"k": 1}), rounds=1)
