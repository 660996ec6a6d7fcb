"""Single-process transport: M virtual workers as the leading dimension of one tensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lit_commeff.compression import Compressor
from lit_commeff.ledger import CommLedger, Direction
from lit_commeff.transport.base import Transport, as_block, as_flags, check_op, dense_nbytes


class SimulatorTransport(Transport):
    """All M workers live in this process; messages are tensors passed by reference.

    Nothing is copied for dense traffic, but every transfer is recorded in the ledger exactly as the
    ``torch.distributed`` transport records it: dense rows at their dtype's size, compressed rows at
    ``Payload.nbytes``, broadcasts charged to each of the ``M - 1`` non-hub workers, all-reduces as one
    dense contribution from each of the M workers. Compression runs
    the real compressor per worker with the same ``(seed, step, worker, key)`` schedule a cluster
    uses (a whole block at once where the compressor is vectorised), so random choices match across
    transports.

    Args:
        num_workers: Number of workers M (hub included), at least 2.
        dim: Dimension d of the optimisation variable (sets the ledger's dense unit).
        dtype: Dtype of dense messages (float64 for the convex reproduction).
        hub: Id of the hub worker.
        ledger: Ledger to record into; a new one by default.
        chunk_workers: Compress and decode the workers' messages in slices of this many rows (``None``: the
            whole block at once). Every compressor treats each row alone, so the result is the same bit for
            bit; only the compressor's temporaries shrink from (M, d) to (chunk_workers, d). The method's own
            (M, d) blocks (OLGA: anchor gradients, gradients, decoded messages) are not sliced.
    """

    def __init__(
        self,
        *,
        num_workers: int,
        dim: int,
        dtype: torch.dtype = torch.float64,
        hub: int = 0,
        ledger: CommLedger | None = None,
        chunk_workers: int | None = None,
    ) -> None:
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 2:
            raise ValueError(
                f"workers: M={num_workers!r} is too small; a hub and at least one worker are needed (M >= 2)."
            )
        if isinstance(hub, bool) or not isinstance(hub, int) or not 0 <= hub < num_workers:
            raise ValueError(f"hub: hub={hub!r} is not a worker id; use an int in [0, {num_workers - 1}].")
        if chunk_workers is not None and (
            isinstance(chunk_workers, bool) or not isinstance(chunk_workers, int) or chunk_workers < 1
        ):
            raise ValueError(f"chunk_workers: got {chunk_workers!r}; use an int >= 1, or None for whole blocks.")
        self.chunk_workers = chunk_workers
        self.num_workers = num_workers
        self.workers = torch.arange(num_workers)
        self.hub = hub
        self.ledger = ledger or CommLedger(dim=dim, num_workers=num_workers, dense_dtype=dtype, hub=hub)
        self._senders = [w for w in range(num_workers) if w != hub]

    # One process holds every worker, the hub included: constants, not a tensor search per call (hot path).
    @property
    def is_hub(self) -> bool:
        return True

    @property
    def hub_row(self) -> int:
        return self.hub

    def broadcast(self, *tensors: Tensor, tag: str = "") -> tuple[Tensor, ...]:
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        self.ledger.record(Direction.DOWNLINK, nbytes=nbytes, tag=tag)
        return tensors

    def broadcast_compressed(
        self, *tensors: Tensor, compressor: Compressor, step: int, key: str = "", tag: str = "point_compressed"
    ) -> tuple[Tensor, ...]:
        payloads = [compressor.compress(t, step=step, worker=self.hub, key=f"{key}/{i}") for i, t in enumerate(tensors)]
        self.ledger.record(Direction.DOWNLINK, nbytes=sum(p.nbytes for p in payloads), tag=tag)
        return tuple(compressor.decompress(p).reshape(t.shape) for p, t in zip(payloads, tensors, strict=True))

    def gather(self, x: Tensor, *, tag: str = "dense", senders: Sequence[int] | None = None) -> Tensor | None:
        as_block(x, self.num_workers)
        if senders is None:
            self.ledger.record(Direction.UPLINK, sender=self._senders, nbytes=dense_nbytes(x), tag=tag)
            return x
        chosen = sorted({int(w) for w in senders} | {self.hub})
        travelling = [w for w in chosen if w != self.hub]
        if travelling:
            self.ledger.record(Direction.UPLINK, sender=travelling, nbytes=dense_nbytes(x), tag=tag)
        out = torch.zeros_like(x)
        out[chosen] = x[chosen]
        return out

    def gather_compressed(
        self, x: Tensor, compressor: Compressor, *, step: int, key: str = "", tag: str = "compressed"
    ) -> tuple[Tensor, Tensor | None]:
        as_block(x, self.num_workers)
        out = torch.empty_like(x)
        out[self.hub] = x[self.hub]
        senders = self._senders
        step_rows = self.chunk_workers or len(senders)
        sizes: list[int] = []
        for start in range(0, len(senders), step_rows):
            ids = senders[start : start + step_rows]
            # With the hub first, the senders are a contiguous slice: no copy of the input rows.
            rows: slice | list[int] = slice(ids[0], ids[-1] + 1) if self.hub == 0 else ids
            decoded, chunk_sizes = compressor.roundtrip_block(x[rows], step=step, workers=ids, key=key)
            out[rows] = decoded
            sizes += chunk_sizes
        self.ledger.record(Direction.UPLINK, sender=self._senders, nbytes=sizes, tag=tag)
        return out, out

    def all_reduce(self, x: Tensor, *, op: Literal["mean", "sum"] = "mean", tag: str = "allreduce") -> Tensor:
        check_op(op)
        as_block(x, self.num_workers)
        self.ledger.record(Direction.ALLREDUCE, sender=list(range(self.num_workers)), nbytes=dense_nbytes(x), tag=tag)
        total = x.sum(dim=0)
        return total.div_(self.num_workers) if op == "mean" else total

    def agree(self, flags: Tensor, *, tag: str = "guard", control: bool = True) -> Tensor:
        flags = as_flags(flags, self.num_workers)
        self.ledger.record(Direction.UPLINK, sender=self._senders, nbytes=4, tag=tag, control=control)
        self.ledger.record(Direction.DOWNLINK, nbytes=4 * self.num_workers, tag=tag, control=control)
        return flags.clone()

    def broadcast_parameters(self, tensors: Sequence[Tensor], *, tag: str = "setup") -> None:
        # Every virtual worker already holds the hub's tensors (one copy in this process): only the bytes count.
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        self.ledger.record(Direction.DOWNLINK, nbytes=nbytes, tag=tag)
