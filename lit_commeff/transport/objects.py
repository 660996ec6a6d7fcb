"""Uncounted collectives of the runtime: checkpoint state collection and the setup check that ranks agree.

Everything else a strategy sends goes through a :class:`~lit_commeff.transport.Transport` and is
recorded in the ledger. These helpers are not, on purpose:

- They are not training traffic. The ledger measures what a method costs to train (CC-1/2/3, bytes per
  round); a checkpoint's gather happens as often as the user saves, and the setup check once per run,
  so counting them would make a method's numbers depend on the checkpoint schedule.
- The ledger is itself part of the state being gathered (it is serialised before the gather), so a
  counted gather would change the ledger while it is saved, and a resumed run would not report the
  same numbers as an uninterrupted one.

Without an initialised process group every helper acts as the only rank of a world of one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def process_group_ready() -> bool:
    """Whether ``torch.distributed`` is available and its default process group initialised."""
    return dist.is_available() and dist.is_initialized()


def all_gather(tensor: Tensor) -> list[Tensor]:
    """Every rank's ``tensor`` (same shape and dtype on every rank), in rank order, on every rank (uncounted).

    A collective: call it on every rank.
    """
    if not process_group_ready():
        return [tensor]
    out = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(out, tensor.contiguous())
    return out


def gather_to_hub(blob: Tensor, *, device: torch.device | str = "cpu", hub: int = 0) -> list[Tensor] | None:
    """Collect every rank's ``uint8`` buffer, of any length, on ``hub`` (uncounted).

    The lengths travel first (an all-gather of one int64 per rank), then the buffers, padded to the
    longest, in one gather. A collective: call it on every rank.

    Args:
        blob: This rank's bytes, a 1-D ``uint8`` tensor.
        device: Device of the tensors handed to the collectives (``cuda`` for NCCL).
        hub: Rank that receives the buffers.

    Returns:
        On ``hub``, every rank's buffer in rank order (CPU tensors of their own lengths); ``None``
        elsewhere. Without a process group, ``[blob]``.
    """
    if blob.dim() != 1 or blob.dtype != torch.uint8:
        raise ValueError(
            f"blob: expected a 1-D uint8 tensor, got shape {tuple(blob.shape)} of {blob.dtype}; serialise the "
            "state first (e.g. lit_commeff.strategy.state.to_bytes)."
        )
    if not process_group_ready():
        return [blob]
    device = torch.device(device)
    size = torch.tensor([blob.numel()], dtype=torch.int64, device=device)
    sizes = all_gather(size)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: blob.numel()] = blob.to(device)
    buffers = [torch.empty_like(padded) for _ in range(len(sizes))] if dist.get_rank() == hub else None
    dist.gather(padded, buffers, dst=hub)
    if buffers is None:
        return None
    return [b[: int(s)].cpu().clone() for b, s in zip(buffers, sizes, strict=True)]


__all__ = ["all_gather", "gather_to_hub", "process_group_ready"]
