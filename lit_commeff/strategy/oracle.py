"""The Lightning oracle: gradients of the current minibatch at any point, and the hub's optimizer steps.

The algorithms in :mod:`lit_commeff.algorithms` ask a :class:`~lit_commeff.algorithms.LocalOracle` for
gradients at points of their choosing. In a Lightning step the gradient comes from the loop's closure
(``training_step`` + backward on this rank's batch, under the precision plugin's autocast). This oracle
loads the requested point into the model, runs the closure and reads the flat gradient. The first
evaluation of a step is the loop's own (its loss is what Lightning reports); further evaluations on
the same batch — the hub's prox steps and its gradient at the new point — run the same closure with
``self.log`` silenced, so logged training metrics are those of the first evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
from torch import Tensor
from torch.optim import Optimizer

from lit_commeff.strategy import lightning_api
from lit_commeff.strategy.flat import FlatParams
from lit_commeff.strategy.numeric import NonFiniteGuard


class LightningOracle:
    """Local gradients from Lightning's closure; the hub's prox and descent through the user's optimizer.

    Args:
        module: The LightningModule.
        flat: Its trainable parameters as a flat vector.
        optimizer: The optimizer from ``configure_optimizers`` (its raw torch optimizer). The hub uses it
            for the prox subproblem (``inner_steps`` steps) and for gradient steps of the compressed
            family; its learning rate, momentum and LR schedule apply there.
        inner_steps: S, optimizer steps per prox solve.
        guard: Where a non-finite gradient is reported (``None``: no checks).
    """

    def __init__(
        self,
        *,
        module: pl.LightningModule,
        flat: FlatParams,
        optimizer: Optimizer,
        inner_steps: int,
        guard: NonFiniteGuard | None = None,
    ) -> None:
        self.module = module
        self.guard = guard
        self.flat = flat
        self.optimizer = optimizer
        self.inner_steps = inner_steps
        self._closure: Callable[[], Any] | None = None
        self._first: Callable[[], Any] | None = None
        self._clip: Callable[[], None] | None = None
        self.evaluations = 0
        self.first_loss: Any = None

    def bind(self, closure: Callable[[], Any], first: Callable[[], Any], clip: Callable[[], None]) -> None:
        """Use this step's closure.

        Args:
            closure: Lightning's closure (training_step, zero_grad, backward).
            first: The closure as the precision plugin wraps it for the step's first evaluation (runs
                the ``on_before_optimizer_step`` hooks and gradient clipping after it).
            clip: Applies the Trainer's gradient clipping (after later evaluations).
        """
        self._closure, self._first, self._clip = closure, first, clip
        self.evaluations = 0
        self.first_loss = None

    def release(self) -> None:
        """Forget the step's closure."""
        self._closure = self._first = self._clip = None

    def evaluate(self) -> None:
        """Run the step's closure at the parameters the model holds now (gradients land in ``.grad``)."""
        closure, first, clip = self._closure, self._first, self._clip
        if closure is None or first is None or clip is None:  # bind() sets all three
            raise RuntimeError(
                "LightningOracle: no closure bound; gradients are only available inside a training step."
            )
        if self.evaluations == 0:
            self.first_loss = first()  # the loop's own evaluation (logging, hooks, reported loss)
        else:
            # Lightning reports the first evaluation's loss and logged values; later ones stay silent
            with lightning_api.preserved_closure_result(closure), lightning_api.silenced_logging(self.module):
                closure()
            clip()
        self.evaluations += 1

    def gradient(self, x: Tensor) -> Tensor:
        """∇f(x) on this rank's current batch (a new flat tensor)."""
        self.flat.set(x)
        self.evaluate()
        g = self.flat.grad()
        if self.guard is not None:
            self.guard.check(g, "gradient")
        return g

    # ------------------------------------------------------------------------------- LocalOracle
    def grads(self, x: Tensor) -> Tensor:
        """``(1, d)``: this rank's gradient at ``x`` (``(d,)`` or ``(1, d)``)."""
        return self.gradient(x.reshape(-1)).unsqueeze(0)

    def hub_grad(self, x: Tensor) -> Tensor:
        """The hub's own gradient at ``x`` on its current batch."""
        return self.gradient(x)

    def prox(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        """S optimizer steps on ``<t, x − x_k> + ||x − x_k||²/(2θ) + f_1(x)`` from ``x_k`` (hub's batch)."""
        return self.prox_from(x_k, x_k, t, theta)

    def prox_from(self, start: Tensor, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        """S more optimizer steps on the subproblem of :meth:`prox`, from ``start`` (OLGA's local steps)."""
        self.flat.set(start)
        for _ in range(self.inner_steps):
            self.evaluate()
            x = self.flat.get()
            g = self.flat.grad()
            if self.guard is not None:
                self.guard.check(g, "gradient (hub prox step)")
            self.flat.set_grad(g.add_(t).add_((x - x_k) / theta))
            self.optimizer.step()
        return self.flat.get()

    def descend(self, x: Tensor, g: Tensor, lr: float) -> Tensor:
        """One step of the user's optimizer from ``x`` along ``g`` (``lr`` is the optimizer's, not this one)."""
        self.flat.set(x)
        self.flat.set_grad(g)
        self.optimizer.step()
        return self.flat.get()
