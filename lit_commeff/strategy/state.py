"""Per-rank strategy state inside one Lightning checkpoint, without pickling anything that crosses the wire.

Lightning writes the checkpoint from rank 0 only, but our methods keep state on every rank (error
feedback buffers, anchor gradients, DIANA shifts, DiLoCo's local replicas). Each rank serialises its
own state with ``torch.save`` to bytes; the bytes travel to rank 0 as a ``uint8`` tensor through
:func:`lit_commeff.transport.objects.gather_to_hub` (not counted in the ledger: checkpoint I/O is not
training traffic) and are stored in the checkpoint under :data:`CHECKPOINT_KEY`. On resume every rank
reads the file (as Lightning already does) and deserialises its own entry with
``torch.load(weights_only=True)``, so the state must be tensors and plain Python types.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lit_commeff.transport.objects import gather_to_hub

CHECKPOINT_KEY = "lit_commeff"
FORMAT_VERSION = 1


def to_bytes(state: Mapping[str, Any]) -> Tensor:
    """``torch.save`` a state dict into a ``uint8`` tensor."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def from_bytes(blob: Tensor) -> dict[str, Any]:
    """Inverse of :func:`to_bytes`; loads with ``weights_only=True`` (no arbitrary unpickling)."""
    return torch.load(io.BytesIO(blob.cpu().numpy().tobytes()), weights_only=True)


def gather_states(state: Mapping[str, Any], *, device: torch.device | str = "cpu") -> list[Tensor] | None:
    """Collect every rank's serialised state on rank 0 (a collective: call it on every rank).

    Returns the list of per-rank ``uint8`` tensors on rank 0 and ``None`` elsewhere; without an
    initialised process group, a one-element list.
    """
    return gather_to_hub(to_bytes(state), device=device, hub=0)


def pack(strategy: str, rank_states: list[Tensor]) -> dict[str, Any]:
    """The checkpoint entry for :data:`CHECKPOINT_KEY`."""
    return {"format": FORMAT_VERSION, "strategy": strategy, "world_size": len(rank_states), "ranks": rank_states}


def unpack(entry: Mapping[str, Any], *, strategy: str, rank: int, world_size: int) -> dict[str, Any]:
    """This rank's state from a checkpoint entry, after checking it belongs to this run's shape."""
    if entry.get("format") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint: lit_commeff state format {entry.get('format')!r} is not {FORMAT_VERSION}; it was written "
            "by another release of lit_commeff."
        )
    if entry["strategy"] != strategy:
        raise ValueError(
            f"checkpoint: it holds the state of strategy {entry['strategy']!r} but this run uses {strategy!r}; "
            f"resume with strategy={entry['strategy']!r} or start without ckpt_path."
        )
    if entry["world_size"] != world_size:
        raise ValueError(
            f"checkpoint: it was written by {entry['world_size']} ranks but this run has {world_size}; every rank "
            f"owns algorithm state, so resume with the same world size ({entry['world_size']} processes in total)."
        )
    return from_bytes(entry["ranks"][rank])


def rng_state() -> dict[str, Any]:
    """This process's torch RNG state (CPU and, when initialised, the current CUDA device)."""
    out: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state()
    return out


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
