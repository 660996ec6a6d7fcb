"""The transport interface every algorithm talks through.

An algorithm runs in each process over a *block* of workers: a tensor with a leading worker dimension
``R`` (``R = M`` in the single-process simulator, ``R = 1`` per rank under ``torch.distributed``). It
never touches a collective itself; it calls the operations below, each of which records the bytes it
hands over in the :class:`~lit_commeff.ledger.CommLedger`: the star's ``gather``/``broadcast`` (dense
and compressed), the peer-to-peer :meth:`~Transport.all_reduce`, the agreement on flags
(:meth:`~Transport.agree`) and the setup broadcast of the hub's parameters
(:meth:`~Transport.broadcast_parameters`). Checkpoint state collection is not training traffic and goes
through the uncounted helpers of :mod:`lit_commeff.transport.objects`.

The hub (worker 0 by default) is also a worker with data. Its own messages never cross the network,
so they are neither compressed nor counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lit_commeff.compression import Compressor
from lit_commeff.ledger import CommLedger


class Transport(ABC):
    """Moves messages between this process's block of workers and the hub.

    Attributes:
        num_workers: Total number of workers M, hub included.
        workers: Global ids of this process's workers, int64 tensor of shape ``(R,)``.
        hub: Global id of the hub worker.
        ledger: Where every transfer is recorded.
    """

    num_workers: int
    workers: Tensor
    hub: int
    ledger: CommLedger

    @property
    def is_hub(self) -> bool:
        """Whether this process holds the hub (and therefore runs the hub's updates)."""
        return bool((self.workers == self.hub).any())

    @property
    def hub_row(self) -> int:
        """Row of the hub inside this process's block (only meaningful where :attr:`is_hub`)."""
        return int((self.workers == self.hub).nonzero()[0, 0])

    def begin_round(self) -> int:
        """Start a communication round (CC-1); returns its id."""
        return self.ledger.begin_round()

    @abstractmethod
    def broadcast(self, *tensors: Tensor, tag: str = "") -> tuple[Tensor, ...]:
        """Send the hub's tensors to every worker; each process gets them back.

        Non-hub processes pass tensors of the right shape and dtype (their content is ignored).
        """

    @abstractmethod
    def broadcast_compressed(
        self, *tensors: Tensor, compressor: Compressor, step: int, key: str = "", tag: str = "point_compressed"
    ) -> tuple[Tensor, ...]:
        """Compressed downlink: the hub sends ``compressor.compress(t)`` of each of its ``(d,)`` tensors.

        Every process, the hub included, gets back what the messages decompress to, so all hold the same
        values bit for bit. Message ``i`` is compressed as worker :attr:`hub` with key ``f"{key}/{i}"``:
        the hub can compute ``compressor.roundtrip`` of a message before sending it. Non-hub processes pass
        tensors of the right shape and dtype (their content is ignored). The ledger records the wire bytes,
        once per receiving worker.
        """

    @abstractmethod
    def gather(self, x: Tensor, *, tag: str = "dense", senders: Sequence[int] | None = None) -> Tensor | None:
        """Dense uplink: every worker sends its row of ``x`` (``(R, d)``); the hub gets ``(M, d)``.

        Args:
            x: This process's block of rows.
            tag: Ledger tag.
            senders: Only these workers send (client sampling); rows of the others are zero on the hub.
                Default: every worker.

        Returns the gathered rows on the hub's process and ``None`` elsewhere.
        """

    @abstractmethod
    def gather_compressed(
        self, x: Tensor, compressor: Compressor, *, step: int, key: str = "", tag: str = "compressed"
    ) -> tuple[Tensor, Tensor | None]:
        """Compressed uplink: every non-hub worker sends ``compressor.compress(x[r])``.

        Returns ``(own, received)``: ``own`` is what this process's workers' messages decompress to
        (``(R, d)``, for error feedback; the hub's own row is passed through uncompressed), and
        ``received`` is every worker's decompressed message on the hub's process (``(M, d)``), ``None``
        elsewhere.
        """

    @abstractmethod
    def all_reduce(self, x: Tensor, *, op: Literal["mean", "sum"] = "mean", tag: str = "allreduce") -> Tensor:
        """Peer-to-peer reduction: each worker contributes its row of ``x`` (``(R, d)``); every process gets the result.

        The ledger books it as it happens on the wire: an all-reduce has no hub, so every worker, the hub
        included, hands its dense row (``d * itemsize`` bytes) to the collective, recorded as ``M``
        contributions of direction ``allreduce`` (each one a CC-2 message, so CC-3 grows by one dense unit
        for a row of the ledger's dense dtype). These are the bytes handed to the collective, as for every
        other transfer and for DDP's buckets. What the links carry is the ledger's wire view, derived from
        them: a ring in which every rank sends and receives ``2 (M - 1) / M`` of its row
        (:func:`~lit_commeff.ledger.ring_wire_bytes`).

        Args:
            x: This process's block of rows, ``(R, d)``.
            op: ``"mean"`` (the sum divided by M) or ``"sum"``.
            tag: Ledger tag.

        Returns:
            ``(d,)``: the sum or mean over all M workers' rows, the same on every process.
        """

    @abstractmethod
    def agree(self, flags: Tensor, *, tag: str = "guard", control: bool = True) -> Tensor:
        """Every process learns every worker's flag: each worker's int32 goes to the hub, which sends all back.

        A star of two one-hop collectives (a gather of one int32 per worker, then the downlink of the
        ``M`` flags), cheaper on a latency-bound link than a ring all-reduce of the same flags. Recorded as
        a 4-byte uplink message per non-hub worker and a ``4 * M``-byte downlink per receiving worker;
        by default as control traffic (``control=True``: in the byte totals, not in CC-2, CC-3 or γ).

        Args:
            flags: This process's workers' flags, ``(R,)`` (any integer or bool dtype; sent as int32).
            tag: Ledger tag.
            control: Whether the agreement is control traffic of the runtime rather than a message of the method.

        Returns:
            ``(M,)`` int32: every worker's flag (index = worker id), the same on every process.
        """

    def any_flag(self, flag: bool | Tensor, *, tag: str = "guard", control: bool = True) -> bool:
        """Whether any worker raised its flag (one :meth:`agree`; same traffic).

        Args:
            flag: This process's flag: one bool for all its workers, or one per row (``(R,)``).
            tag: Ledger tag.
            control: As for :meth:`agree`.
        """
        flags = torch.as_tensor(flag).to(torch.int32).reshape(-1)
        if flags.numel() == 1:
            flags = flags.expand(self.workers.numel())
        return bool(self.agree(flags, tag=tag, control=control).ne(0).any())

    @abstractmethod
    def broadcast_parameters(self, tensors: Sequence[Tensor], *, tag: str = "setup") -> None:
        """Overwrite ``tensors`` in place with the hub's (initial weights and buffers, any dtypes), dense.

        Recorded as one downlink of the tensors' total bytes to every worker but the hub. The caller opens
        the ledger round.
        """


def dense_nbytes(x: Tensor) -> int:
    """Bytes of one worker's dense row of ``x`` (``(R, d)`` or ``(d,)``)."""
    row = x[0] if x.dim() > 1 else x
    return row.numel() * row.element_size()


def as_block(x: Tensor, rows: int) -> Tensor:
    """Validate that ``x`` is a ``(rows, d)`` block."""
    if x.dim() != 2 or x.shape[0] != rows:
        raise ValueError(f"transport: expected a block of shape ({rows}, d), got {tuple(x.shape)}.")
    return x


def as_flags(flags: Tensor, rows: int) -> Tensor:
    """Validate that ``flags`` holds one integer or bool flag per row, ``(rows,)``; returned as int32."""
    if flags.shape != (rows,) or flags.is_floating_point() or flags.is_complex():
        raise ValueError(
            f"transport: expected one integer flag per worker of this process, shape ({rows},), got "
            f"{tuple(flags.shape)} of {flags.dtype}; pass e.g. torch.tensor([1], dtype=torch.int32)."
        )
    return flags.to(torch.int32)


REDUCE_OPS = ("mean", "sum")


def check_op(op: str) -> str:
    """Validate an all-reduce ``op``."""
    if op not in REDUCE_OPS:
        raise ValueError(f"op: op={op!r} is unknown; use one of {list(REDUCE_OPS)}.")
    return op


__all__ = ["REDUCE_OPS", "Transport", "as_block", "as_flags", "check_op", "dense_nbytes"]
