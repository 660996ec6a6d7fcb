"""Scaled sign: one bit per element plus one scale."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_commeff.compression.base import Compressor, Payload, ShapeLike, TensorSpec, numel
from lit_commeff.compression.bitpack import pack_bits, packed_nbytes, unpack_bits
from lit_commeff.compression.randk import compute_dtype
from lit_commeff.compression.registry import register


@register("sign", "scaled_sign", "signsgd")
class ScaledSign(Compressor):
    """Scaled sign compression ``C(x) = (||x||_1 / d) sign(x)``.

    From Karimireddy et al., ICML 2019, "Error Feedback Fixes SignSGD and other Gradient
    Compression Schemes".

    Biased: ``||C(x) - x||^2 = ||x||^2 - ||x||_1^2 / d <= (1 - 1/d) ||x||^2``, so ``beta = d``
    in the worst case (dense vectors of similar magnitudes contract far better). Wire: ``ceil(d/8)``
    bytes of packed sign bits (zero is sent as +) and one float32 scale.
    """

    name = "sign"
    unbiased = False

    def beta(self, shape: ShapeLike) -> float:
        return float(numel(shape))

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        d = numel(shape)
        return {"signs": TensorSpec((packed_nbytes(d, 1),), torch.uint8), "scale": TensorSpec((1,), torch.float32)}

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        flat = x.detach().reshape(-1).to(compute_dtype(x.dtype))
        scale = (flat.abs().sum() / flat.numel()).to(torch.float32).reshape(1)
        return {"signs": pack_bits((flat >= 0).to(torch.uint8), 1), "scale": scale}

    def _decompress(self, payload: Payload) -> Tensor:
        d = payload.shape.numel()
        positive = unpack_bits(payload.tensors["signs"], 1, d, dtype=torch.bool)
        scale = payload.tensors["scale"].to(compute_dtype(payload.dtype))
        return torch.where(positive, scale, -scale)
