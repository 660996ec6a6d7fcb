"""A ledger stand-in that keeps a collective's records for later, for collectives that run in the background."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lit_commeff.ledger.ledger import CommLedger


class DeferredLedger:
    """Holds :meth:`CommLedger.record` calls made off the training thread until :meth:`replay` books them.

    A background exchange (Gated DANE's ``overlap``) must not write into the run's ledger while the training
    thread may be writing into it too: the transport it uses records here instead, with the same arguments and
    the same measured wall time, and the training thread replays the records into the real ledger, in order,
    when it takes the exchange's result. The bytes are those handed to the collectives, as always; only the
    round they are booked in moves (to the round that consumes them).
    """

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._records)

    def __bool__(self) -> bool:  # a ledger, empty or not: `ledger or CommLedger(...)` must keep this one
        return True

    def record(self, direction: Any, **kwargs: Any) -> None:
        """Keep one :meth:`CommLedger.record` call."""
        self._records.append({"direction": direction, **kwargs})

    @contextmanager
    def measure(self, direction: Any, **kwargs: Any) -> Iterator[None]:
        """Time the enclosed collective and keep its record, as :meth:`CommLedger.measure` does."""
        start = time.perf_counter()
        yield
        self.record(direction, seconds=time.perf_counter() - start, **kwargs)

    def replay(self, ledger: CommLedger) -> int:
        """Book every kept record into ``ledger``'s open round, in order, and forget them; returns how many."""
        records, self._records = self._records, []
        for record in records:
            ledger.record(**record)
        return len(records)


__all__ = ["DeferredLedger"]
