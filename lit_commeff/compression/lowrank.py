"""Low-rank PowerSGD compression: one warm-started power-iteration step per message."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from lit_commeff.compression.base import Compressor, Payload, ShapeLike, TensorSpec, as_shape, numel
from lit_commeff.compression.randk import compute_dtype
from lit_commeff.compression.registry import register
from lit_commeff.compression.seeding import generator

_RESHAPES = ("rows", "square")


@register("powersgd", "lowrank", "low_rank")
class LowRank(Compressor):
    """Rank-``r`` PowerSGD low-rank compressor.

    From Vogels, Karimireddy, Jaggi, NeurIPS 2019, "PowerSGD: Practical Low-Rank Gradient
    Compression for Distributed Optimization".

    The tensor is viewed as an ``n x m`` matrix ``A``. With the warm-start ``Q`` (``m x r``) kept from
    this worker's previous message for the same key and shape: ``P = orth(A Q)``, ``Q' = A^T P``; the
    wire carries ``P`` and ``Q'`` (``(n + m) r`` values in the input dtype) and the receiver rebuilds
    ``P Q'^T``, the projection of ``A`` onto ``span(P)``. ``Q'`` becomes the next warm start.

    Biased. ``beta = min(n, m) / r`` is the contraction of the exact rank-``r`` approximation; the
    warm-started power iteration approaches it over successive messages on slowly changing inputs
    (gradients), while a single cold-started step is only guaranteed non-expansive. Where
    ``r (n + m) >= n m`` low rank would not save bytes, so the message is sent dense (as torch's
    PowerSGD hook does) and ``beta = 1``; :meth:`wire_spec` says which applies.

    Args:
        rank: Rank ``r`` of the approximation, an int >= 1.
        reshape: ``"rows"`` views a tensor of shape ``(n, ...)`` as ``(n, prod(rest))`` and rejects
            vectors; ``"square"`` zero-pads the flattened tensor to a near-square matrix
            (``n = ceil(sqrt(d))``), for pipelines that send one flat vector.
        seed: Base seed of the cold-start ``Q``.
        check_finite: See :class:`~lit_commeff.compression.base.Compressor`.
    """

    name = "powersgd"
    unbiased = False

    def __init__(self, *, rank: int = 1, reshape: str = "rows", seed: int = 0, check_finite: bool = True) -> None:
        super().__init__(check_finite=check_finite)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"powersgd.rank: rank={rank!r} is invalid; the rank must be an integer >= 1.")
        if reshape not in _RESHAPES:
            raise ValueError(f"powersgd.reshape: reshape={reshape!r} is not supported; use one of {list(_RESHAPES)}.")
        self.rank = rank
        self.reshape = reshape
        self.seed = int(seed)
        self._warm: dict[str, Tensor] = {}

    def matrix_dims(self, shape: ShapeLike) -> tuple[int, int]:
        """The ``(n, m)`` matrix view used for a tensor of this shape."""
        dims = as_shape(shape)
        d = numel(dims)
        if self.reshape == "square":
            n = math.isqrt(d - 1) + 1
            return n, math.ceil(d / n)
        if len(dims) < 2:
            raise ValueError(
                f"powersgd: a tensor of shape {dims} is not a matrix; low-rank compression needs ndim >= 2. "
                "Pass reshape='square' to compress flat vectors, or use another compressor for vectors."
            )
        return dims[0], d // dims[0]

    def is_dense(self, shape: ShapeLike) -> bool:
        """Whether messages for this shape are sent dense because low rank would not save bytes."""
        n, m = self.matrix_dims(shape)
        return self.rank * (n + m) >= n * m

    def beta(self, shape: ShapeLike) -> float:
        n, m = self.matrix_dims(shape)
        return 1.0 if self.is_dense(shape) else min(n, m) / self.rank

    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        n, m = self.matrix_dims(shape)
        if self.is_dense(shape):
            return {"values": TensorSpec((numel(shape),), dtype)}
        return {"p": TensorSpec((n, self.rank), dtype), "q": TensorSpec((m, self.rank), dtype)}

    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]:
        n, m = self.matrix_dims(x.shape)
        if self.is_dense(x.shape):
            return {"values": x.detach().reshape(-1).clone()}
        work = compute_dtype(x.dtype)
        flat = x.detach().reshape(-1).to(work)
        if flat.numel() != n * m:  # "square" view: zero-pad the tail
            flat = torch.cat([flat, flat.new_zeros(n * m - flat.numel())])
        a = flat.view(n, m)
        state_key = f"{worker}/{key}/{n}x{m}"
        q = self._warm.get(state_key)
        if q is None or q.device != a.device:
            g = generator(self.seed, 0, worker, key, stream=1)
            q = torch.randn(m, self.rank, generator=g, dtype=work).to(a.device)
        p = torch.linalg.qr(a @ q.to(work), mode="reduced").Q
        q_new = a.T @ p
        if bool(torch.linalg.vector_norm(q_new) > 0):  # a zero input must not kill the warm start
            self._warm[state_key] = q_new.detach()
        return {"p": p.to(x.dtype), "q": q_new.to(x.dtype)}

    def _decompress(self, payload: Payload) -> Tensor:
        if "values" in payload.tensors:
            return payload.tensors["values"]
        work = compute_dtype(payload.dtype)
        p = payload.tensors["p"].to(work)
        q = payload.tensors["q"].to(work)
        return (p @ q.T).reshape(-1)[: payload.shape.numel()]

    def state_dict(self) -> dict[str, Any]:
        """Warm-start ``Q`` matrices, keyed ``"worker/key/nxm"``."""
        return {"warm_start": {k: v.detach().cpu().clone() for k, v in self._warm.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {"warm_start"}
        if unknown:
            raise ValueError(f"powersgd: unknown state keys {sorted(unknown)}; expected 'warm_start'.")
        self._warm = {k: v.clone() for k, v in state.get("warm_start", {}).items()}

    def _repr_args(self) -> dict[str, Any]:
        return {"rank": self.rank, "reshape": self.reshape, "seed": self.seed}
