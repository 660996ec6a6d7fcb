"""Accelerated ExtraGradient: the similarity baseline without compression."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import Algorithm, LocalOracle, check_positive
from lit_commeff.transport import Transport


class AccExtraGradient(Algorithm):
    """Accelerated ExtraGradient: the similarity baseline without compression.

    Kovalev, Beznosikov, Borodich, Gasnikov, Scutari, NeurIPS 2022, "Optimal Gradient Sliding and
    its Application to Distributed Optimization Under Similarity", arXiv 2205.15136, Algorithm 1
    with q = f_1, p = f − f_1.

    Per iteration, two dense rounds: at ``x_g = τ x + (1 − τ) x_f`` (the hub then solves
    ``x_f = argmin <∇p(x_g), x − x_g> + ||x − x_g||²/(2θ) + f_1(x)`` exactly, which meets the paper's
    inexactness criterion), and at ``x_f`` (then ``x ← x + ηα(x_f − x) − η∇f(x_f)``). Parameters
    (BASELINES.md, checked against a public reference implementation): θ = 1/(2δ),
    τ = min{1, √μ/(2√δ)}, η = min{1/(2μ), 1/(2√(μδ))}, α = μ. Output ``x_f``.

    Args:
        transport: Message transport.
        oracle: Local gradients and the hub's prox.
        x0: Starting point ``x = x_f``.
        mu: Strong-convexity constant μ > 0.
        delta: Hessian similarity δ > 0.
        theta, tau, eta: Explicit values override the theory ones.
        seed: Unused (deterministic method); kept for a uniform signature.
    """

    name: ClassVar[str] = "acc_extragradient"
    _state: ClassVar[tuple[str, ...]] = ("phase", "x", "xf", "xg")

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        mu: float,
        delta: float,
        theta: float | None = None,
        tau: float | None = None,
        eta: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        mu = check_positive("mu", mu)
        delta = check_positive("delta", delta)
        self.theta = check_positive("theta", theta if theta is not None else 1 / (2 * delta))
        default_tau = min(1.0, math.sqrt(mu) / (2 * math.sqrt(delta)))
        default_eta = min(1 / (2 * mu), 1 / (2 * math.sqrt(mu * delta)))
        self.tau = check_positive("tau", tau if tau is not None else default_tau, upper=1.0)
        self.eta = check_positive("eta", eta if eta is not None else default_eta)
        self.alpha = mu
        hub = transport.is_hub
        self.x = x0.detach().clone() if hub else None
        self.xf = x0.detach().clone() if hub else None
        self.xg = x0.detach().clone()
        self.phase = "xg"

    def hyperparameters(self) -> dict[str, float]:
        return {"theta": self.theta, "tau": self.tau, "eta": self.eta, "alpha": self.alpha}

    def output(self) -> Tensor:
        return self._need(self.xf, "xf")

    def _step(self) -> None:
        t = self.transport
        t.begin_round()
        if self.phase == "xg":
            if t.is_hub:
                self.xg = self.tau * self._need(self.x, "x") + (1 - self.tau) * self._need(self.xf, "xf")
            (xg,) = t.broadcast(self.xg, tag="point")
            gathered = t.gather(self.oracle.grads(xg), tag="dense")
            if t.is_hub:
                gathered = self._need(gathered, "gathered")
                grad_p = gathered.mean(dim=0) - gathered[t.hub]
                self.xf = self.oracle.prox(xg, grad_p, self.theta)
            self.phase = "xf"
        else:
            (xf,) = t.broadcast(self._need(self.xf, "xf") if t.is_hub else torch.zeros_like(self.xg), tag="point")
            gathered = t.gather(self.oracle.grads(xf), tag="dense")
            if t.is_hub:
                x = self._need(self.x, "x")
                self.x = x + self.eta * self.alpha * (xf - x) - self.eta * self._need(gathered, "gathered").mean(dim=0)
            self.phase = "xg"
