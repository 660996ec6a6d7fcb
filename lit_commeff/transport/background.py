"""Exchanges that run one step's collectives while the training thread goes on (Gated DANE's ``overlap``).

An algorithm hands :meth:`Exchange.launch` a function of a transport; :meth:`Exchange.join` returns its result
later. The function must not touch the algorithm's state (it reads the inputs it was given and returns new
values), so what runs in the background and what the training thread does in the meantime never race; the
algorithm applies the result when it joins. :class:`InlineExchange` runs the function at once (the simulator,
and every test that compares it with a cluster); :class:`ThreadedExchange` runs it in a thread, over a process
group of its own, so its collectives never interleave with those of the training thread (the guard's
agreement, Lightning's own broadcasts). Both record the collectives' bytes into a
:class:`~lit_commeff.ledger.DeferredLedger` and book them into the run's ledger at :meth:`Exchange.join`, so
the two runs record the same transfers in the same rounds.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from lit_commeff.ledger import DeferredLedger
from lit_commeff.transport.base import Transport

Work = Callable[[Transport], Any]


class Exchange(ABC):
    """One background exchange at a time: :meth:`launch`, then :meth:`join` before the next launch.

    Attributes:
        seconds: Wall-clock of the last joined exchange's work, from its start to its end (its collectives'
            waits included): what the link and the other ranks cost, hidden or not.
        waited: Seconds the last :meth:`join` blocked the training thread: the part that was not hidden.
        hidden: Seconds the last :meth:`join` would have blocked had training not paused (:meth:`pause`) while
            the exchange ran: the part of it that a pause hid, not the training steps.
        hidden_total: :attr:`hidden` summed over every join.
        waited_total: :attr:`waited` summed over every join: what the exchanges cost the training thread in all.
    """

    seconds: float = 0.0
    waited: float = 0.0
    hidden: float = 0.0
    hidden_total: float = 0.0
    waited_total: float = 0.0
    #: The clock of every time above (a test may set a fake one on an instance).
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.records = DeferredLedger()
        self._launched_at: float | None = None
        self._paused_at: float | None = None
        self._paused = 0.0

    @property
    @abstractmethod
    def in_flight(self) -> bool:
        """Whether an exchange was launched and not joined yet."""

    def launch(self, work: Work) -> None:
        """Start ``work(transport)``; every rank launches the same exchanges in the same order."""
        if self.in_flight:
            raise RuntimeError("exchange: launch() while one is in flight; join() it first.")
        self._launched_at, self._paused_at, self._paused = self.clock(), None, 0.0
        self._start(work)

    @abstractmethod
    def _start(self, work: Work) -> None:
        """Run ``work(transport)`` now or in the background."""

    def pause(self) -> None:
        """Training pauses (a validation pass): until :meth:`resume` its time is not training time.

        The exchange in flight runs on meanwhile; :meth:`join` counts what of it the pause hid (:attr:`hidden`).
        """
        if self.in_flight and self._paused_at is None:
            self._paused_at = self.clock()

    @property
    def paused(self) -> float:
        """Seconds training paused while the exchange in flight (or the last joined one) ran."""
        return self._paused

    def resume(self) -> None:
        """Training goes on after :meth:`pause`."""
        if self._paused_at is not None:
            self._paused += self.clock() - self._paused_at
            self._paused_at = None

    @abstractmethod
    def _wait(self) -> Any:
        """The launched work's result (re-raising its error)."""

    def join(self, ledger: Any) -> Any:
        """Wait for the launched exchange, book its records into ``ledger``'s open round, return its result."""
        if not self.in_flight:
            raise RuntimeError("exchange: join() without a launched exchange; launch() first.")
        self.resume()
        started = self.clock()
        result = self._wait()
        self.waited = self.clock() - started
        self.waited_total += self.waited
        # Had training not paused, its clock would have reached this join `trained` s after the launch, and the join
        # would have waited for the rest of the exchange's `seconds`: what exceeds the real wait is what a pause hid.
        trained = started - (self._launched_at if self._launched_at is not None else started) - self._paused
        self.hidden = max(0.0, max(0.0, self.seconds - trained) - self.waited)
        self.hidden_total += self.hidden
        self._launched_at = None
        self.records.replay(ledger)
        return result

    def close(self, *, timeout: float | None = None) -> bool:
        """Drop a launched exchange's result (end of training), waiting up to ``timeout`` s for its collectives.

        Returns whether it completed: its records are then in :attr:`records`, for the caller to book.
        """
        return True


class InlineExchange(Exchange):
    """Runs the work at :meth:`launch`, on the algorithm's own transport (its records deferred to :meth:`join`).

    Args:
        transport: The algorithm's transport; its ledger is swapped for the deferred one while the work runs.
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self._result: Any = None
        self._pending = False

    @property
    def in_flight(self) -> bool:
        return self._pending

    def _start(self, work: Work) -> None:
        ledger, self.transport.ledger = self.transport.ledger, self.records  # type: ignore[assignment]
        started = self.clock()
        try:
            self._result = work(self.transport)
        finally:
            self.transport.ledger = ledger
        self.seconds = self.clock() - started
        self._pending = True

    def _wait(self) -> Any:
        result, self._result, self._pending = self._result, None, False
        return result

    def close(self, *, timeout: float | None = None) -> bool:
        self._result, self._pending = None, False
        return True


class ThreadedExchange(Exchange):
    """Runs the work in a daemon thread, over ``transport`` (a process group of its own, a deferred ledger).

    gloo and NCCL run collectives of different process groups concurrently, each group's in its own order; the
    training thread's collectives stay on the default group. A collective waits with the GIL released, so the
    training thread's local steps go on while the link carries the exchange.

    Args:
        transport: A transport over a process group that only this exchange uses, recording into
            :attr:`records` (its ``ledger``).
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        transport.ledger = self.records  # type: ignore[assignment]
        self._thread: threading.Thread | None = None
        self._outcome: tuple[bool, Any] | None = None

    @property
    def in_flight(self) -> bool:
        return self._thread is not None

    def _start(self, work: Work) -> None:
        self._outcome = None

        def run() -> None:
            started = self.clock()
            try:
                self._outcome = (True, work(self.transport))
            except BaseException as error:  # re-raised on the training thread at join()
                self._outcome = (False, error)
            self.seconds = self.clock() - started

        self._thread = threading.Thread(target=run, name="lit-commeff-exchange", daemon=True)
        self._thread.start()

    def _wait(self) -> Any:
        thread, self._thread = self._thread, None
        assert thread is not None
        thread.join()
        outcome, self._outcome = self._outcome, None
        assert outcome is not None
        ok, value = outcome
        if not ok:
            raise value
        return value

    def close(self, *, timeout: float | None = None) -> bool:
        # Every rank launched the last exchange, so at the end of training it completes: wait for it (the process
        # group must outlive its collectives). One whose peers have stopped would wait for the collective
        # timeout: after ``timeout`` s it is left to the process's exit, a daemon thread.
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        done = thread is None or not thread.is_alive()
        self._outcome = None
        if not done:  # a late record must not land among the next run's
            self.records = DeferredLedger()
            self.transport.ledger = self.records  # type: ignore[assignment]
        return done


__all__ = ["Exchange", "InlineExchange", "ThreadedExchange"]
