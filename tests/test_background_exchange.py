"""Background exchanges (Gated DANE's ``overlap``): deferred ledger records, inline and threaded runs, errors."""

from __future__ import annotations

import threading

import pytest
import torch

from lit_commeff.ledger import CommLedger, DeferredLedger, Direction
from lit_commeff.transport import SimulatorTransport
from lit_commeff.transport.background import InlineExchange, ThreadedExchange


def _transport() -> SimulatorTransport:
    return SimulatorTransport(num_workers=3, dim=4, dtype=torch.float32)


def _exchange(t: SimulatorTransport) -> torch.Tensor:
    """A gather of one float32 row per worker and a broadcast of their mean: 16 B up per worker, 16 B down."""
    rows = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    gathered = t.gather(rows, tag="sync")
    (mean,) = t.broadcast(gathered.mean(dim=0), tag="anchor")
    return mean


def test_deferred_ledger_books_its_records_in_order_into_the_open_round():
    deferred = DeferredLedger()
    deferred.record(Direction.UPLINK, nbytes=16, sender=[1, 2], tag="sync")
    with deferred.measure(Direction.DOWNLINK, nbytes=8, tag="anchor"):
        pass
    assert len(deferred) == 2 and bool(deferred)
    ledger = CommLedger(dim=4, num_workers=3)
    ledger.begin_round()
    assert deferred.replay(ledger) == 2 and len(deferred) == 0
    assert ledger.uplink_bytes == 32 and ledger.downlink_bytes == 16 and ledger.cc2 == 2
    assert DeferredLedger().replay(ledger) == 0
    assert bool(DeferredLedger())  # an empty one is still a ledger (`ledger or CommLedger(...)` keeps it)


@pytest.mark.parametrize("cls", [InlineExchange, ThreadedExchange])
def test_an_exchange_books_nothing_until_its_result_is_taken(cls):
    t = _transport()
    ledger = t.ledger
    exchange = cls(t) if cls is InlineExchange else cls(_transport())
    exchange.launch(_exchange)
    assert exchange.in_flight and ledger.uplink_bytes == 0
    with pytest.raises(RuntimeError, match="launch\\(\\) while one is in flight; join\\(\\) it first"):
        exchange.launch(_exchange)
    ledger.begin_round()
    result = exchange.join(ledger)
    assert torch.equal(result, torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert not exchange.in_flight and exchange.seconds >= 0 and exchange.waited >= 0
    assert ledger.uplink_bytes == 2 * 16 and ledger.downlink_bytes == 2 * 16  # the two workers, each way
    assert t.ledger is ledger  # the inline run's swap of the transport's ledger is undone
    with pytest.raises(RuntimeError, match="join\\(\\) without a launched exchange"):
        exchange.join(ledger)


def test_a_threaded_exchange_runs_while_the_caller_goes_on_and_reraises_its_error():
    gate = threading.Event()

    def waits(_: SimulatorTransport) -> str:
        assert gate.wait(10)
        return "done"

    exchange = ThreadedExchange(_transport())
    exchange.launch(waits)
    assert exchange.in_flight  # the caller is here while the work waits
    gate.set()
    ledger = CommLedger(dim=4, num_workers=3)
    ledger.begin_round()
    assert exchange.join(ledger) == "done"

    def fails(_: SimulatorTransport) -> None:
        raise ValueError("peer gone")

    exchange.launch(fails)
    with pytest.raises(ValueError, match="peer gone"):
        exchange.join(ledger)
    assert not exchange.in_flight


def test_close_waits_for_the_work_and_says_whether_it_completed():
    exchange = ThreadedExchange(_transport())
    exchange.launch(_exchange)
    assert exchange.close(timeout=10) and not exchange.in_flight
    assert len(exchange.records) == 2  # kept for the caller to book
    stuck = threading.Event()
    exchange.launch(lambda _: stuck.wait(10))
    assert not exchange.close(timeout=0.01)  # left to finish on its own; a late record lands elsewhere
    stuck.set()
    assert len(exchange.records) == 0


class _Clock:
    """A clock the test moves by hand: every time the exchange reads is a known value."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_blocking_exchange_has_nothing_for_a_pause_to_hide():
    clock = _Clock()
    exchange = InlineExchange(_transport())
    exchange.clock = clock

    def work(t: SimulatorTransport) -> torch.Tensor:
        clock.now += 2.0  # the exchange blocks training for 2 s
        return _exchange(t)

    exchange.launch(work)
    clock.now += 1.0
    exchange.pause()
    clock.now += 3.0  # a validation pass
    exchange.resume()
    ledger = CommLedger(dim=4, num_workers=3)
    ledger.begin_round()
    exchange.join(ledger)
    assert (exchange.seconds, exchange.waited, exchange.hidden) == (2.0, 0.0, 0.0)


def test_the_waits_of_every_join_add_up():
    main = threading.current_thread()

    class JoinClock(_Clock):
        """Tells the work when the training thread reads the time after launching: the join has started."""

        def __init__(self) -> None:
            super().__init__()
            self.joining = threading.Event()
            self.armed = False

        def __call__(self) -> float:
            now = self.now  # read before the work may move it
            if self.armed and threading.current_thread() is main:
                self.joining.set()
            return now

    clock = JoinClock()
    exchange = ThreadedExchange(_transport())
    exchange.clock = clock
    ledger = CommLedger(dim=4, num_workers=3)
    for wait in (1.5, 0.0, 2.5):
        done = threading.Event()
        clock.joining.clear()

        def work(_: SimulatorTransport, wait: float = wait, done: threading.Event = done) -> None:
            if wait:  # ends `wait` s (fake) after the join started waiting for it
                assert clock.joining.wait(10)
                clock.now += wait
            done.set()

        clock.armed = False
        exchange.launch(work)
        if not wait:
            assert done.wait(10)  # ended before the join: nothing to wait for
        clock.armed = True
        ledger.begin_round()
        exchange.join(ledger)
        assert exchange.waited == pytest.approx(wait)
    assert exchange.waited_total == pytest.approx(4.0)


@pytest.mark.parametrize("finish", ["in the pause", "after the pause"])
def test_join_counts_what_of_a_background_exchange_a_pause_hid(finish):
    """Launch at 0, 1 s of training, a 1 s pause, 1 s of training, join at 3.

    In the pause: the exchange ends at 3 having run 3 s against 2 s of training, so the join would have waited 1 s
    had training not paused; it waited 0. After the pause: it ends at 4 and the join waits 1 s of its 2 s.
    Either way the pause hid 1 s. A pause with nothing in flight changes nothing.
    """
    clock, started, release = _Clock(), threading.Event(), threading.Event()
    exchange = ThreadedExchange(_transport())
    exchange.clock = clock

    def work(_: SimulatorTransport) -> str:
        started.set()
        assert release.wait(10)
        return "done"

    exchange.pause()  # nothing in flight: not counted
    clock.now += 5.0
    exchange.resume()
    clock.now = 0.0
    exchange.launch(work)
    assert started.wait(10)  # the work has read its start time: 0
    clock.now = 1.0
    exchange.pause()
    clock.now = 2.0
    exchange.resume()
    clock.now = 3.0
    if finish == "in the pause":
        release.set()  # the work reads its end time (3) whether or not the join has started
    else:

        def later() -> None:
            clock.now = 4.0  # the join reads its start (3 or 4) before or after this; the wait makes up the rest
            release.set()

        threading.Timer(0.05, later).start()
    ledger = CommLedger(dim=4, num_workers=3)
    ledger.begin_round()
    assert exchange.join(ledger) == "done"
    assert exchange.hidden == pytest.approx(1.0) and exchange.hidden_total == pytest.approx(1.0)
    assert exchange.waited_total == exchange.waited  # one join: the total is its wait
    assert exchange.seconds == pytest.approx(3.0 if finish == "in the pause" else 4.0)
