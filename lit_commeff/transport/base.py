"""The transport interface every algorithm talks through.

An algorithm runs in each process over a *block* of workers: a tensor with a leading worker dimension
``R`` (``R = M`` in the single-process simulator, ``R = 1`` per rank under ``torch.distributed``). It
never touches a collective itself; it calls the four operations below, each of which records the
bytes it hands over in the :class:`~lit_commeff.ledger.CommLedger`.

The hub (worker 0 by default) is also a worker with data. Its own messages never cross the network,
so they are neither compressed nor counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

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


def dense_nbytes(x: Tensor) -> int:
    """Bytes of one worker's dense row of ``x`` (``(R, d)`` or ``(d,)``)."""
    row = x[0] if x.dim() > 1 else x
    return row.numel() * row.element_size()


def as_block(x: Tensor, rows: int) -> Tensor:
    """Validate that ``x`` is a ``(rows, d)`` block."""
    if x.dim() != 2 or x.shape[0] != rows:
        raise ValueError(f"transport: expected a block of shape ({rows}, d), got {tuple(x.shape)}.")
    return x


__all__ = ["Transport", "as_block", "dense_nbytes"]
