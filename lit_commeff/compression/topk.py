"""TopK: biased sparsification to the K largest-magnitude coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lit_commeff.compression.base import (
    Compressor,
    Payload,
    ShapeLike,
    TensorSpec,
    check_k_or_ratio,
    numel,
    resolve_k,
)
from lit_commeff.compression.randk import compute_dtype
from lit_commeff.compression.registry import register


def index_dtype(d: int) -> torch.dtype:
    """Smallest unsigned integer dtype that holds every index in ``range(d)``."""
    if d <= 1 << 8:
        return torch.uint8
    if d <= 1 << 16:
        return torch.uint16
    if d <= 1 << 32:
        return torch.uint32
    return torch.int64


@register("topk", "top_k")
class TopK(Compressor):
    """Top-K sparsification: keep the K coordinates of largest magnitude, unscaled.

    Biased and contractive with ``beta = d/K``: ``||C(x) - x||^2 <= (1 - K/d) ||x||^2``
    deterministically. Wire: the K values (input dtype) and their indices in the smallest unsigned
    integer dtype that holds ``d`` (uint8, uint16, uint32, else int64).

    Args:
        k: Number of coordinates kept (an int >= 1 and <= d).
        ratio: Fraction of coordinates kept, in (0, 1]; K = ceil(ratio * d). Give ``k`` or ``ratio``.
        check_finite: See :class:`~lit_commeff.compression.base.Compressor`.
    """

    name = "topk"
    unbiased = False

    def __init__(self, *, k: int | None = None, ratio: float | None = None, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        check_k_or_ratio(k, ratio, "topk")
        self.k = k
        self.ratio = ratio

    def k_for(self, d: int) -> int:
        """K for a tensor of ``d`` elements."""
        return resolve_k(k=self.k, ratio=self.ratio, d=d, owner="topk")

    def beta(self, shape: ShapeLike) -> float:
        d = numel(shape)
        return d / self.k_for(d)

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        d = numel(shape)
        k = self.k_for(d)
        return {"values": TensorSpec((k,), dtype), "indices": TensorSpec((k,), index_dtype(d))}

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        flat = x.detach().reshape(-1)
        d = flat.numel()
        idx = torch.topk(flat.abs(), self.k_for(d), sorted=False).indices
        return {"values": flat[idx], "indices": idx.to(index_dtype(d))}

    def _decompress(self, payload: Payload) -> Tensor:
        values = payload.tensors["values"]
        idx = payload.tensors["indices"].to(torch.int64)
        out = torch.zeros(payload.shape.numel(), dtype=compute_dtype(payload.dtype), device=values.device)
        out[idx] = values.to(out.dtype)
        return out

    def _roundtrip_block(self, x: Tensor, *, step: int, workers: Sequence[int], key: str) -> Tensor:
        idx = torch.topk(x.abs(), self.k_for(x.shape[1]), dim=1, sorted=False).indices
        out = torch.zeros(x.shape, dtype=compute_dtype(x.dtype), device=x.device)
        out.scatter_(1, idx, x.gather(1, idx).to(out.dtype))
        return out

    def _repr_args(self) -> dict[str, Any]:
        return {"k": self.k, "ratio": self.ratio}
