"""RandK: unbiased random sparsification whose indices cost no bytes."""

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
from lit_commeff.compression.registry import register
from lit_commeff.compression.seeding import SHARED_WORKER, block_indices, derive_seeds


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic dtype for decoding: float64 stays float64, everything else goes through float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@register("randk", "rand_k")
class RandK(Compressor):
    """Random-K sparsification: keep K uniformly random coordinates, scaled by d/K.

    Unbiased with ``omega = d/K - 1``. The index set is a pure function of
    ``(seed, step, worker, key)``, so the receiver regenerates it and only the K values travel.

    Args:
        k: Number of coordinates kept (an int >= 1 and <= d).
        ratio: Fraction of coordinates kept, in (0, 1]; K = ceil(ratio * d). Give ``k`` or ``ratio``.
        seed: Base seed of the index schedule; sender and receiver must agree on it.
        shared_indices: Use the same index set on every worker at a given step. Messages can then
            be summed by an all-reduce (sum the ``values`` tensors, decompress once), at the price of
            losing the 1/M variance averaging of independent draws.
        check_finite: See :class:`~lit_commeff.compression.base.Compressor`.
    """

    name = "randk"
    unbiased = True

    def __init__(
        self,
        *,
        k: int | None = None,
        ratio: float | None = None,
        seed: int = 0,
        shared_indices: bool = False,
        check_finite: bool = True,
    ) -> None:
        super().__init__(check_finite=check_finite)
        check_k_or_ratio(k, ratio, "randk")
        self.k = k
        self.ratio = ratio
        self.seed = int(seed)
        self.shared_indices = bool(shared_indices)

    def k_for(self, d: int) -> int:
        """K for a tensor of ``d`` elements."""
        return resolve_k(k=self.k, ratio=self.ratio, d=d, owner="randk")

    def omega(self, shape: ShapeLike) -> float:
        d = numel(shape)
        return d / self.k_for(d) - 1.0

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        d = numel(shape)
        return {"values": TensorSpec((self.k_for(d),), dtype)}

    def indices(self, d: int, *, step: int, worker: int, key: str = "", device: torch.device | str = "cpu") -> Tensor:
        """The sorted int64 index set used at ``(step, worker, key)`` for dimension ``d``."""
        return self.block_indices(d, step=step, workers=[worker], key=key, device=device)[0]

    def block_indices(
        self, d: int, *, step: int, workers: Sequence[int], key: str = "", device: torch.device | str = "cpu"
    ) -> Tensor:
        """Index sets ``(R, K)`` of a block of workers at one step; row r equals ``indices(worker=workers[r])``."""
        ids = [SHARED_WORKER] * len(workers) if self.shared_indices else workers
        return block_indices(d, self.k_for(d), derive_seeds(self.seed, step, ids, key, device=device))

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        flat = x.detach().reshape(-1)
        idx = self.indices(flat.numel(), step=step, worker=worker, key=key, device=flat.device)
        return {"values": flat[idx]}

    def _decompress(self, payload: Payload) -> Tensor:
        d = payload.shape.numel()
        values = payload.tensors["values"]
        idx = self.indices(d, step=payload.step, worker=payload.worker, key=payload.key, device=values.device)
        out = torch.zeros(d, dtype=compute_dtype(payload.dtype), device=values.device)
        out[idx] = values.to(out.dtype) * (d / idx.numel())
        return out

    def _roundtrip_block(self, x: Tensor, *, step: int, workers: Sequence[int], key: str) -> Tensor:
        d = x.shape[1]
        idx = self.block_indices(d, step=step, workers=workers, key=key, device=x.device)
        out = torch.zeros(x.shape, dtype=compute_dtype(x.dtype), device=x.device)
        # values travel in the input dtype, then are scaled on arrival (as in decompress)
        out.scatter_(1, idx, x.gather(1, idx).to(out.dtype) * (d / idx.shape[1]))
        return out

    def _repr_args(self) -> dict[str, Any]:
        return {"k": self.k, "ratio": self.ratio, "seed": self.seed, "shared_indices": self.shared_indices}
