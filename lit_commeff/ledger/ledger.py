"""The communication ledger: every transfer, counted in the bytes actually handed to a collective."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import torch

_STATE_VERSION = 1


def ring_wire_bytes(nbytes: int, num_workers: int) -> int:
    """Bytes one rank sends, and the same it receives, in a ring all-reduce of ``nbytes`` per rank.

    A ring all-reduce is a reduce-scatter then an all-gather, each of ``M - 1`` steps that move one
    ``1/M`` chunk per rank: ``2 (M - 1) / M * nbytes`` each way, rounded to the nearest byte (``0``
    for one rank, ``nbytes`` for two).

    Args:
        nbytes: Bytes each rank hands to the all-reduce.
        num_workers: Ranks in the ring, M.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"ring_wire_bytes: nbytes={nbytes!r} is invalid; byte counts are integers >= 0.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"ring_wire_bytes: num_workers={num_workers!r} is invalid; use an integer >= 1.")
    return (2 * (num_workers - 1) * nbytes + num_workers // 2) // num_workers


class Direction(str, Enum):
    """Which way a transfer goes in the star topology."""

    UPLINK = "uplink"  # worker -> hub (gather / reduce / point-to-point)
    DOWNLINK = "downlink"  # hub -> workers (broadcast / scatter)
    ALLREDUCE = "allreduce"  # every rank contributes the same tensor (peer-to-peer reduction)


@dataclass
class RoundStats:
    """What one communication round cost.

    Attributes:
        round_id: Consecutive id, starting at 0.
        uplink_messages: Worker->hub messages plus all-reduce contributions in the round.
        uplink_bytes: Bytes of those messages, summed over workers.
        max_worker_bytes: The most any single worker sent in the round (CC-3's numerator).
        downlink_bytes: Hub->worker bytes, summed over receiving workers.
        allreduce_bytes: All-reduce contributions, summed over workers (also inside ``uplink_bytes``).
        seconds: Wall time spent inside the round's collectives, as reported by the transport.
        cc3: ``max_worker_bytes`` in units of one dense d-vector.
    """

    round_id: int
    uplink_messages: int = 0
    uplink_bytes: int = 0
    max_worker_bytes: int = 0
    downlink_bytes: int = 0
    allreduce_bytes: int = 0
    seconds: float = 0.0
    cc3: float = 0.0


@dataclass
class _Open:
    stats: RoundStats
    per_worker: dict[int, int] = field(default_factory=dict)


class CommLedger:
    """Records every transfer of a run and derives the paper's communication measures.

    Terms (see ``ALGORITHMS.md``): **CC-1** counts rounds; **CC-2** counts worker->hub messages (an
    all-reduce contribution counts as one message per rank); **CC-3** sums, over rounds, the largest
    number of bytes any one worker sent in the round, in units of one dense d-vector
    (``dim * itemsize(dense_dtype)`` bytes): a dense round costs 1, a RandK round K/d.
    Downlink (hub->worker) bytes are free in the paper's model and always counted here, per receiving
    worker. **γ** is measured as dense-equivalent bytes over bytes actually sent.

    Two views of the same transfers:

    * **Handed bytes** (:attr:`uplink_bytes`, :attr:`downlink_bytes`, :attr:`allreduce_bytes` and the
      per-worker lists): the bytes of the tensors handed to each collective. CC-2, CC-3 and γ count
      these; an all-reduce books each rank's whole contribution as uplink and nothing as downlink.
    * **Wire bytes** (:meth:`wire_sent_bytes_per_rank`, :meth:`wire_received_bytes_per_rank`,
      :attr:`hub_egress_bytes`, :attr:`hub_ingress_bytes`): what each rank's link carries in each
      direction, derived from the handed bytes under a fixed model. A star transfer crosses one link
      end to end: a gather of ``n`` bytes per worker puts ``n`` on each sender's uplink and
      ``(M - 1) n`` on the hub's ingress; a broadcast of ``n`` bytes puts ``n`` on each receiver's
      downlink and ``n`` per receiver on the hub's egress (the hub sends one copy to each worker, as
      the transport's scatter does). An all-reduce of ``n`` bytes per rank is a **ring**: every rank,
      the hub included, sends and receives ``2 (M - 1) / M * n`` bytes (:func:`ring_wire_bytes`; a
      backend's tree or a broadcast's relay through workers may move bytes differently).

    Transports call :meth:`begin_round` once per round and :meth:`record` (or :meth:`measure`
    around the collective) for each transfer, with the bytes of the tensors they hand to it:
    ``Payload.nbytes`` or ``tensor.numel() * tensor.element_size()``.

    Args:
        dim: Dimension d of the optimisation variable (number of model parameters).
        num_workers: Number of workers M, hub included (ids ``0 .. M-1``).
        dense_dtype: Dtype of one dense message (float32 for DDP on float32 models).
        hub: Id of the hub worker.
    """

    def __init__(self, *, dim: int, num_workers: int, dense_dtype: torch.dtype = torch.float32, hub: int = 0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"ledger.dim: dim={dim!r} is invalid; the model dimension must be an integer >= 1.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"ledger.num_workers: num_workers={num_workers!r} is invalid; use an integer >= 1.")
        if not 0 <= hub < num_workers:
            raise ValueError(f"ledger.hub: hub={hub!r} is out of range; use an id in [0, {num_workers - 1}].")
        self.dim = dim
        self.num_workers = num_workers
        self.hub = hub
        self.dense_bytes = dim * torch.empty((), dtype=dense_dtype).element_size()
        self._reset()

    def _reset(self) -> None:
        self._rounds: list[RoundStats] = []
        self._open: _Open | None = None
        self._uplink = [0] * self.num_workers
        self._downlink = [0] * self.num_workers
        self._allreduce = [0] * self.num_workers
        self._messages = 0
        self._control = 0  # control-traffic bytes (up and down), inside the byte totals
        self._seconds = 0.0
        self._tags: dict[str, list[int]] = {}  # tag -> [messages, bytes] (uplink + all-reduce)
        self._cc3_closed = 0.0  # running sum over closed rounds: reading CC-3 stays O(1)

    # ------------------------------------------------------------------------------- recording
    def begin_round(self) -> int:
        """Close the current round (if any) and open the next; returns its id (CC-1 grows by one)."""
        self._close()
        self._open = _Open(RoundStats(round_id=len(self._rounds)))
        return self._open.stats.round_id

    def record(
        self,
        direction: Direction | str,
        *,
        nbytes: int | Sequence[int],
        sender: int | Sequence[int] | None = None,
        receivers: Sequence[int] | None = None,
        seconds: float = 0.0,
        tag: str = "",
        control: bool = False,
    ) -> None:
        """Record one collective's transfers in the open round.

        Args:
            direction: ``uplink``, ``downlink`` or ``allreduce``.
            nbytes: Bytes of the tensor(s) handed to the collective; one int, or one per sender.
            sender: Sending worker id(s) for uplink and all-reduce (one per ``nbytes`` entry).
                Downlink always comes from the hub.
            receivers: Downlink only: receiving worker ids; defaults to every worker but the hub.
                Each receiver is charged ``nbytes``.
            seconds: Wall time spent inside this collective (charged once, not per sender).
            tag: Free label (e.g. ``"dense"``, ``"compressed"``) for per-kind γ via :meth:`gamma`.
            control: Control traffic of the runtime (e.g. the non-finite guard's flag), not a message of
                the method: its bytes count in the byte totals (and :attr:`control_bytes`) but not in
                CC-2, CC-3 or γ's message count.

        Raises:
            RuntimeError: No round is open (call :meth:`begin_round` first).
            ValueError: An id is out of range, a byte count is negative, or lengths disagree.
        """
        if self._open is None:
            raise RuntimeError("ledger: no open round; call begin_round() before record().")
        direction = Direction(direction)
        if seconds < 0:
            raise ValueError(f"ledger.record: seconds={seconds!r} is negative; pass the measured wall time >= 0.")
        stats = self._open.stats
        # Validate everything before counting anything, so a bad call leaves the ledger unchanged.
        if direction is Direction.DOWNLINK:
            if not isinstance(nbytes, int):
                raise ValueError("ledger.record: a downlink (broadcast) has one size; pass nbytes as one int.")
            self._check_bytes(nbytes)
            targets = [w for w in range(self.num_workers) if w != self.hub] if receivers is None else list(receivers)
            for w in targets:
                self._check_worker(w, "receivers")
            for w in targets:
                self._downlink[w] += nbytes
            stats.downlink_bytes += nbytes * len(targets)
            if control:
                self._control += nbytes * len(targets)
        else:
            if sender is None:
                raise ValueError(f"ledger.record: a {direction.value} transfer needs sender=<worker id(s)>.")
            senders = [sender] if isinstance(sender, int) else list(sender)
            sizes = [nbytes] * len(senders) if isinstance(nbytes, int) else list(nbytes)
            if len(sizes) != len(senders):
                raise ValueError(
                    f"ledger.record: {len(senders)} senders but {len(sizes)} byte counts; pass one nbytes per sender."
                )
            for w, n in zip(senders, sizes, strict=True):
                self._check_worker(w, "sender")
                self._check_bytes(n)
            tag_totals = self._tags.setdefault(tag, [0, 0])
            if control:
                for w, n in zip(senders, sizes, strict=True):
                    self._uplink[w] += n
                stats.uplink_bytes += sum(sizes)
                tag_totals[1] += sum(sizes)
                self._control += sum(sizes)
                stats.seconds += seconds
                self._seconds += seconds
                return
            for w, n in zip(senders, sizes, strict=True):
                self._uplink[w] += n
                self._open.per_worker[w] = self._open.per_worker.get(w, 0) + n
                if direction is Direction.ALLREDUCE:
                    self._allreduce[w] += n
                    stats.allreduce_bytes += n
            stats.uplink_messages += len(senders)
            stats.uplink_bytes += sum(sizes)
            tag_totals[0] += len(senders)
            tag_totals[1] += sum(sizes)
            self._messages += len(senders)
        stats.seconds += seconds
        self._seconds += seconds

    @contextmanager
    def measure(
        self,
        direction: Direction | str,
        *,
        nbytes: int | Sequence[int],
        sender: int | Sequence[int] | None = None,
        receivers: Sequence[int] | None = None,
        tag: str = "",
        control: bool = False,
    ) -> Iterator[None]:
        """Time the enclosed collective and record it on success.

        The caller must make the collective complete inside the block (``work.wait()``; on CUDA a
        stream synchronisation) for the time to mean anything.
        """
        start = time.perf_counter()
        yield
        self.record(
            direction,
            nbytes=nbytes,
            sender=sender,
            receivers=receivers,
            seconds=time.perf_counter() - start,
            tag=tag,
            control=control,
        )

    def _close(self) -> None:
        if self._open is None:
            return
        stats = self._open.stats
        stats.max_worker_bytes = max(self._open.per_worker.values(), default=0)
        stats.cc3 = stats.max_worker_bytes / self.dense_bytes
        self._rounds.append(stats)
        self._cc3_closed += stats.cc3
        self._open = None

    def _check_worker(self, w: int, field_name: str) -> None:
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < self.num_workers:
            raise ValueError(
                f"ledger.record: {field_name}={w!r} is out of range; worker ids are integers in "
                f"[0, {self.num_workers - 1}]."
            )

    @staticmethod
    def _check_bytes(n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"ledger.record: nbytes={n!r} is invalid; byte counts are integers >= 0.")

    # ------------------------------------------------------------------------------- reading
    @property
    def rounds(self) -> list[RoundStats]:
        """Per-round figures, the open round included (its CC-3 as far as it has gone)."""
        out = list(self._rounds)
        if self._open is not None:
            current = RoundStats(**asdict(self._open.stats))
            current.max_worker_bytes = max(self._open.per_worker.values(), default=0)
            current.cc3 = current.max_worker_bytes / self.dense_bytes
            out.append(current)
        return out

    @property
    def cc1(self) -> int:
        """Communication rounds started."""
        return len(self._rounds) + (self._open is not None)

    @property
    def cc2(self) -> int:
        """Worker->hub messages (all-reduce contributions included)."""
        return self._messages

    @property
    def cc3(self) -> float:
        """Sum over rounds of the busiest worker's uplink bytes, in dense d-vector units."""
        current = 0 if self._open is None else max(self._open.per_worker.values(), default=0)
        return self._cc3_closed + current / self.dense_bytes

    @property
    def uplink_bytes(self) -> int:
        """Bytes sent by workers (worker->hub and all-reduce contributions), all workers."""
        return sum(self._uplink)

    @property
    def downlink_bytes(self) -> int:
        """Bytes received from the hub, summed over receiving workers."""
        return sum(self._downlink)

    @property
    def allreduce_bytes(self) -> int:
        """All-reduce contributions, all workers (a part of :attr:`uplink_bytes`)."""
        return sum(self._allreduce)

    @property
    def control_bytes(self) -> int:
        """Bytes of runtime control traffic (up and down, all workers), already inside the byte totals."""
        return self._control

    @property
    def comm_time_s(self) -> float:
        """Wall time spent inside collectives, as reported by the transport."""
        return self._seconds

    def uplink_bytes_per_worker(self) -> list[int]:
        """Bytes each worker sent (index = worker id)."""
        return list(self._uplink)

    def downlink_bytes_per_worker(self) -> list[int]:
        """Bytes each worker received from the hub (index = worker id)."""
        return list(self._downlink)

    def wire_sent_bytes_per_rank(self) -> list[int]:
        """Bytes each rank's link carries outwards (index = worker id), under the ring/star model above.

        A worker: its gather messages plus its ring share of every all-reduce. The hub: its ring share
        plus one copy of every downlink for each receiver (its egress, :attr:`hub_egress_bytes`).
        """
        m = self.num_workers
        out = [up - ar + ring_wire_bytes(ar, m) for up, ar in zip(self._uplink, self._allreduce, strict=True)]
        out[self.hub] += sum(self._downlink)
        return out

    def wire_received_bytes_per_rank(self) -> list[int]:
        """Bytes each rank's link carries inwards (index = worker id), under the ring/star model above.

        A worker: what the hub sent it plus its ring share of every all-reduce. The hub: its ring share
        plus every worker's gather messages (its ingress, :attr:`hub_ingress_bytes`).
        """
        m = self.num_workers
        out = [down + ring_wire_bytes(ar, m) for down, ar in zip(self._downlink, self._allreduce, strict=True)]
        star = [up - ar for up, ar in zip(self._uplink, self._allreduce, strict=True)]
        out[self.hub] += sum(star) - star[self.hub]  # every worker's gather messages reach the hub
        return out

    @property
    def hub_egress_bytes(self) -> int:
        """Bytes the hub's link sends: every downlink once per receiver plus its ring share of all-reduces."""
        return self.wire_sent_bytes_per_rank()[self.hub]

    @property
    def hub_ingress_bytes(self) -> int:
        """Bytes the hub's link receives: every worker's gather messages plus its ring share of all-reduces."""
        return self.wire_received_bytes_per_rank()[self.hub]

    def gamma(self, tag: str | None = None) -> float:
        """Measured compression power: dense-equivalent bytes over bytes sent (uplink).

        Args:
            tag: Only messages recorded with this tag (e.g. ``"compressed"``); ``None`` for all.

        Returns:
            ``messages * dense_bytes / bytes``; ``nan`` if nothing (or only empty messages) was sent.
        """
        if tag is None:
            messages, sent = self._messages, self.uplink_bytes
        else:
            messages, sent = self._tags.get(tag, [0, 0])
        return messages * self.dense_bytes / sent if sent else float("nan")

    def summary(self) -> dict[str, Any]:
        """Totals as plain types (for logs, JSON and MLflow)."""
        return {
            "dim": self.dim,
            "num_workers": self.num_workers,
            "dense_bytes": self.dense_bytes,
            "cc1": self.cc1,
            "cc2": self.cc2,
            "cc3": self.cc3,
            "uplink_bytes": self.uplink_bytes,
            "downlink_bytes": self.downlink_bytes,
            "allreduce_bytes": self.allreduce_bytes,
            "control_bytes": self.control_bytes,
            "uplink_bytes_per_worker": self.uplink_bytes_per_worker(),
            "downlink_bytes_per_worker": self.downlink_bytes_per_worker(),
            "wire_sent_bytes_per_rank": self.wire_sent_bytes_per_rank(),
            "wire_received_bytes_per_rank": self.wire_received_bytes_per_rank(),
            "hub_egress_bytes": self.hub_egress_bytes,
            "hub_ingress_bytes": self.hub_ingress_bytes,
            "gamma": self.gamma(),
            "gamma_by_tag": {t: self.gamma(t) for t in sorted(self._tags)},
            "comm_time_s": self.comm_time_s,
        }

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume counting, as plain Python types (``weights_only``-safe)."""
        return {
            "version": _STATE_VERSION,
            "dim": self.dim,
            "num_workers": self.num_workers,
            "hub": self.hub,
            "dense_bytes": self.dense_bytes,
            "rounds": [asdict(r) for r in self._rounds],
            "open": None
            if self._open is None
            else {"stats": asdict(self._open.stats), "per_worker": dict(self._open.per_worker)},
            "uplink": list(self._uplink),
            "downlink": list(self._downlink),
            "allreduce": list(self._allreduce),
            "messages": self._messages,
            "control": self._control,
            "seconds": self._seconds,
            "tags": {k: list(v) for k, v in self._tags.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the run's shape (dim, workers, hub, dense size) must match."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"ledger: state version {state.get('version')!r} is not {_STATE_VERSION}; "
                "the checkpoint was written by another release of lit_commeff."
            )
        for name in ("dim", "num_workers", "hub", "dense_bytes"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"ledger: checkpoint has {name}={state[name]!r} but this run has {getattr(self, name)!r}; "
                    "resume with the same model, world size and dtype."
                )
        self._reset()
        self._rounds = [RoundStats(**r) for r in state["rounds"]]
        self._cc3_closed = sum(r.cc3 for r in self._rounds)
        if state["open"] is not None:
            self._open = _Open(
                RoundStats(**state["open"]["stats"]), {int(k): v for k, v in state["open"]["per_worker"].items()}
            )
        self._uplink = list(state["uplink"])
        self._downlink = list(state["downlink"])
        self._allreduce = list(state["allreduce"])
        self._messages = int(state["messages"])
        self._control = int(state.get("control", 0))  # absent in checkpoints from before the guard
        self._seconds = float(state["seconds"])
        self._tags = {k: list(v) for k, v in state["tags"].items()}
