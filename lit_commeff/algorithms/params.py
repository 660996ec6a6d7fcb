"""Parameter presets of OLGA and EF-OLGA (Bylinkin & Beznosikov, AAAI'25).

``theory`` is the paper's Corollary 1 (OLGA) / Theorem 2 (EF-OLGA) exactly; ``similarity`` sets
θ = 1/(2δ), the similarity bound the team's prototype found up to 4.6× faster in CC-3 units
(ALGORITHMS.md); ``auto`` is ``similarity`` with δ replaced by an online estimate δ̂ from the dense
rounds. τ and α always follow from (p, θ, μ) by the paper's formulas unless given explicitly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from lit_commeff.algorithms.base import check_positive

PRESETS = ("theory", "similarity", "auto")


@dataclass(frozen=True)
class OlgaParams:
    """Resolved OLGA / EF-OLGA hyper-parameters."""

    p: float
    theta: float
    tau: float
    alpha: float
    mu: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for logs."""
        return asdict(self)


def olga_params(
    *,
    preset: str,
    mu: float,
    delta: float,
    num_workers: int,
    omega: float,
    gamma: float,
    error_feedback: bool = False,
    p: float | None = None,
    theta: float | None = None,
    tau: float | None = None,
    alpha: float | None = None,
) -> OlgaParams:
    """Resolve (p, θ, τ, α) for a preset; explicit values override it.

    Args:
        preset: ``theory``, ``similarity`` or ``auto`` (for ``auto`` pass the current δ̂ as ``delta``).
        mu: Strong-convexity constant μ (>= 0; 0 switches the z-step's anchoring off).
        delta: Hessian similarity δ (or its estimate).
        num_workers: M.
        omega: The compressor constant the formulas use: ω for OLGA, β for EF-OLGA. The paper feeds
            ω = d/K for RandK (our ``omega(d) + 1``); callers choose, see :func:`paper_omega`.
        gamma: Compression power γ (dense over compressed bytes); p = 1/γ by default.
        error_feedback: EF-OLGA's constants instead of OLGA's.
        p: Probability of ending an inner epoch after each compressed round, in (0, 1].
        theta: Prox step θ > 0.
        tau: Momentum weight τ in (0, 1].
        alpha: z step α > 0.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset: preset={preset!r} is unknown; use one of {list(PRESETS)}.")
    if mu < 0 or not math.isfinite(mu):
        raise ValueError(f"mu: mu={mu!r} is out of range; the strong-convexity constant must be >= 0.")
    p = check_positive("p", p if p is not None else min(1.0, 1.0 / gamma), upper=1.0)
    if theta is None:
        check_positive("delta", delta)
        if preset == "theory" and not error_feedback:  # Corollary 1
            theta = min(math.sqrt(p * num_workers) / (8 * delta * math.sqrt(omega)), 1 / (2 * delta))
        elif preset == "theory":  # Theorem 2's bound (Corollary 2 prints 12: 24 is the safe one)
            theta = p**1.5 / (24 * delta)
        else:
            theta = 1 / (2 * delta)
    theta = check_positive("theta", theta)
    if tau is None:
        # EF-OLGA's tau mirrors Corollary 1 with sqrt(mu); the printed Corollary 2 omits sqrt(mu).
        c = 18 if error_feedback else 4
        tau = min(math.sqrt(mu * theta / p) / c, 1 / c) if mu > 0 else 1 / c
    tau = check_positive("tau", tau, upper=1.0)
    if alpha is None:
        alpha = theta / ((36 if error_feedback else 8) * p * tau)
    alpha = check_positive("alpha", alpha)
    return OlgaParams(p=p, theta=theta, tau=tau, alpha=alpha, mu=float(mu))


def paper_omega(compressor_constant: float) -> float:
    """The paper's convention: RandK enters the formulas as ω = d/K, i.e. our ω + 1."""
    return compressor_constant + 1.0
