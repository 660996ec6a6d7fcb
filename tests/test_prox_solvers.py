"""The pluggable prox solvers agree with the exact ridge/logistic prox."""

from __future__ import annotations

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms import ExactProx, NewtonProx, OptimizerProx, ProblemOracle
from lit_commeff.problems import Logistic, synthetic_ridge


@pytest.fixture(scope="module")
def ridge():
    return synthetic_ridge(workers=4, n=30, dim=6, similarity=0.3, lam=0.1, seed=0)


def _hub_loss(problem):
    return lambda x: problem.worker_losses(x)[0]


def test_newton_prox_matches_exact_ridge(ridge):
    x_k, t = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    exact = ExactProx(ridge)(x_k, t, 0.7)
    assert torch.allclose(NewtonProx(_hub_loss(ridge))(x_k, t, 0.7), exact, atol=1e-10)


def test_newton_prox_matches_problem_newton_on_logistic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(120, 5, generator=g, dtype=torch.float64)
    b = torch.where(a[:, 0] + 0.3 * torch.randn(120, generator=g, dtype=torch.float64) > 0, 1.0, -1.0)
    problem = Logistic.from_data(a, b, workers=3, seed=0)
    x_k, t = torch.randn(5, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64, generator=g)
    exact = problem.hub_prox(x_k, t, 2.0)
    assert torch.allclose(NewtonProx(_hub_loss(problem))(x_k, t, 2.0), exact, atol=1e-9)


def test_optimizer_prox_approaches_exact_with_steps(ridge):
    x_k, t = torch.randn(6, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    exact = ExactProx(ridge)(x_k, t, 0.5)
    errors = [float((OptimizerProx(_hub_loss(ridge), steps=s, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))(
        x_k, t, 0.5) - exact).norm()) for s in (1, 10, 200)]  # fmt: skip
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-8


def test_olga_converges_with_an_inexact_optimizer_prox(ridge):
    oracle_prox = OptimizerProx(_hub_loss(ridge), steps=50, optimizer=lambda p: torch.optim.SGD(p, lr=0.1))

    # sim.run builds its own oracle; drive the prox through a problem wrapper instead
    class Wrapped:
        def __getattr__(self, name):
            return getattr(ridge, name)

        def hub_prox(self, x_k, t, theta, worker=0):
            return oracle_prox(x_k, t, theta)

    h = sim.run(Wrapped(), "olga", compressor=("randk", {"k": 2}), cc3_budget=300, tol=1e-8)
    assert h.final["rel_subopt"] <= 1e-8


def test_problem_oracle_uses_the_given_solver(ridge):
    calls = []

    def solver(x_k, t, theta):
        calls.append(theta)
        return x_k

    oracle = ProblemOracle(ridge, torch.arange(4), prox=solver)
    oracle.prox(torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64), 0.25)
    assert calls == [0.25]


@pytest.mark.parametrize(("cls", "kw", "message"), [
    (NewtonProx, {"tol": 0}, r"tol: tol=0 is out of range"),
    (OptimizerProx, {"steps": 0}, r"steps: steps=0 is out of range"),
])  # fmt: skip
def test_bad_solver_options(ridge, cls, kw, message):
    with pytest.raises(ValueError, match=message):
        cls(_hub_loss(ridge), **kw)
