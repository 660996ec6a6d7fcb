"""Half-precision casts: fp16 (with a float32 scale) and bf16."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lit_commeff.compression.base import Compressor, Payload, ShapeLike, TensorSpec, numel
from lit_commeff.compression.randk import compute_dtype
from lit_commeff.compression.registry import register

_FORMATS: dict[str, tuple[torch.dtype, int, float]] = {
    # name: (wire dtype, stored mantissa bits, smallest subnormal)
    "fp16": (torch.float16, 10, 2.0**-24),
    "bf16": (torch.bfloat16, 7, 2.0**-133),
}


@register("cast")
class Cast(Compressor):
    """Round to a 16-bit float format: 2 bytes per element plus one float32 scale.

    The tensor is divided by its largest magnitude first and that scale travels as one float32, so
    no value overflows fp16's range and the largest values keep full relative precision.
    Deterministic round-to-nearest makes it biased with
    ``1 - 1/beta = (u + 2^-22)^2 + d * (tiny/2)^2``, where ``u = 2^-(mantissa bits + 1)`` is the
    format's unit roundoff, ``2^-22`` covers the float32 scaling arithmetic, and ``tiny`` is the
    smallest subnormal: the last term bounds values far below the largest one flushing to zero.

    Args:
        dtype: ``"fp16"`` or ``"bf16"``. Registered names ``fp16``/``bf16`` preset it; ``half`` is fp16.
        check_finite: See :class:`~lit_commeff.compression.base.Compressor`.
    """

    name = "cast"
    unbiased = False

    def __init__(self, *, dtype: str = "fp16", check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        if dtype not in _FORMATS:
            raise ValueError(f"cast.dtype: dtype={dtype!r} is not supported; use one of {sorted(_FORMATS)}.")
        self.dtype = dtype
        self.name = dtype
        self.wire_dtype, mantissa, self._tiny = _FORMATS[dtype]
        self._unit_roundoff = 2.0 ** -(mantissa + 1)

    def beta(self, shape: ShapeLike) -> float:
        d = numel(shape)
        eps2 = (self._unit_roundoff + 2.0**-22) ** 2 + d * (self._tiny / 2) ** 2
        return 1.0 / (1.0 - eps2)

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        return {"values": TensorSpec((numel(shape),), self.wire_dtype), "scale": TensorSpec((1,), torch.float32)}

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        work = x.detach().reshape(-1).to(compute_dtype(x.dtype))
        scale = work.abs().max().to(torch.float32)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return {"values": (work / scale.to(work.dtype)).to(self.wire_dtype), "scale": scale.reshape(1)}

    def _decompress(self, payload: Payload) -> Tensor:
        values = payload.tensors["values"].to(compute_dtype(payload.dtype))
        return values * payload.tensors["scale"].to(values.dtype)

    def _repr_args(self) -> dict[str, Any]:
        return {"dtype": self.dtype}


@register("fp16", "half")
def fp16(*, check_finite: bool = True) -> Cast:
    """Registry entry: :class:`Cast` to fp16."""
    return Cast(dtype="fp16", check_finite=check_finite)


@register("bf16")
def bf16(*, check_finite: bool = True) -> Cast:
    """Registry entry: :class:`Cast` to bf16."""
    return Cast(dtype="bf16", check_finite=check_finite)
