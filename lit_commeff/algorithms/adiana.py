"""ADIANA: accelerated DIANA (compressed gradient differences with Nesterov-type acceleration)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import Algorithm, LocalOracle, check_positive, require_unbiased
from lit_commeff.algorithms.memory import DianaShift
from lit_commeff.algorithms.params import paper_omega
from lit_commeff.compression import Compressor
from lit_commeff.compression.seeding import SHARED_WORKER, generator
from lit_commeff.transport import Transport


class ADIANA(Algorithm):
    """ADIANA: accelerated compressed gradient differences (unbiased compression).

    Li, Kovalev, Qian, Richtárik, ICML 2020, "Acceleration for Compressed Gradient Descent in
    Distributed and Federated Optimization", arXiv 2002.11364; strongly convex case, update order
    and constants as in the authors' group's reference code (``Rustem-Islamov/FedNL-Public``,
    ``methods.py``, function ``adiana``, verified).

    Hub state x, y, z, w (w is also held by every worker, resent only after it changes); worker m
    keeps a shift h_m, the hub their mean h̄. Per iteration (one round):
    ``x = θ_1 z + θ_2 w + (1 − θ_1 − θ_2) y``; the hub broadcasts x (and w when it changed in the
    previous round); worker m sends two compressed messages ``m_m = Q(∇f_m(x) − h_m)`` and
    ``c_m = Q(∇f_m(w) − h_m)`` and shifts ``h_m ← h_m + α c_m``; the hub steps
    ``g = h̄ + mean m``, ``h̄ ← h̄ + α mean c``, ``y⁺ = x − η g``,
    ``z⁺ = β z + (1 − β) x + (γ/η)(y⁺ − x)`` and ``w⁺ = y`` (the old y, as in the reference code)
    with probability p, else w. The coin comes from the seed schedule, so every process agrees.
    Output: y. Cost: 2K/d CC-3 units per round for RandK (two messages per worker).

    Constants (reference code, n = M): α = 1/(ω + 1), θ_2 = 1/2,
    p = min{1, max{1, √(n/(32ω)) − 1} / (2(1 + ω))}, η = min{1/(2L), n/(64 ω L (2p(ω + 1) + 1)²)},
    θ_1 = min{1/4, √(ημ/p)}, γ = η/(2(θ_1 + ημ)), β = 1 − γμ (ω = 0: p = 1, η = 1/(2L)). As in the
    OLGA paper's runs the formulas take ω = d/K for RandK (our ``omega(d) + 1``); pass ``omega=`` to
    override. The theorem number of the paper was not quoted (paper text unavailable).

    Args:
        transport: Message transport.
        oracle: Local gradients.
        x0: Starting point (x = y = z = w = x0, h_m = 0).
        compressor: Unbiased compressor Q.
        L: Smoothness of f.
        mu: Strong-convexity constant μ > 0.
        alpha, p, eta, theta1, theta2, gamma, beta: Explicit values override the theory ones (later
            formulas use the overridden values).
        omega: Compressor constant fed to the formulas (default: the paper's convention).
        seed: Seed of the compressor draws and of the w-coin.
    """

    name: ClassVar[str] = "adiana"
    _state: ClassVar[tuple[str, ...]] = ("x", "y", "z", "w", "gw", "w_pending")
    _memory: ClassVar[tuple[str, ...]] = ("shift",)

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        compressor: Compressor,
        L: float,
        mu: float,
        alpha: float | None = None,
        p: float | None = None,
        eta: float | None = None,
        theta1: float | None = None,
        theta2: float | None = None,
        gamma: float | None = None,
        beta: float | None = None,
        omega: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        require_unbiased(compressor, "ADIANA", "EF21 (adiana -> ef21)")
        L, mu = check_positive("L", L), check_positive("mu", mu)
        w = float(omega) if omega is not None else paper_omega(compressor.omega(x0.numel()))
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"omega: omega={omega!r} is out of range; it must be a finite number >= 0.")
        n = transport.num_workers
        self.compressor = compressor
        self._omega = w
        self.alpha = check_positive("alpha", alpha if alpha is not None else 1 / (w + 1), upper=1.0)
        self.theta2 = check_positive("theta2", theta2 if theta2 is not None else 0.5, upper=1.0)
        if p is None:
            p = 1.0 if w == 0 else min(1.0, max(1.0, math.sqrt(n / (32 * w)) - 1) / (2 * (1 + w)))
        self.p = check_positive("p", p, upper=1.0)
        if eta is None:
            eta = 1 / (2 * L) if w == 0 else min(1 / (2 * L), n / (64 * w * L * (2 * self.p * (w + 1) + 1) ** 2))
        self.eta = check_positive("eta", eta)
        self.theta1 = check_positive(
            "theta1", theta1 if theta1 is not None else min(0.25, math.sqrt(self.eta * mu / self.p)), upper=1.0
        )
        if self.theta1 + self.theta2 > 1:
            raise ValueError(
                f"theta1: theta1 + theta2 = {self.theta1} + {self.theta2} exceeds 1; x must be a convex combination."
            )
        self.gamma = check_positive(
            "gamma", gamma if gamma is not None else self.eta / (2 * (self.theta1 + self.eta * mu))
        )
        self.beta = check_positive("beta", beta if beta is not None else 1 - self.gamma * mu, upper=1.0)
        hub = transport.is_hub
        start = x0.detach().clone()
        self.x: Tensor | None = None
        self.y = start.clone() if hub else None
        self.z = start.clone() if hub else None
        self.w = start  # every process: the point the w-messages are computed at
        self.gw: Tensor | None = None  # ∇f_m(w) for this block, recomputed only when w changes
        #: h_m of this process's workers (zeros, shaped at the first round) and, on the hub, the mean shift h̄
        self.shift = DianaShift(alpha=self.alpha, aggregate=torch.zeros_like(start) if hub else None)
        self.w_pending = False  # the hub's w changed last round: resend it with the next x

    def hyperparameters(self) -> dict[str, float]:
        return {
            "alpha": self.alpha,
            "p": self.p,
            "eta": self.eta,
            "theta1": self.theta1,
            "theta2": self.theta2,
            "gamma": self.gamma,
            "beta": self.beta,
            "omega_used": self._omega,
        }

    def output(self) -> Tensor:
        return self._need(self.y, "y")

    def _coin(self) -> bool:
        if self.p >= 1.0:
            return True
        g = generator(self.seed, self.round, SHARED_WORKER, key=f"{self.name}/coin")
        return bool(torch.rand(1, dtype=torch.float64, generator=g).item() < self.p)

    def _step(self) -> None:
        t = self.transport
        t.begin_round()
        if t.is_hub:
            z, y = self._need(self.z, "z"), self._need(self.y, "y")
            self.x = self.theta1 * z + self.theta2 * self.w + (1 - self.theta1 - self.theta2) * y
        x_out = self._need(self.x, "x") if t.is_hub else torch.zeros_like(self.w)
        if self.w_pending:
            x, w = t.broadcast(x_out, self.w, tag="point")
            self.w, self.gw = w, None
        else:
            (x,) = t.broadcast(x_out, tag="point")
        gx = self.oracle.grads(x)
        if self.gw is None:
            self.gw = self.oracle.grads(self.w)
        shift = self.shift
        _, received_x = t.gather_compressed(
            shift.compensate(gx), self.compressor, step=self.round, key=f"{self.name}/x"
        )
        own_w, received_w = t.gather_compressed(
            shift.compensate(self.gw), self.compressor, step=self.round, key=f"{self.name}/w"
        )
        shift.update(own_w)  # only the messages at w move the shifts
        self.w_pending = self._coin()
        if t.is_hub:
            g = self._need(shift.aggregate, "shift.aggregate") + self._need(received_x, "received_x").mean(dim=0)
            shift.update_aggregate(self._need(received_w, "received_w").mean(dim=0))
            y_old, self.y = self._need(self.y, "y"), x - self.eta * g
            self.z = self.beta * self._need(self.z, "z") + (1 - self.beta) * x + (self.gamma / self.eta) * (self.y - x)
            if self.w_pending:
                self.w = y_old
