"""Session 20 experiment: overlap starts that damp a rank's change, and smaller correction memories (simulator).

B8 part 2d's eight cases (label-sorted a9a, M = 10, and the synthetic ridge s = 1, M = 4; local steps of 1/L and
0.3/L; plain averaging and DiLoCo's outer step (0.7, 0.9); no prox term; overlap with full-precision messages,
``eager=once``). Rows: correction memory 0.2 (the default), 0.1 and 0.05, and two starts the library does not
offer, patched in here to test the idea before building it:

- ``dev ρ``: the start outer(x_r, (Δ̄' + ρ(Δ_m − Δ̄'))/g), the rank's deviation from the last known mean change Δ̄'
  damped by ρ;
- ``all ρ``: outer(x_r, ρ·Δ_m/g), the whole change damped;
- ``extrapolated ρ``: the start unchanged, the correction in force extrapolated for its age,
  c + ρ(c − c_prev), c being the (memory-averaged) correction of this sync and c_prev the last one's;
- ``prox 1/(2·ρδ)``: the start and corrections unchanged, a prox term θ = 1/(2ρδ) from the problem's true δ scaled by
  ρ (what a prox term from an estimate δ̂ off by ρ would do), the local step still step/L; ``prox_lr``: the same
  with the local step step/(L + 1/θ), which accounts for the prox term's curvature; ``prox_est``: θ = 1/(2ρδ̂) from
  the method's own running estimate δ̂ (the largest over the ranks), updated at every sync, with the local step
  following it; no prox term before the first estimate.

    python benchmarks/experiments/s20_damped_starts.py --out benchmarks/results/s20_damped_starts.json
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

#: (label, correction memory, damping kind or None, ρ)
VARIANTS: tuple[tuple[str, float, str | None, float], ...] = (
    ("once, memory 0.2", 0.2, None, 1.0),
    ("once, memory 0.1", 0.1, None, 1.0),
    ("once, memory 0.05", 0.05, None, 1.0),
    ("dev 0.5, memory 0.2", 0.2, "dev", 0.5),
    ("dev 0.5, memory 0.1", 0.1, "dev", 0.5),
    ("all 0.7, memory 0.2", 0.2, "all", 0.7),
    ("extrapolated 0.1, memory 0.2", 0.2, "extrapolate", 0.1),
    ("extrapolated 0.5, memory 0.2", 0.2, "extrapolate", 0.5),
    ("extrapolated 1, memory 0.2", 0.2, "extrapolate", 1.0),
    ("extrapolated 1, memory 0", 0.0, "extrapolate", 1.0),
    ("prox 1/(2δ), memory 0.2", 0.2, "prox", 1.0),
    ("prox 1/(2·0.5δ), memory 0.2", 0.2, "prox", 0.5),
    ("prox 1/(2·2δ), memory 0.2", 0.2, "prox", 2.0),
    ("prox 1/(2δ), step/(L + 1/θ), memory 0.2", 0.2, "prox_lr", 1.0),
    ("prox 1/(2·0.5δ), step/(L + 1/θ), memory 0.2", 0.2, "prox_lr", 0.5),
    ("prox 1/(2·2δ), step/(L + 1/θ), memory 0.2", 0.2, "prox_lr", 2.0),
    ("prox 1/(2δ̂), step/(L + 1/θ), memory 0.2", 0.2, "prox_est", 1.0),
    ("prox 1/(2·0.5δ̂), step/(L + 1/θ), memory 0.2", 0.2, "prox_est", 0.5),
    ("prox 1/(2·2δ̂), step/(L + 1/θ), memory 0.2", 0.2, "prox_est", 2.0),
)
_MODE: dict[str, Any] = {"kind": None, "rho": 1.0, "step": 1.0, "L": 1.0}
_apply_reply, _eager_change = gd.GatedDANE._apply_reply, gd.GatedDANE._eager_change
_set_correction = gd.GatedDANE._set_correction
_estimate_delta = gd.GatedDANE._estimate_delta


def _patched_apply_reply(self: gd.GatedDANE, joined: Any) -> None:
    reply = joined[0]
    if float(reply[2 * self.dim + 1]) <= 0:  # not a void round: keep its mean change
        self._s20_mean = reply[: self.dim].clone()
    _apply_reply(self, joined)


def _patched_set_correction(self: gd.GatedDANE, ghat: torch.Tensor, grads: torch.Tensor) -> None:
    if _MODE["kind"] != "extrapolate":
        _set_correction(self, ghat, grads)
        return
    previous = getattr(self, "_s20_base", None)
    self.corr = previous  # the memory averages the un-extrapolated corrections
    _set_correction(self, ghat, grads)
    base = self._s20_base = self.corr
    if previous is not None and base is not None:
        self.corr = base + _MODE["rho"] * (base - previous)


def _patched_estimate_delta(self: gd.GatedDANE, *args: Any, **kwargs: Any) -> None:
    _estimate_delta(self, *args, **kwargs)
    if _MODE["kind"] == "prox_est" and self.delta_hat is not None:
        self.theta = 1.0 / (2.0 * _MODE["rho"] * float(self.delta_hat.max()))
        self.lr = _MODE["step"] / (_MODE["L"] + 1.0 / self.theta)


def _patched_eager_change(self: gd.GatedDANE, change: torch.Tensor) -> torch.Tensor:
    kind, rho = _MODE["kind"], _MODE["rho"]
    if kind not in ("dev", "all"):
        return _eager_change(self, change)
    gain = self._outer_gain()
    if kind == "all":
        return rho * change / gain
    known = getattr(self, "_s20_mean", None)
    known = torch.zeros_like(change[0]) if known is None else known
    return (known + rho * (change - known)) / gain


def main() -> None:
    args = b8.experiment_parser(__doc__).parse_args()
    gd.GatedDANE._apply_reply = _patched_apply_reply  # type: ignore[method-assign]
    gd.GatedDANE._eager_change = _patched_eager_change  # type: ignore[method-assign]
    gd.GatedDANE._set_correction = _patched_set_correction  # type: ignore[method-assign]
    gd.GatedDANE._estimate_delta = _patched_estimate_delta  # type: ignore[method-assign]
    rows = []
    for case in b8.noprox_cases(args.data):
        _, problem, step, lr, momentum = case
        for label, memory, kind, rho in VARIANTS:
            _MODE.update(kind=kind, rho=rho, step=step, L=problem.L)
            delta = problem.delta * rho if kind in ("prox", "prox_lr") else None
            curvature = problem.L + (2 * delta if kind == "prox_lr" and delta is not None else 0.0)
            history = sim.run(
                problem, "gated_dane", compressor="identity", outer_lr=lr, outer_momentum=momentum,
                delta=delta, lr=step / curvature, correction_memory=memory,
                rounds=args.rounds, tol=1e-8,
                sync="fixed", inner_steps=10, correction="averaged", outer="nesterov", overlap=True,
                message_dtype="model", eager="once",
            )  # fmt: skip
            rows.append(b8.experiment_row(case, history, label, variant=label))
    b8.write_experiment(args, rows)


if __name__ == "__main__":
    main()
