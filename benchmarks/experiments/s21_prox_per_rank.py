"""Session 21 experiment: a prox term from the estimate, θ per rank (``prox_rho``) or one from the largest δ̂.

In the simulator, B8 part 2d's eight cases under overlap (``eager=once``, ``correction_memory=0.2``, full
precision), ρ = 0.5 and 1:

- ``own``: the library's ``prox_rho``, θ_m = 1/(2ρ·δ̂_m) from each rank's own estimate;
- ``max``: one θ = 1/(2ρ·max_m δ̂_m) for every rank (session 20's patched variant; sharing it in Lightning would take
  one value more in each message), patched in here, with the local step s/(L + 1/θ) as ``prox_rho`` takes it.

    python benchmarks/experiments/s21_prox_per_rank.py --out benchmarks/results/s21_prox_per_rank.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import b8_gated_dane as b8

from lit_commeff import sim
from lit_commeff.algorithms import gated_dane as gd

_prox_theta = gd.GatedDANE.prox_theta
_MODE: dict[str, Any] = {"shared": False}


def _patched_prox_theta(self: gd.GatedDANE) -> torch.Tensor | None:
    theta = _prox_theta(self)
    if _MODE["shared"] and theta is not None:  # every row takes the smallest θ, from the largest δ̂
        return torch.full_like(theta, float(theta.min()))
    return theta


def main() -> None:
    args = b8.experiment_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    gd.GatedDANE.prox_theta = _patched_prox_theta  # type: ignore[method-assign]
    rows = []
    for case in b8.noprox_cases(args.data):
        _, problem, step, lr, momentum = case
        for variant in ("own", "max"):
            for rho in (0.5, 1.0):
                _MODE["shared"] = variant == "max"
                history = sim.run(
                    problem, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                    delta=None, prox_rho=rho, lr=step / problem.L, correction_memory=0.2, rounds=args.rounds,
                    tol=1e-8, sync="fixed", inner_steps=10, correction="averaged", outer="nesterov", overlap=True,
                    message_dtype="model", eager="once",
                )  # fmt: skip
                rows.append(b8.experiment_row(case, history, f"θ {variant}, ρ {rho}", theta=variant, prox_rho=rho))
    b8.write_experiment(args, rows)


if __name__ == "__main__":
    main()
