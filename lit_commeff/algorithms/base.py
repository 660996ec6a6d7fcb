"""Round-by-round algorithm state machines and the oracle they query for local gradients."""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

# Re-exported: the methods check their compressors and constants with the options module's checks.
from lit_commeff._state import need
from lit_commeff.options import check_positive, require_biased, require_unbiased  # noqa: F401
from lit_commeff.transport import Transport

log = logging.getLogger(__name__)


@runtime_checkable
class LocalOracle(Protocol):
    """What an algorithm may ask of the data its process holds.

    ``grads`` evaluates this process's block of workers; ``hub_grad`` and ``prox`` are only called on
    the hub's process.
    """

    def grads(self, x: Tensor) -> Tensor:
        """Local gradients ``(R, d)`` at a shared point ``(d,)`` or per-row points ``(R, d)``; a new tensor."""
        ...

    def hub_grad(self, x: Tensor) -> Tensor:
        """The hub's own gradient ∇f_1(x)."""
        ...

    def prox(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        """``argmin_x <t, x - x_k> + ||x - x_k||^2 / (2 theta) + f_1(x)``."""
        ...


def descend(oracle: LocalOracle, x: Tensor, g: Tensor, lr: float) -> Tensor:
    """The hub's gradient step from ``x`` along the aggregated gradient ``g``.

    ``x - lr * g`` unless the oracle defines ``descend(x, g, lr)`` (the Lightning strategy's oracle
    applies the user's optimizer there, with its own learning rate, momentum and schedule).
    """
    custom = getattr(oracle, "descend", None)
    return custom(x, g, lr) if custom is not None else x - lr * g


class ProblemOracle:
    """Adapts a :class:`lit_commeff.problems.Problem` to :class:`LocalOracle` for a block of workers.

    Args:
        problem: The problem (its shards are the workers' data).
        workers: Global ids of this process's block.
        hub: Id of the hub worker.
        prox: Prox solver ``(x_k, t, theta) -> x``; default the problem's own (exact for ridge,
            Newton for logistic). See :mod:`lit_commeff.algorithms.prox` for Newton-by-autograd and
            optimizer-step solvers.
    """

    def __init__(
        self, problem: Any, workers: Tensor, hub: int = 0, prox: Callable[[Tensor, Tensor, float], Tensor] | None = None
    ) -> None:
        self.problem = problem
        self.workers = workers.to(problem.device) if hasattr(problem, "device") else workers
        self.hub = hub
        self._hub_index = torch.tensor([hub], device=self.workers.device)
        self._prox = prox

    def grads(self, x: Tensor) -> Tensor:
        return self.problem.worker_grads(x, self.workers)

    def grads_slice(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Gradients ``(stop − start, d)`` at ``x`` of this process's workers ``start:stop`` (positions in ``workers``).

        Lets a method walk the workers in slices (OLGA's ``worker_slices``) without an ``(M, d)`` block.
        """
        return self.problem.worker_grads(x, self.workers[start:stop])

    def hub_grad(self, x: Tensor) -> Tensor:
        return self.problem.worker_grads(x, self._hub_index)[0]

    def prox(self, x_k: Tensor, t: Tensor, theta: float) -> Tensor:
        if self._prox is not None:
            return self._prox(x_k, t, theta)
        return self.problem.hub_prox(x_k, t, theta, worker=self.hub)


_T = TypeVar("_T")


class Algorithm(ABC):
    """A distributed method that advances one communication round per :meth:`step`.

    Subclasses keep all their state in attributes named in ``_state`` (tensors, numbers, ``None``),
    which :meth:`state_dict` saves and :meth:`load_state_dict` restores, so a run resumes exactly
    mid-epoch. Hub-only state exists only on the hub's process. What compressed messages leave behind
    (error-feedback residuals, shifts, shared estimates) lives in :mod:`~lit_commeff.algorithms.memory`
    components, held in the attributes named in ``_memory`` (``None`` where an option is off) and saved
    as a nested dict under each name.

    Args:
        transport: How messages travel (simulator or ``torch.distributed``).
        oracle: Local gradients (and, on the hub, its prox solver).
        x0: Starting point (every process passes the same one).
        seed: Seed of the algorithm's own randomness (epoch lengths, compressor draws).
    """

    name: ClassVar[str] = "algorithm"
    _state: ClassVar[tuple[str, ...]] = ()
    _memory: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *, transport: Transport, oracle: LocalOracle, x0: Tensor, seed: int = 0) -> None:
        if transport.num_workers < 2:
            raise ValueError(
                f"workers: M={transport.num_workers} is too small; a hub and at least one worker are needed (M >= 2)."
            )
        self.transport = transport
        self.oracle = oracle
        self.seed = int(seed)
        self.round = 0
        self.dim = x0.numel()

    def step(self) -> None:
        """Run one communication round."""
        ledger = getattr(self.transport, "ledger", None)
        if ledger is None or not log.isEnabledFor(logging.DEBUG):
            self._step()
            self.round += 1
            return
        kind, up, down = self.round_kind(), ledger.uplink_bytes, ledger.downlink_bytes
        log.debug("%s: round %d begins (%s)", self.name, self.round, kind)
        self._step()
        self.round += 1
        log.debug(
            "%s: round %d ends (%s): uplink %d B, downlink %d B",
            self.name,
            self.round - 1,
            kind,
            ledger.uplink_bytes - up,
            ledger.downlink_bytes - down,
        )

    def round_kind(self) -> str:
        """What the next :meth:`step` does, for logs: ``"communicating"`` or ``"local"`` (or the method's phase)."""
        return "communicating" if self.communicates() else "local"

    @abstractmethod
    def _step(self) -> None: ...

    def _need(self, value: _T | None, name: str) -> _T:
        """``value``, state this round needs (hub-only, set by an earlier round, or kept under an option).

        Raises:
            RuntimeError: It is ``None`` here: read off the hub, before the round that sets it, or with the option off.
        """
        return need(
            value,
            f"state {name!r}",
            owner=self.name,
            hint=f"round {self.round}, phase {getattr(self, 'phase', '-')!r}, "
            f"{'hub' if self.transport.is_hub else 'worker process'}",
        )

    def communicates(self) -> bool:
        """Whether the next :meth:`step` uses the transport.

        ``False`` marks a local step, in which no process communicates. Every process gets the same answer,
        since the schedule is shared.
        """
        return True

    def skip_local_step(self) -> None:
        """Count a local step whose work was dropped (only methods with local steps have them)."""
        raise RuntimeError(f"{self.name}: has no local steps; communicates() is always True.")

    @abstractmethod
    def output(self) -> Tensor:
        """The method's output iterate (hub's process)."""

    def hyperparameters(self) -> dict[str, float]:
        """Resolved step sizes and probabilities, for logs."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Algorithm state (tensors and plain numbers) for checkpoints."""
        state = self.state_refs()
        for name in self._memory:
            if state[name] is not None:
                state[name] = {k: v.clone() if isinstance(v, Tensor) else v for k, v in state[name].items()}
        return {k: v.clone() if isinstance(v, Tensor) else v for k, v in state.items()}

    def state_refs(self) -> dict[str, Any]:
        """:meth:`state_dict` without copying the tensors: a cheap undo point for one step.

        Valid because a step never changes a state tensor in place: it binds new tensors to the state's
        names (``tests/test_algorithms.py`` checks this contract for every algorithm), and so do its
        memories. The compressor's state is copied.
        """
        state = {name: getattr(self, name) for name in ("round", *self._state)}
        for name in self._memory:
            memory = getattr(self, name)
            state[name] = None if memory is None else memory.state_dict()
        compressor = getattr(self, "compressor", None)
        if compressor is not None:  # e.g. PowerSGD's warm start
            state["compressor"] = copy.deepcopy(compressor.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        missing = {"round", *self._state, *self._memory} - set(state)
        if missing:
            raise ValueError(
                f"{self.name}: checkpoint lacks state {sorted(missing)}; it was written by another method."
            )
        for name in self._memory:
            if (getattr(self, name) is None) != (state[name] is None):
                saved = state[name] is not None
                raise ValueError(
                    f"{name}: the checkpoint {'holds' if saved else 'has no'} {name} state but this {self.name} "
                    f"run keeps {'none' if saved else 'one'}; resume with the options the checkpoint was written with."
                )
        for name in ("round", *self._state):
            value = state[name]
            setattr(self, name, value.clone() if isinstance(value, Tensor) else value)
        for name in self._memory:
            if state[name] is not None:
                getattr(self, name).load_state_dict(state[name])
        compressor = getattr(self, "compressor", None)
        if compressor is not None and "compressor" in state:
            compressor.load_state_dict(state["compressor"])
