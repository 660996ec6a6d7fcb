"""Non-accelerated baselines: distributed gradient descent, DIANA, EF21."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import (
    Algorithm,
    LocalOracle,
    check_positive,
    descend,
    require_biased,
    require_unbiased,
)
from lit_commeff.algorithms.memory import DianaShift, EF21Estimate
from lit_commeff.algorithms.params import paper_omega
from lit_commeff.compression import Compressor
from lit_commeff.transport import Transport


class GradientDescent(Algorithm):
    """Distributed gradient descent with dense gradients: ``x ← x − lr ∇f(x)``, one dense round each.

    Args:
        transport: Message transport.
        oracle: Local gradients.
        x0: Starting point.
        L: Smoothness of f; the default step is 1/L.
        lr: Explicit step size (overrides 1/L).
        seed: Unused (deterministic method).
    """

    name: ClassVar[str] = "gd"
    _state: ClassVar[tuple[str, ...]] = ("x",)

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        L: float | None = None,
        lr: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        if lr is None:
            if L is None:
                raise ValueError("lr: gradient descent needs a step size lr or the smoothness L (lr = 1/L).")
            lr = 1 / check_positive("L", L)
        self.lr = check_positive("lr", lr)
        self.x = x0.detach().clone()

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr}

    def output(self) -> Tensor:
        return self.x

    def _step(self) -> None:
        # The hub broadcasts each new iterate in the round that produced it, so every process holds x.
        t = self.transport
        t.begin_round()
        gathered = t.gather(self.oracle.grads(self.x), tag="dense")
        x = descend(self.oracle, self.x, self._need(gathered, "gathered").mean(dim=0), self.lr) if t.is_hub else self.x
        (self.x,) = t.broadcast(x, tag="point")


class DIANA(Algorithm):
    """DIANA: compressed gradient differences with learned shifts (unbiased compression).

    Mishchenko, Gorbunov, Takáč, Richtárik 2019, "Distributed Learning with Compressed
    Gradient Differences", arXiv 1901.09269; strongly convex constants as in Horváth et al. 2019,
    arXiv 1904.05115, and the authors' group's reference code).

    Worker m sends ``Δ_m = Q(∇f_m(x) − h_m)`` and shifts ``h_m ← h_m + αΔ_m``; the hub steps
    ``x ← x − γ(h̄ + mean Δ)`` and ``h̄ ← h̄ + α mean Δ``. α = 1/(ω + 1),
    γ = min{α/(2μ), 2/((L + μ)(1 + 6ω/M))}, with ω = d/K for RandK as in the OLGA paper's runs.
    One compressed round per iteration; the hub's own message is exact.

    Args:
        transport: Message transport.
        oracle: Local gradients.
        x0: Starting point.
        compressor: Unbiased compressor Q.
        L: Smoothness of f.
        mu: Strong-convexity constant μ > 0.
        alpha, gamma: Explicit values override the theory ones.
        omega: Compressor constant fed to the formulas (default: the paper's convention).
        seed: Seed of the compressor draws.
    """

    name: ClassVar[str] = "diana"
    _state: ClassVar[tuple[str, ...]] = ("x",)
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
        gamma: float | None = None,
        omega: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        require_unbiased(compressor, "DIANA", "EF21 (diana -> ef21)")
        L, mu = check_positive("L", L), check_positive("mu", mu)
        w = float(omega) if omega is not None else paper_omega(compressor.omega(x0.numel()))
        m = transport.num_workers
        self.compressor = compressor
        self.alpha = check_positive("alpha", alpha if alpha is not None else 1 / (w + 1), upper=1.0)
        self.gamma = check_positive(
            "gamma", gamma if gamma is not None else min(self.alpha / (2 * mu), 2 / ((L + mu) * (1 + 6 * w / m)))
        )
        self.x = x0.detach().clone()
        #: h_m of this process's workers (zeros, shaped at the first round) and, on the hub, the mean shift h̄
        self.shift = DianaShift(alpha=self.alpha, aggregate=torch.zeros_like(self.x) if transport.is_hub else None)

    def hyperparameters(self) -> dict[str, float]:
        return {"alpha": self.alpha, "gamma": self.gamma}

    def output(self) -> Tensor:
        return self.x

    def _step(self) -> None:
        t = self.transport
        t.begin_round()
        shift = self.shift
        own, received = t.gather_compressed(
            shift.compensate(self.oracle.grads(self.x)), self.compressor, step=self.round, key=self.name
        )
        shift.update(own)
        x = self.x
        if t.is_hub:
            mean = self._need(received, "received").mean(dim=0)
            x = descend(self.oracle, x, self._need(shift.aggregate, "shift.aggregate") + mean, self.gamma)
            shift.update_aggregate(mean)
        (self.x,) = t.broadcast(x, tag="point")


class EF21(Algorithm):
    """EF21: error feedback for biased compressors, the compressed-only reference.

    Richtárik, Sokolov, Fatkhullin, NeurIPS 2021, "EF21: A New, Simpler, Theoretically
    Better, and Practically Faster Error Feedback", arXiv 2106.05203).

    One dense round first (``g_m = ∇f_m(x_0)``), then per iteration: the hub steps ``x ← x − γ g``
    and broadcasts x; worker m sends ``c_m = C(∇f_m(x) − g_m)`` and updates ``g_m ← g_m + c_m``; the
    hub ``g ← g + mean c``. With contraction ``a = 1/β`` (K/d for TopK): θ = 1 − √(1 − a),
    β' = (1 − a)/(1 − √(1 − a)), L̃ = √(mean_m L_m²) and
    γ = min{1/(L + L̃√(2β'/θ)), θ/(2μ)} (strongly convex / PL case; as in the authors' code).

    Args:
        transport: Message transport.
        oracle: Local gradients.
        x0: Starting point.
        compressor: Biased contractive compressor C.
        L: Smoothness of f.
        mu: Strong-convexity (PL) constant μ > 0.
        L_tilde: Quadratic mean of the workers' smoothness constants (default L).
        gamma: Explicit step size (overrides the theory one).
        seed: Seed of the compressor draws.
    """

    name: ClassVar[str] = "ef21"
    _state: ClassVar[tuple[str, ...]] = ("x", "started")
    _memory: ClassVar[tuple[str, ...]] = ("estimate",)

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        compressor: Compressor,
        L: float,
        mu: float,
        L_tilde: float | None = None,
        gamma: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        require_biased(compressor, "EF21", "DIANA (ef21 -> diana)")
        L, mu = check_positive("L", L), check_positive("mu", mu)
        lt = check_positive("L_tilde", L_tilde if L_tilde is not None else L)
        a = 1 / compressor.beta(x0.numel())
        if a >= 1:  # exact compressor: EF21 is gradient descent
            step = 1 / L
        else:
            theta = 1 - math.sqrt(1 - a)
            beta = (1 - a) / theta
            step = min(1 / (L + lt * math.sqrt(2 * beta / theta)), theta / (2 * mu))
        self.compressor = compressor
        self.gamma = check_positive("gamma", gamma if gamma is not None else step)
        self.x = x0.detach().clone()
        #: g_m of this process's workers and, on the hub, their mean g (both set by the dense first round)
        self.estimate = EF21Estimate()
        self.started = False

    def hyperparameters(self) -> dict[str, float]:
        return {"gamma": self.gamma}

    def output(self) -> Tensor:
        return self.x

    def _step(self) -> None:
        t = self.transport
        t.begin_round()
        estimate = self.estimate
        if not self.started:  # dense initialisation round
            grads = self.oracle.grads(self.x)
            gathered = t.gather(grads, tag="dense")
            estimate.reset(grads, self._need(gathered, "gathered").mean(dim=0) if t.is_hub else None)
            self.started = True
        else:
            own, received = t.gather_compressed(
                estimate.compensate(self.oracle.grads(self.x)), self.compressor, step=self.round, key=self.name
            )
            estimate.update(own)
            if t.is_hub:
                estimate.update_aggregate(self._need(received, "received").mean(dim=0))
        # The hub steps and broadcasts the new iterate in the same round, so every process holds x.
        x = (
            descend(self.oracle, self.x, self._need(estimate.aggregate, "estimate.aggregate"), self.gamma)
            if t.is_hub
            else self.x
        )
        (self.x,) = t.broadcast(x, tag="point")
