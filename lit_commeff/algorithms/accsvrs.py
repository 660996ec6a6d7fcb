"""AccSVRS: accelerated variance-reduced sliding with client sampling (no compression)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import LocalOracle, check_positive
from lit_commeff.algorithms.olga import OLGA
from lit_commeff.compression import Identity
from lit_commeff.compression.seeding import SHARED_WORKER, generator
from lit_commeff.transport import Transport


class AccSVRS(OLGA):
    """AccSVRS: OLGA's outer loop with client sampling in the inner epoch instead of compression.

    Lin, Han, Ye, Zhang, NeurIPS 2023, "Stochastic Distributed Optimization under Average
    Second-order Similarity: Algorithms and Analysis", arXiv 2304.07504. As specified in BASELINES.md:
    inside an epoch (``N ~ Geom(p)``, p = 1/M) each round one uniformly sampled worker i (drawn from the
    seed schedule, the same on every process; the hub may be drawn, then nothing travels) sends its
    dense ``∇f_i(x_k) − ∇f_1(x_k) − ∇f_i(x_0) + ∇f_1(x_0)``, an unbiased estimate of the mean
    difference, and the hub solves the same prox subproblem as OLGA. The outer loop is OLGA's
    Algorithm 2 with the full gradient at y (Lin et al. sample one client there; BASELINES.md keeps the
    full gradient). Cost per inner round: 1 CC-3 unit (one dense message).

    Constants: **unverified**. Neither the paper's algorithm box nor the authors' code has been found
    (searched again for issue 20: only the abstract, which names Katyusha X as the acceleration framework);
    these are the rate-consistent stand-in of BASELINES.md, OLGA's Corollary 1 with ω/M replaced by 1:
    θ = min{√p/(8δ), 1/(2δ)}, τ = min{√(μθ/p)/4, 1/4}, α = θ/(8pτ). Results with them are those of the
    stand-in, not of Lin et al.'s method.

    Args:
        transport: Message transport.
        oracle: Local gradients and the hub's prox.
        x0: Starting point.
        mu: Strong-convexity constant μ.
        delta: Hessian similarity δ.
        p, theta, tau, alpha: Explicit values override the stand-in constants.
        seed: Seed of the epoch lengths and client draws.
    """

    name: ClassVar[str] = "accsvrs"

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        mu: float,
        delta: float,
        p: float | None = None,
        theta: float | None = None,
        tau: float | None = None,
        alpha: float | None = None,
        seed: int = 0,
    ) -> None:
        delta = check_positive("delta", delta)
        p = check_positive("p", p if p is not None else 1 / transport.num_workers, upper=1.0)
        if theta is None:
            theta = min(math.sqrt(p) / (8 * delta), 1 / (2 * delta))
        super().__init__(
            transport=transport, oracle=oracle, x0=x0, compressor=Identity(), mu=mu, delta=delta,
            preset="theory", p=p, theta=theta, tau=tau, alpha=alpha, seed=seed,
        )  # fmt: skip

    def hyperparameters(self) -> dict[str, float]:
        out = super().hyperparameters()
        out.pop("omega_used", None)
        return out

    def sampled_worker(self, round_id: int) -> int:
        """The worker drawn to communicate in a given round (uniform over all M, hub included)."""
        g = generator(self.seed, round_id, SHARED_WORKER, key="accsvrs/client")
        return int(torch.randint(self.transport.num_workers, (1,), generator=g))

    def _round_inner(self) -> None:
        t = self.transport
        if self.inner_k > 0:
            self.xk, self.g1k = t.broadcast(self.xk, self.g1k, tag="point")
        i = self.sampled_worker(self.round)
        grads = self.oracle.grads(self.xk)
        ghat = grads - self.g1k - self._need(self.G0, "G0") + self.g1_0
        if t.is_hub:
            ghat[t.hub_row] = 0
        received = t.gather(ghat, tag="dense", senders=[i])
        if t.is_hub:
            t_k = self._need(received, "received")[i] - self.g1_0 + self._need(self.gf0, "gf0")  # E_i[ĝ_i] = mean_m ĝ_m
            self.xk = self.oracle.prox(self.xk, t_k, self.theta)
            self.g1k = self.oracle.hub_grad(self.xk)
        self.inner_k += 1
        if self.inner_k >= self.inner_n:
            self.phase = "y"
