"""Solvers for the hub's prox subproblem ``argmin_x <t, x − x_k> + ||x − x_k||²/(2θ) + f_1(x)``.

``ExactProx`` uses the problem's own solver (closed form for ridge, Newton for logistic);
``NewtonProx`` runs Newton's method on any smooth convex loss of modest dimension through autograd;
``OptimizerProx`` takes S steps of a torch optimizer, the neural-network setting where f_1 is only
available through minibatch gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lit_commeff.algorithms.base import check_positive

LossFn = Callable[[Tensor], Tensor]


class ExactProx:
    """The problem's own prox solver (``problem.hub_prox``)."""

    def __init__(self, problem: Any, worker: int = 0) -> None:
        self.problem = problem
        self.worker = worker

    def __call__(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        return self.problem.hub_prox(x_k, t, theta, worker=self.worker)


class NewtonProx:
    """Newton's method with backtracking on the prox objective, Hessians by autograd.

    For smooth convex losses of modest dimension (a d x d Hessian per iteration).

    Args:
        loss: The hub's loss f_1 as a function of the flat parameter vector.
        tol: Stop when the prox objective's gradient norm is below ``tol`` times its initial value.
        max_iter: Newton iterations at most.
    """

    def __init__(self, loss: LossFn, *, tol: float = 1e-12, max_iter: int = 50) -> None:
        self.loss = loss
        self.tol = check_positive("tol", tol)
        self.max_iter = int(check_positive("max_iter", max_iter))

    def __call__(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        def objective(x: Tensor) -> Tensor:
            return t @ (x - x_k) + (x - x_k).square().sum() / (2 * theta) + self.loss(x)

        x = x_k.detach().clone()
        g0 = None
        for _ in range(self.max_iter):
            grad = torch.func.grad(objective)(x)
            norm = float(torch.linalg.vector_norm(grad))
            g0 = norm if g0 is None else g0
            if norm <= self.tol * max(g0, 1e-300):
                break
            hess = torch.func.hessian(objective)(x)
            step = torch.linalg.solve(hess, grad)
            value, scale = float(objective(x)), 1.0
            while scale > 1e-10 and float(objective(x - scale * step)) > value - 1e-4 * scale * float(grad @ step):
                scale /= 2
            x = x - scale * step
        return x


class OptimizerProx:
    """S steps of a torch optimizer on the prox objective, started from ``x_k``.

    The setting of neural networks (ALGORITHMS.md): the gradient used is
    ``∇f_1(x) + t + (x − x_k)/θ`` with ``∇f_1`` from ``loss`` (e.g. the hub's current minibatch).

    Args:
        loss: The hub's loss f_1 as a function of the flat parameter vector.
        steps: Number of optimizer steps S.
        optimizer: Factory ``params -> torch.optim.Optimizer`` (default SGD with lr 0.1).
    """

    def __init__(
        self,
        loss: LossFn,
        *,
        steps: int = 1,
        optimizer: Callable[[list[Tensor]], torch.optim.Optimizer] | None = None,
    ) -> None:
        self.loss = loss
        self.steps = int(check_positive("steps", steps))
        self.optimizer = optimizer or (lambda params: torch.optim.SGD(params, lr=0.1))

    def __call__(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        x = x_k.detach().clone().requires_grad_(True)
        opt = self.optimizer([x])
        anchor, shift = x_k.detach(), t.detach()
        for _ in range(self.steps):
            opt.zero_grad()
            objective = shift @ x + (x - anchor).square().sum() / (2 * theta) + self.loss(x)
            objective.backward()
            opt.step()
        return x.detach()
