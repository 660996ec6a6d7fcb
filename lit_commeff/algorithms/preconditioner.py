"""Adam with a second moment shared by every rank and frozen within a round (after Mime).

Gated DANE's local steps follow ∇f_m(y) + c_m, where the corrections c_m = ĝ_r − ∇f_m(x_r) sum to zero over
the ranks. With SGD (momentum included) every step is linear in the gradients, so the averaged model change
holds the averaged gradient and the corrections cancel, as the method needs. Adam is not linear: each rank
divides its own corrected gradient by its own second moment, coordinate by coordinate, and the corrections
no longer cancel (session 10's B3 throughput runs, ``docs/gated-dane.md``).

Mime (Karimireddy et al., "Mime: Mimicking Centralized Stochastic Algorithms in Federated Learning", 2020,
arXiv:2008.03606) keeps the optimizer's statistics global: updated once per round from gradients at the
server's point, applied unchanged by every client's local steps. Here only Adam's normaliser needs that:

* v, the second moment, is shared: once per round, when ĝ arrives, ``v ← β2ⁿ·v + (1 − β2ⁿ)·s`` over the n
  local steps since the last update, where s is the mean over the ranks of their squared anchor gradients
  (one minibatch gradient each, noise included, as Adam's v sees them), which the hub sends with ĝ. Every
  rank holds the same v, bit for bit, and no local step changes it.
* m, the momentum, and the step count stay per rank and per step, as in Adam: momentum is linear in the
  gradients, so it keeps the cancellation.
* a step divides by ``max(v, u)``, bias-corrected, where u is the rank's own Adam second moment (its local
  gradients, per step): no step is larger than local Adam's, which bounds it where the shared v is small (a
  unit silent at the anchors, active later: with only ``(1 − β2)·g²`` of the current step as the floor, the
  momentum of earlier, larger gradients over a small current one took steps of many learning rates on the
  throughput GRU). Where v is the larger, the step is linear in g and the corrections cancel exactly.

AdamW's decoupled weight decay applies as in torch; Adam's L2 weight decay is added to the gradient (and to
the squares). The learning rate is read from the optimizer at every step (LR schedulers apply); the
optimizer's own state is not used. SGD needs none of this: with ``preconditioner="shared"`` it steps as the
user's optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor
from torch.optim import SGD, Adam, AdamW, Optimizer


def linear_steps(optimizer: Optimizer | None) -> bool:
    """Whether a local step is linear in the gradient: no optimizer (plain gradient steps) or SGD.

    SGD's momentum and weight decay keep it linear, so the ranks' corrections cancel in the averaged model
    change; Adam, AdamW, RMSprop, Adagrad and the like divide by a per-rank normaliser, and they do not.
    """
    return optimizer is None or isinstance(optimizer, SGD)


@dataclass(frozen=True)
class SharedAdamRule:
    """Adam's (or AdamW's) step with the second moment shared and frozen within a round.

    Args:
        betas: Adam's (β1, β2).
        eps: Adam's ε.
        weight_decay: L2 added to the gradient (Adam) or decoupled decay (AdamW).
        decoupled: AdamW's decoupled weight decay.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False

    @classmethod
    def of(cls, optimizer: Optimizer) -> SharedAdamRule | None:
        """The rule of ``optimizer``: torch's Adam or AdamW, or ``None`` for SGD (linear already).

        Raises:
            ValueError: Another optimizer, several parameter groups with different hyperparameters, or an
                option the shared state cannot follow (AMSGrad, ``maximize``).
        """
        name = type(optimizer).__name__
        if isinstance(optimizer, SGD):
            return None
        if not isinstance(optimizer, Adam | AdamW):
            raise ValueError(
                f"preconditioner: 'shared' follows torch.optim.Adam and AdamW (SGD needs nothing shared), not "
                f"{name}; use one of them in configure_optimizers, or preconditioner='local'."
            )
        groups = optimizer.param_groups
        keys = [k for k in groups[0] if k != "params"]
        if any(any(g.get(k) != groups[0].get(k) for k in keys) for g in groups[1:]):
            raise ValueError(
                f"preconditioner: 'shared' needs one set of hyperparameters, but the {len(groups)} parameter groups "
                f"of {name} differ; use one parameter group, or preconditioner='local'."
            )
        group = groups[0]
        for flag in ("amsgrad", "maximize"):
            if group.get(flag):
                raise ValueError(
                    f"preconditioner: 'shared' cannot follow {name}({flag}=True); turn {flag} off, or use "
                    "preconditioner='local'."
                )
        b1, b2 = group["betas"]
        return cls(
            betas=(float(b1), float(b2)),
            eps=float(group["eps"]),
            weight_decay=float(group.get("weight_decay", 0.0)),
            decoupled=isinstance(optimizer, AdamW) or bool(group.get("decoupled_weight_decay", False)),
        )

    @property
    def l2(self) -> float:
        """Adam's L2 weight decay (0 for AdamW's decoupled one)."""
        return 0.0 if self.decoupled else self.weight_decay

    def observe(self, v: Tensor | None, squares: Tensor, ghat: Tensor, at: Tensor, steps: int) -> Tensor:
        """The shared v after a round: ``squares``, the ranks' mean squared gradient at ``at`` (their mean ĝ).

        ``steps`` local steps were taken since the last update (v decays as over that many Adam steps). With L2
        weight decay the ranks' gradients are g_m + wd·at, so the mean of their squares is
        ``squares + 2·wd·at·ĝ + (wd·at)²``.
        """
        if self.l2:
            squares = squares + 2 * self.l2 * at * ghat + (self.l2 * at).square()
        keep = self.betas[1] ** max(steps, 1)
        return (1 - keep) * squares if v is None else keep * v + (1 - keep) * squares

    def step(
        self, y: Tensor, g: Tensor, *, lr: float, m: Tensor | None, u: Tensor | None, v: Tensor | None, t: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Local step number ``t`` ≥ 1 from ``y`` along ``g`` (rows: ranks of this process): ``(y', m', u')``.

        m and u are this rank's Adam moments (u: its own second moment, the floor); v the shared one.
        """
        b1, b2 = self.betas
        if self.l2:
            g = g + self.l2 * y
        m = (1 - b1) * g if m is None else b1 * m + (1 - b1) * g
        u = (1 - b2) * g.square() if u is None else b2 * u + (1 - b2) * g.square()
        second = u if v is None else v.maximum(u)
        denom = (second / (1 - b2**t)).sqrt() + self.eps
        if self.weight_decay and self.decoupled:
            y = y * (1 - lr * self.weight_decay)
        return y - (lr / (1 - b1**t)) * m / denom, m, u

    def describe(self) -> dict[str, Any]:
        """The rule's fields, for logs."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def optimizer_lr(optimizer: Optimizer) -> float:
    """The learning rate in force (LR schedulers write it into the parameter groups)."""
    lr = optimizer.param_groups[0]["lr"]
    value = float(lr.item() if isinstance(lr, Tensor) else lr)
    if not math.isfinite(value):
        raise ValueError(f"preconditioner: the optimizer's learning rate is {value}; use a finite learning rate.")
    return value


__all__ = ["SharedAdamRule", "linear_steps", "optimizer_lr"]
