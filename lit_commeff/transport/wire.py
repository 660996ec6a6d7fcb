"""One message, two precisions: values rounded to a narrow float, a header kept bit for bit beside them.

Gated DANE's ``overlap`` sends one tensor each way per round: d-long value blocks (model changes, gradients)
followed by a few exact fields (round lengths, counts, fault and stop flags). :func:`pack` casts the values to
the wire dtype (bfloat16: half the bytes) and reinterprets the header's bits as that dtype, so the whole message
still travels in one collective and the header arrives exactly (a bf16 value holds integers only up to 256).
:func:`unpack` inverts it. :func:`round_values` gives the values as the receiver will see them, so a sender can
use the same numbers as the hub.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pack(message: Tensor, values: int, wire: torch.dtype | None) -> Tensor:
    """``message`` as it travels: its first ``values`` columns rounded to ``wire``, the rest reinterpreted bitwise.

    Args:
        message: ``(..., values + header)``, float32 or float64.
        values: How many leading columns are values (rounded); the others are the header (exact).
        wire: The values' wire dtype, of at most the message's element size; ``None`` sends ``message`` as it is.
    """
    if wire is None or wire == message.dtype:
        return message
    head = message[..., values:].clone().view(wire)
    return torch.cat([message[..., :values].to(wire), head], dim=-1)


def unpack(packed: Tensor, values: int, dtype: torch.dtype) -> Tensor:
    """The message :func:`pack` sent, in ``dtype``: the values widened, the header's bits restored exactly."""
    if packed.dtype == dtype:
        return packed
    head = packed[..., values:].clone().view(dtype)
    return torch.cat([packed[..., :values].to(dtype), head], dim=-1)


def round_values(message: Tensor, values: int, wire: torch.dtype | None) -> Tensor:
    """``message`` with its first ``values`` columns rounded through ``wire`` (what :func:`unpack` will give)."""
    if wire is None or wire == message.dtype:
        return message
    return torch.cat([message[..., :values].to(wire).to(message.dtype), message[..., values:]], dim=-1)


__all__ = ["pack", "round_values", "unpack"]
