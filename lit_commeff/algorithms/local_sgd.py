"""Local SGD and DiLoCo: H local gradient steps on every worker, then one all-reduce and an outer step.

Both are peer-to-peer methods: no worker plays the hub. Every process keeps the global iterate θ; its
workers take ``inner_steps`` (H) gradient steps from θ on their own data, then all workers all-reduce
(one dense round, :meth:`~lit_commeff.transport.Transport.all_reduce`) and every process takes the same
outer step, so θ stays the same everywhere. Each :meth:`~lit_commeff.algorithms.base.Algorithm.step` is
one local step; only the H-th communicates.

:func:`nesterov_outer_step` is DiLoCo's outer update, shared with the Lightning
:class:`~lit_commeff.strategy.diloco.DiLoCoStrategy`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import Algorithm, LocalOracle, check_positive
from lit_commeff.options import DiLoCoOptions
from lit_commeff.transport import Transport


def nesterov_outer_step(
    theta: Tensor, delta: Tensor, momentum_buffer: Tensor | None, *, lr: float, momentum: float
) -> tuple[Tensor, Tensor | None]:
    """DiLoCo's outer update: one step of SGD with Nesterov momentum on θ along the outer gradient Δ.

    ``b ← Δ`` on the first step, ``b ← μ b + Δ`` afterwards, then ``θ ← θ − lr (Δ + μ b)``; with
    ``momentum == 0``: ``θ ← θ − lr Δ`` and no buffer. Op for op the arithmetic of
    ``torch.optim.SGD(lr=lr, momentum=momentum, nesterov=momentum > 0)`` (no dampening, no weight decay),
    so the results agree with it bit for bit, but as new tensors: nothing is changed in place.

    Args:
        theta: The global parameters θ, ``(d,)``.
        delta: The averaged outer gradient Δ = mean over workers of (θ − θ_local), ``(d,)``.
        momentum_buffer: The buffer b of the previous steps, ``None`` before the first one.
        lr: Outer learning rate.
        momentum: Nesterov momentum μ in ``[0, 1)``.

    Returns:
        ``(new θ, new b)``; b is ``None`` when ``momentum == 0``.
    """
    if momentum == 0:
        return torch.add(theta, delta, alpha=-lr), None
    buffer = delta.clone() if momentum_buffer is None else momentum_buffer.mul(momentum).add(delta)
    return torch.add(theta, delta.add(buffer, alpha=momentum), alpha=-lr), buffer


class LocalSGD(Algorithm):
    """Local SGD: every worker takes H gradient steps from θ, then θ becomes the average of their iterates.

    One dense round per H steps: an all-reduce (mean) of the workers' local iterates, ``d`` values per
    worker, the hub included (tag ``"params"``). With ``inner_steps=1`` it is distributed gradient
    descent. With heterogeneous data the local iterates drift towards their own minimisers between
    averages, so for H > 1 with a constant step it converges to a point above the optimum (client drift).

    Args:
        transport: Message transport.
        oracle: Local gradients (each worker's full shard in the simulator).
        x0: Starting point θ_0.
        inner_steps: H ≥ 1, local gradient steps between two averages (default: DiLoCo's,
            :class:`~lit_commeff.options.DiLoCoOptions`, which checks it).
        L: Smoothness of f; the default local step is 1/L.
        lr: Explicit local step size (overrides 1/L).
        seed: Unused (deterministic method).
    """

    name: ClassVar[str] = "local_sgd"
    _state: ClassVar[tuple[str, ...]] = ("x", "local", "local_k")
    #: Ledger tag of the round's all-reduce.
    sync_tag: ClassVar[str] = "params"

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        inner_steps: int = DiLoCoOptions.inner_steps,
        L: float | None = None,
        lr: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        # local SGD is DiLoCo with plain averaging: its options object checks H
        DiLoCoOptions(inner_steps=inner_steps, outer_lr=1.0, outer_momentum=0.0)
        if lr is None:
            if L is None:
                raise ValueError(f"lr: {self.name} needs a local step size lr or the smoothness L (lr = 1/L).")
            lr = 1 / check_positive("L", L)
        self.inner_steps = inner_steps
        self.lr = check_positive("lr", lr)
        self.x = x0.detach().clone()
        #: The block's local iterates ``(R, d)`` inside a round; ``None`` at θ (after a sync).
        self.local: Tensor | None = None
        #: Local steps taken (or skipped) in the current round.
        self.local_k = 0

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.lr, "inner_steps": float(self.inner_steps)}

    def output(self) -> Tensor:
        return self.x

    def communicates(self) -> bool:
        return self.local_k + 1 == self.inner_steps

    def skip_local_step(self) -> None:
        if self.communicates():
            raise RuntimeError(f"{self.name}: skip_local_step() called on the step that syncs, not a local step.")
        self.local_k += 1

    def _step(self) -> None:
        start = self.x if self.local is None else self.local
        local = start - self.lr * self.oracle.grads(start)  # (R, d): each worker's own step
        if not self.communicates():
            self.local, self.local_k = local, self.local_k + 1
            return
        self.transport.begin_round()
        self.x = self._sync(local)
        self.local, self.local_k = None, 0

    def _sync(self, local: Tensor) -> Tensor:
        """The round's communication and outer update: the new θ from the block's local iterates."""
        return self.transport.all_reduce(local, op="mean", tag=self.sync_tag)


class DiLoCo(LocalSGD):
    """DiLoCo: local SGD with an outer Nesterov step on the averaged parameter change.

    Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models", 2023,
    arXiv:2311.08455. After H local steps the workers all-reduce (mean) the outer gradient
    ``Δ_m = θ − θ_m`` (tag ``"delta"``) and every process takes :func:`nesterov_outer_step` on θ. The
    paper's inner optimizer is AdamW; here it is plain gradient descent with step ``lr``, as for
    :class:`LocalSGD`. With ``outer_lr=1`` and ``outer_momentum=0`` it is local SGD.

    Args:
        transport: Message transport.
        oracle: Local gradients.
        x0: Starting point θ_0.
        options: :class:`~lit_commeff.options.DiLoCoOptions` (``inner_steps`` H, ``outer_lr``,
            ``outer_momentum``), shared with :class:`~lit_commeff.strategy.diloco.DiLoCoStrategy`; checked
            when built, and where the defaults live.
        L: Smoothness of f; the default local step is 1/L.
        lr: Explicit local step size (overrides 1/L).
        seed: Unused (deterministic method).
        **kwargs: Instead of ``options``: its fields.
    """

    name: ClassVar[str] = "diloco"
    _state: ClassVar[tuple[str, ...]] = (*LocalSGD._state, "momentum")
    sync_tag: ClassVar[str] = "delta"
    #: The options object of the method; its fields are this constructor's keyword options.
    options_cls: ClassVar[type[DiLoCoOptions]] = DiLoCoOptions

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        options: DiLoCoOptions | None = None,
        L: float | None = None,
        lr: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        options = self.options_cls.of(options, **kwargs)
        #: The options in force (checked when built).
        self.options = options
        super().__init__(
            transport=transport, oracle=oracle, x0=x0, inner_steps=options.inner_steps, L=L, lr=lr, seed=seed
        )
        self.outer_lr = float(options.outer_lr)
        self.outer_momentum = float(options.outer_momentum)
        #: The outer step's Nesterov buffer (``None`` before the first sync or without momentum).
        self.momentum: Tensor | None = None

    def hyperparameters(self) -> dict[str, float]:
        return {**super().hyperparameters(), "outer_lr": self.outer_lr, "outer_momentum": self.outer_momentum}

    def _sync(self, local: Tensor) -> Tensor:
        delta = self.transport.all_reduce(self.x - local, op="mean", tag=self.sync_tag)
        x, self.momentum = nesterov_outer_step(
            self.x, delta, self.momentum, lr=self.outer_lr, momentum=self.outer_momentum
        )
        return x


__all__ = ["DiLoCo", "LocalSGD", "nesterov_outer_step"]
