"""What a compressed method remembers between rounds: error-feedback residuals, shifts, shared estimates.

Every compressed method keeps some state that makes its messages small or unbiased: EF14-style residuals
(EF-OLGA), EF21 gradient estimates (EF21, OLGA's ``dense_compressor``), EF21-P estimates of the hub's
broadcast (OLGA's ``downlink_compressor``), DIANA shifts (DIANA, ADIANA) and LoCoDL's control variates.
Each lives here as one small :class:`Memory` with its update rule and its checkpoint form, modelled on
GRACE's ``Memory`` (Xu et al., ICDCS'21, "GRACE: A Compressed Communication Framework for Distributed
Machine Learning": ``compensate`` before compression, ``update`` after it).

Layout: ``rows`` is the ``(R, d)`` block of this process's workers (row r belongs to worker
``transport.workers[r]``); ``aggregate`` is what the hub keeps of all workers (``None`` on other
processes, and where the method keeps nothing there). An algorithm names its memories in
:attr:`~lit_commeff.algorithms.base.Algorithm._memory`; its ``state_dict`` nests each one's
:meth:`Memory.state_dict` under the attribute's name.

Contract (the non-finite guard's cheap undo point relies on it): an update binds new tensors and never
changes a held tensor in place, so :meth:`Memory.state_dict` may return the tensors themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, TypeVar

import torch
from torch import Tensor

from lit_commeff._state import need

_T = TypeVar("_T")


class Memory:
    """A named set of tensors a method carries from round to round, with its checkpoint form.

    Subclasses list their tensor attributes in ``_fields`` (each a tensor or ``None``).
    """

    _fields: ClassVar[tuple[str, ...]] = ()

    def _need(self, value: _T | None, name: str) -> _T:
        """``value``, a field this update needs: set by ``reset``, or held only on the hub."""
        return need(value, name, owner=type(self).__name__, hint="reset() sets it; aggregates exist on the hub only")

    def state_dict(self) -> dict[str, Tensor | None]:
        """The fields by reference, not copied (an update rebinds them; it never writes into them)."""
        return {name: getattr(self, name) for name in self._fields}

    def load_state_dict(self, state: Mapping[str, Tensor | None]) -> None:
        """Restore :meth:`state_dict` (copies the tensors)."""
        missing, unexpected = set(self._fields) - set(state), set(state) - set(self._fields)
        if missing or unexpected:
            raise ValueError(
                f"{type(self).__name__}: the state has fields {sorted(state)} but this memory holds "
                f"{list(self._fields)} (missing {sorted(missing)}, unexpected {sorted(unexpected)}); load a state "
                f"saved by {type(self).__name__}.state_dict()."
            )
        for name in self._fields:
            value = state[name]
            setattr(self, name, value.clone() if isinstance(value, Tensor) else value)

    def __repr__(self) -> str:
        shapes = {name: None if (v := getattr(self, name)) is None else tuple(v.shape) for name in self._fields}
        return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in shapes.items())})"


class ErrorFeedback(Memory):
    """EF14-style error feedback (Seide et al., 2014; GRACE's ``ResidualMemory``): the residual e of each worker.

    A worker compresses ``compensate(x) = e + x`` and keeps what the compressor dropped,
    ``update(compensated, decoded)``: ``e ← compensated − decoded``. ``aggregate`` is the hub's mean of the
    workers' residuals when a method gathers them (EF-OLGA's error round, ē).

    Args:
        rows: Starting residuals ``(R, d)`` (``None``: set by :meth:`reset` before the first message).
    """

    _fields: ClassVar[tuple[str, ...]] = ("rows", "aggregate")

    def __init__(self, rows: Tensor | None = None) -> None:
        self.rows = rows
        self.aggregate: Tensor | None = None

    def reset(self, like: Tensor) -> None:
        """Zero residuals shaped like ``like`` (``(R, d)``)."""
        self.rows = torch.zeros_like(like)

    def compensate(self, x: Tensor) -> Tensor:
        """What the workers compress: ``e + x``."""
        return self._need(self.rows, "rows") + x

    def update(self, compensated: Tensor, decoded: Tensor) -> None:
        """``e ← compensated − decoded``: the part of the message the compressor dropped."""
        self.rows = compensated - decoded


class ShiftedEstimate(Memory):
    """A per-worker estimate h of a vector the worker sends, moved by the compressed differences.

    A worker compresses ``compensate(g) = g − h`` and moves ``update(decoded)``: ``h ← h + α decoded``;
    the hub moves its ``aggregate`` the same way by what it received (:meth:`update_aggregate`). The
    estimate starts at zero, shaped like the first vector compensated, unless :meth:`reset` sets it.

    Args:
        alpha: The step α (``None``: 1, the message is added as it is).
        rows: Starting estimates ``(R, d)`` (``None``: zeros at the first :meth:`compensate`).
        aggregate: The hub's starting aggregate (``None`` off the hub).
    """

    _fields: ClassVar[tuple[str, ...]] = ("rows", "aggregate")

    def __init__(
        self, *, alpha: float | None = None, rows: Tensor | None = None, aggregate: Tensor | None = None
    ) -> None:
        self.alpha = alpha
        self.rows = rows
        self.aggregate = aggregate

    def reset(self, rows: Tensor, aggregate: Tensor | None = None) -> None:
        """Set the estimates outright (e.g. from a dense round)."""
        self.rows, self.aggregate = rows, aggregate

    def compensate(self, g: Tensor) -> Tensor:
        """What the workers compress: ``g − h``."""
        if self.rows is None:
            self.rows = torch.zeros_like(g)
        return g - self.rows

    def update(self, decoded: Tensor) -> None:
        """``h ← h + α decoded`` (this process's workers)."""
        self.rows = self._need(self.rows, "rows") + self._scaled(decoded)

    def update_aggregate(self, received: Tensor) -> None:
        """``aggregate ← aggregate + α received`` (the hub: what it received, or its mean)."""
        self.aggregate = self._need(self.aggregate, "aggregate") + self._scaled(received)

    def _scaled(self, x: Tensor) -> Tensor:
        return x if self.alpha is None else self.alpha * x


class EF21Estimate(ShiftedEstimate):
    """EF21 (Richtárik, Sokolov & Fatkhullin, NeurIPS'21): worker m's estimate g_m of its gradient.

    The message is ``C(∇f_m − g_m)`` with a contractive compressor C, and both ends add it:
    ``g_m ← g_m + C(·)``. The hub's ``aggregate`` is whatever it keeps of the estimates: their mean
    (EF21) or every row (OLGA's ``dense_compressor``).

    Args:
        rows: Starting estimates ``(R, d)`` (``None``: zeros, or a dense round's gradients via :meth:`reset`).
        aggregate: The hub's starting aggregate (``None`` off the hub).
    """

    def __init__(self, *, rows: Tensor | None = None, aggregate: Tensor | None = None) -> None:
        super().__init__(alpha=None, rows=rows, aggregate=aggregate)


class DianaShift(ShiftedEstimate):
    """DIANA (Mishchenko et al., 2019): worker m's shift h_m, learned at rate α.

    The message is ``Q(∇f_m − h_m)`` with an unbiased compressor Q; the worker moves
    ``h_m ← h_m + α Q(·)`` and the hub its mean shift ``h̄ ← h̄ + α mean Q(·)``.

    Args:
        alpha: The shift's step α in (0, 1].
        aggregate: The hub's starting mean shift (zeros; ``None`` off the hub).
    """

    def __init__(self, *, alpha: float, aggregate: Tensor | None = None) -> None:
        super().__init__(alpha=alpha, aggregate=aggregate)


class EF21PDownlink(Memory):
    """EF21-P (Gruntkowska, Tyurin & Richtárik, ICML'23): every process's estimate of what the hub broadcasts.

    Every process holds ``point`` (w, the estimate of the hub's point) and ``grad`` (v, the estimate of the
    hub's gradient ∇f_1(w)); the hub sends ``C(x − w)`` and ``C(∇f_1(w') − v)`` with a contractive
    compressor and everyone adds them (:meth:`apply`). ``exact_grad`` is the hub's exact ∇f_1(w) (``None``
    on other processes), against which it sends v's correction.

    Args:
        point: Starting point w (a copy is kept).
    """

    _fields: ClassVar[tuple[str, ...]] = ("point", "grad", "exact_grad")

    def __init__(self, point: Tensor) -> None:
        self.point = point.clone()
        self.grad = torch.zeros_like(point)
        self.exact_grad: Tensor | None = None

    def reset(self, point: Tensor, grad: Tensor, exact_grad: Tensor | None) -> None:
        """After a dense broadcast every process holds the hub's point and gradient exactly."""
        self.point, self.grad, self.exact_grad = point, grad, exact_grad

    def point_message(self, x: Tensor) -> Tensor:
        """The hub's point message ``x − w``."""
        return x - self.point

    def grad_message(self, exact_grad: Tensor) -> Tensor:
        """The hub's gradient message ``∇f_1(w') − v``; keeps ``exact_grad`` = ∇f_1(w')."""
        self.exact_grad = exact_grad
        return exact_grad - self.grad

    def apply(self, point_step: Tensor, grad_step: Tensor) -> None:
        """Every process: ``w ← w + C(x − w)``, ``v ← v + C(∇f_1(w') − v)``."""
        self.point, self.grad = self.point + point_step, self.grad + grad_step

    def hub_error(self) -> Tensor:
        """The hub's ``∇f_1(w) − v``: what v misses of the hub's exact gradient."""
        return self._need(self.exact_grad, "exact_grad") - self.grad


class ControlVariates(Memory):
    """LoCoDL's control variates (Condat, Maranjyan & Richtárik, ICLR'25): ``u_m`` per worker, ``v`` shared.

    After a round with the workers' messages ``d_m`` and the broadcast mean ``d̄``, every process moves
    ``u_m ← u_m + s (d̄ − d_m)`` and ``v ← v + s d̄`` (:meth:`update`, step s). ``rows`` are this
    process's ``u_m``; ``shared`` is v, which every process holds.

    Args:
        shared: Starting v (zeros, every process).
    """

    _fields: ClassVar[tuple[str, ...]] = ("rows", "shared")

    def __init__(self, shared: Tensor) -> None:
        self.rows: Tensor | None = None
        self.shared = shared

    def reset(self, like: Tensor) -> None:
        """Zero ``u_m`` shaped like ``like`` (``(R, d)``)."""
        self.rows = torch.zeros_like(like)

    def update(self, sent: Tensor, mean: Tensor, step: float) -> None:
        """``u_m ← u_m + step (d̄ − d_m)``, ``v ← v + step d̄``."""
        self.rows = self._need(self.rows, "rows") + step * (mean - sent)
        self.shared = self.shared + step * mean


__all__ = [
    "ControlVariates",
    "DianaShift",
    "EF21Estimate",
    "EF21PDownlink",
    "ErrorFeedback",
    "Memory",
    "ShiftedEstimate",
]
