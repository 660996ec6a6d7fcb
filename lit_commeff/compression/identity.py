"""Identity: the dense message, the reference every other compressor is measured against."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lit_commeff.compression.base import Compressor, Payload, ShapeLike, TensorSpec, numel
from lit_commeff.compression.registry import register


@register("identity", "none", "dense")
class Identity(Compressor):
    """Sends the tensor as it is (float32 for float32 inputs): unbiased with ω = 0."""

    name = "identity"
    unbiased = True

    def omega(self, shape: ShapeLike) -> float:
        numel(shape)
        return 0.0

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        return {"values": TensorSpec((numel(shape),), dtype)}

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        return {"values": x.detach().reshape(-1).clone()}

    def _decompress(self, payload: Payload) -> Tensor:
        return payload.tensors["values"]

    def _roundtrip_block(self, x: Tensor, *, step: int, workers: Sequence[int], key: str) -> Tensor:
        return x.clone()
