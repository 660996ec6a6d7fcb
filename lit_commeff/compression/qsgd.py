"""QSGD / random dithering: unbiased stochastic quantisation to s levels per bucket."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lit_commeff.compression.base import Compressor, Payload, ShapeLike, TensorSpec, numel
from lit_commeff.compression.bitpack import pack_bits, packed_nbytes, unpack_bits
from lit_commeff.compression.randk import compute_dtype
from lit_commeff.compression.registry import register
from lit_commeff.compression.seeding import generator


@register("qsgd", "dithering", "random_dithering")
class QSGD(Compressor):
    """QSGD random dithering with ``s`` levels (Alistarh et al., NeurIPS 2017, "QSGD").

    Each bucket of ``bucket_size`` elements is sent as its L2 norm (float32) and, per element, a
    signed level ``l in {-s, ..., s}``, rounded stochastically so that
    ``E[Q(x)] = x``. The ``2s + 1`` symbols are bit-packed with ``ceil(log2(2s + 1))`` bits each
    (2 bits for s = 1, 4 bits for s = 7, 8 bits for s = 127).

    Unbiased with ``omega = min(B / s^2, sqrt(B) / s)`` for bucket size ``B`` (QSGD, Lemma 3.1).

    Args:
        s: Number of positive quantisation levels, an int >= 1 (at most 32767).
        bucket_size: Elements per bucket; ``None`` quantises the whole tensor against one norm.
            Smaller buckets lower ω at the cost of 4 bytes per bucket.
        seed: Base seed of the dithering noise (drawn on the tensor's device).
        check_finite: See :class:`~lit_commeff.compression.base.Compressor`.
    """

    name = "qsgd"
    unbiased = True

    def __init__(self, *, s: int = 1, bucket_size: int | None = None, seed: int = 0, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 32767:
            raise ValueError(f"qsgd.s: s={s!r} is out of range; the number of levels must be an integer in [1, 32767].")
        if bucket_size is not None and (
            isinstance(bucket_size, bool) or not isinstance(bucket_size, int) or bucket_size < 1
        ):
            raise ValueError(
                f"qsgd.bucket_size: bucket_size={bucket_size!r} is invalid; use an integer >= 1 or None (one bucket)."
            )
        self.s = s
        self.bucket_size = bucket_size
        self.seed = int(seed)
        self.bits = math.ceil(math.log2(2 * s + 1))

    def _bucket(self, d: int) -> int:
        return d if self.bucket_size is None else min(self.bucket_size, d)

    def omega(self, shape: ShapeLike) -> float:
        b = self._bucket(numel(shape))
        return min(b / self.s**2, math.sqrt(b) / self.s)

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        d = numel(shape)
        buckets = math.ceil(d / self._bucket(d))
        return {
            "levels": TensorSpec((packed_nbytes(d, self.bits),), torch.uint8),
            "norms": TensorSpec((buckets,), torch.float32),
        }

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        flat = x.detach().reshape(-1).to(compute_dtype(x.dtype))
        d = flat.numel()
        b = self._bucket(d)
        buckets = math.ceil(d / b)
        if buckets * b == d:
            rows = flat.view(buckets, b)
        else:
            rows = torch.zeros(buckets * b, dtype=flat.dtype, device=flat.device)
            rows[:d] = flat
            rows = rows.view(buckets, b)
        norms = torch.linalg.vector_norm(rows, dim=1)
        inv = torch.where(norms > 0, self.s / norms, torch.zeros_like(norms))
        g = generator(self.seed, step, worker, key, device=flat.device)
        # level = floor(|x| s / norm + U[0, 1)): rounds up with probability equal to the fraction.
        levels = torch.rand(rows.shape, generator=g, device=flat.device, dtype=flat.dtype)
        levels.addcmul_(rows.abs(), inv.unsqueeze(1)).floor_().clamp_(max=self.s)
        codes = levels.mul_(torch.sign(rows)).add_(self.s).reshape(-1)[:d]
        codes = codes.to(torch.uint8 if self.bits <= 8 else torch.int32)
        return {"levels": pack_bits(codes, self.bits), "norms": norms.to(torch.float32)}

    def _decompress(self, payload: Payload) -> Tensor:
        d = payload.shape.numel()
        b = self._bucket(d)
        work = compute_dtype(payload.dtype)
        norms = payload.tensors["norms"].to(work)
        levels = unpack_bits(payload.tensors["levels"], self.bits, d, dtype=work).sub_(self.s)
        buckets = norms.numel()
        if buckets * b != d:
            levels = torch.cat([levels, levels.new_zeros(buckets * b - d)])
        return levels.view(buckets, b).mul_((norms / self.s).unsqueeze(1)).reshape(-1)[:d]

    def _repr_args(self) -> dict[str, Any]:
        return {"s": self.s, "bucket_size": self.bucket_size, "seed": self.seed}
