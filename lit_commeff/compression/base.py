"""The compressor interface and the wire payload.

A compressor turns a tensor into a :class:`Payload`: exactly the tensors that a collective will carry
(values, indices, scales, packed bits). Whatever the receiver can rebuild on its own (the shape and
dtype, the step and worker ids that seed a shared index schedule) is metadata and costs no bytes.
``payload.nbytes`` is therefore the exact wire size, and :meth:`Compressor.wire_spec` predicts the
same tensors before anything is compressed, so receivers can allocate buffers for a gather.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Input dtypes every compressor accepts. float64 is there for the convex simulator's precision.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)

ShapeLike = int | Sequence[int] | torch.Size


@dataclass(frozen=True)
class TensorSpec:
    """Shape and dtype of one wire tensor, known to the receiver before it arrives."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        """Bytes this tensor occupies on the wire."""
        return math.prod(self.shape) * _itemsize(self.dtype)


@dataclass(frozen=True)
class Payload:
    """What one compressed message puts on the wire, plus the metadata both ends already share.

    Attributes:
        tensors: The wire tensors, in a fixed order. Nothing else is sent.
        shape: Shape of the original tensor (shared by protocol, not sent).
        dtype: Dtype of the original tensor (shared by protocol, not sent).
        step: Step id the message was compressed at (seeds shared randomness; not sent).
        worker: Sending worker id (seeds per-worker randomness; not sent).
        key: Name of the compressed tensor, for stateful or seeded compressors (not sent).
    """

    tensors: dict[str, Tensor]
    shape: torch.Size
    dtype: torch.dtype
    step: int = 0
    worker: int = 0
    key: str = ""

    @property
    def nbytes(self) -> int:
        """Exact bytes on the wire: the sum of the wire tensors' bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def device(self) -> torch.device:
        """Device of the wire tensors."""
        return next(iter(self.tensors.values())).device

    def to_bytes(self) -> Tensor:
        """Concatenate the wire tensors into one flat ``uint8`` buffer (one collective call).

        The buffer holds exactly :attr:`nbytes` bytes; :meth:`Compressor.payload_from_bytes`
        reverses it given the same metadata.
        """
        parts = [t.contiguous().reshape(-1).view(torch.uint8) for t in self.tensors.values()]
        return torch.cat(parts) if len(parts) > 1 else parts[0].clone()


class Compressor(ABC):
    """Base class of every compressor.

    Subclasses set :attr:`name` and :attr:`unbiased`, and implement :meth:`wire_spec`,
    :meth:`_compress` and :meth:`_decompress`. Unbiased compressors implement :meth:`omega`
    (``E||Q(x) - x||^2 <= omega ||x||^2``), biased ones :meth:`beta`
    (``E||C(x) - x||^2 <= (1 - 1/beta) ||x||^2``).

    Every input is validated before any work: it must be a non-empty floating tensor of a supported
    dtype with only finite values. Any shape is accepted and flattened in row-major order, unless the
    compressor documents otherwise (low-rank works on matrices).

    Args:
        check_finite: Reject NaN/Inf inputs with a ``ValueError``. Costs one reduction (a host sync
            on CUDA); switch it off only where the caller already checks.
    """

    name: str = "base"
    unbiased: bool = False

    def __init__(self, *, check_finite: bool = True) -> None:
        self.check_finite = check_finite

    # ----------------------------------------------------------------------------------- contract
    def omega(self, shape: ShapeLike) -> float:
        """Variance constant of an unbiased compressor for a tensor of this shape (or dimension)."""
        raise TypeError(
            f"{type(self).__name__} is biased: it has a contraction constant, call beta(d) instead of omega(d)."
        )

    def beta(self, shape: ShapeLike) -> float:
        """Contraction constant of a biased compressor for a tensor of this shape (or dimension)."""
        raise TypeError(
            f"{type(self).__name__} is unbiased: it has a variance constant, call omega(d) instead of beta(d)."
        )

    @abstractmethod
    def wire_spec(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> dict[str, TensorSpec]:
        """The wire tensors a message for a tensor of this shape and dtype consists of."""

    def wire_nbytes(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> int:
        """Exact bytes of one message for a tensor of this shape and dtype."""
        return sum(spec.nbytes for spec in self.wire_spec(shape, dtype).values())

    def gamma(self, shape: ShapeLike, dtype: torch.dtype = torch.float32) -> float:
        """Compression power: dense bytes over wire bytes of one message (the paper's γ)."""
        return math.prod(as_shape(shape)) * _itemsize(dtype) / self.wire_nbytes(shape, dtype)

    # ------------------------------------------------------------------------------- operations
    def compress(self, x: Tensor, *, step: int = 0, worker: int = 0, key: str = "") -> Payload:
        """Compress ``x`` into the tensors that go on the wire.

        Args:
            x: Tensor to send; any shape, float32/float16/bfloat16/float64, CPU or CUDA.
            step: Communication round; seeds shared randomness (with ``worker``).
            worker: Sender id; seeds per-worker randomness and keys per-worker state.
            key: Name of the tensor (e.g. a parameter name) for stateful/seeded compressors.

        Raises:
            ValueError: ``x`` is empty, not floating point, or holds NaN/Inf.
        """
        self._validate_input(x)
        tensors = self._compress(x, step=step, worker=worker, key=key)
        return Payload(tensors=tensors, shape=x.shape, dtype=x.dtype, step=step, worker=worker, key=key)

    def decompress(self, payload: Payload) -> Tensor:
        """Rebuild a tensor of the original shape, dtype and device from a payload."""
        flat = self._decompress(payload)
        return flat.to(payload.dtype).reshape(payload.shape)

    def roundtrip(self, x: Tensor, *, step: int = 0, worker: int = 0, key: str = "") -> Tensor:
        """``decompress(compress(x))``: what the receiver sees."""
        return self.decompress(self.compress(x, step=step, worker=worker, key=key))

    def roundtrip_block(
        self, x: Tensor, *, step: int = 0, workers: Sequence[int], key: str = ""
    ) -> tuple[Tensor, list[int]]:
        """What the receiver gets from each row of a block of workers, and each message's wire bytes.

        Row r is compressed as worker ``workers[r]`` would compress it alone (same seed schedule,
        same result as ``roundtrip(x[r], step=step, worker=workers[r], key=key)``), but RandK, TopK
        and identity do the whole block in a few tensor operations; other compressors loop.

        Args:
            x: Block ``(R, ...)``: one message per row.
            step: Communication round.
            workers: Worker id of each row.
            key: Name of the tensor.

        Returns:
            ``(decompressed block of x's shape and dtype, [wire bytes per row])``.
        """
        if x.dim() < 2 or x.shape[0] != len(workers):
            raise ValueError(
                f"x: a block needs shape (R, ...) with R = len(workers) = {len(workers)}; got {tuple(x.shape)}."
            )
        row_shape = x.shape[1:]
        nbytes = [self.wire_nbytes(row_shape, x.dtype)] * len(workers)
        self._validate_input(x)
        if type(self)._roundtrip_block is not Compressor._roundtrip_block:
            flat = self._roundtrip_block(x.detach().reshape(len(workers), -1), step=step, workers=workers, key=key)
            return flat.to(x.dtype).reshape(x.shape), nbytes
        rows = []
        for r, w in enumerate(workers):
            payload = self.compress(x[r], step=step, worker=int(w), key=key)
            nbytes[r] = payload.nbytes
            rows.append(self.decompress(payload))
        return torch.stack(rows), nbytes

    def _roundtrip_block(self, x: Tensor, *, step: int, workers: Sequence[int], key: str) -> Tensor:
        """Vectorised round trip of a flat block ``(R, d)``; compressors override it when they can."""
        raise NotImplementedError

    def payload_from_bytes(
        self,
        buffer: Tensor,
        *,
        shape: ShapeLike,
        dtype: torch.dtype,
        step: int = 0,
        worker: int = 0,
        key: str = "",
    ) -> Payload:
        """Rebuild a payload from a flat ``uint8`` buffer made by :meth:`Payload.to_bytes`."""
        spec = self.wire_spec(shape, dtype)
        expected = sum(s.nbytes for s in spec.values())
        if buffer.dtype != torch.uint8 or buffer.numel() != expected:
            raise ValueError(
                f"buffer: expected {expected} uint8 bytes for a {self.name} message of shape "
                f"{tuple(as_shape(shape))} {dtype}, got {buffer.numel()} {buffer.dtype}; "
                "the sender and receiver must agree on compressor, shape and dtype."
            )
        tensors: dict[str, Tensor] = {}
        offset = 0
        for name, s in spec.items():
            chunk = buffer[offset : offset + s.nbytes]
            if (chunk.storage_offset() * chunk.element_size()) % _itemsize(s.dtype):
                chunk = chunk.clone()  # reinterpreting bytes needs an aligned start
            tensors[name] = chunk.view(s.dtype).reshape(s.shape)
            offset += s.nbytes
        return Payload(
            tensors=tensors, shape=torch.Size(as_shape(shape)), dtype=dtype, step=step, worker=worker, key=key
        )

    # ----------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Compressor state to checkpoint (warm starts); empty for stateless compressors."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state keys {sorted(state)}.")

    # --------------------------------------------------------------------------------- helpers
    @abstractmethod
    def _compress(self, x: Tensor, *, step: int, worker: int, key: str) -> dict[str, Tensor]: ...

    @abstractmethod
    def _decompress(self, payload: Payload) -> Tensor: ...

    def _validate_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}.")
        if x.dtype not in SUPPORTED_DTYPES:
            raise ValueError(
                f"x: dtype {x.dtype} is not supported by {self.name}; pass one of "
                f"{[str(d) for d in SUPPORTED_DTYPES]} (cast with x.float())."
            )
        if x.numel() == 0:
            raise ValueError(f"x: empty tensor of shape {tuple(x.shape)}; {self.name} needs at least one element.")
        # min/max propagate NaN and expose Inf: one cheap reduction instead of an elementwise mask.
        if self.check_finite and not bool(torch.isfinite(torch.stack(torch.aminmax(x))).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"x: {bad} non-finite value(s) (NaN/Inf) in a tensor of shape {tuple(x.shape)}; "
                f"{self.name} only compresses finite values. Fix the source of the NaN/Inf "
                "(learning rate, loss scaling) or clip before compressing."
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._repr_args().items())
        return f"{type(self).__name__}({args})"

    def _repr_args(self) -> dict[str, Any]:
        return {}


def as_shape(shape: ShapeLike) -> tuple[int, ...]:
    """Normalise an int dimension or a shape to a tuple."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def numel(shape: ShapeLike) -> int:
    """Number of elements of a shape (or the dimension itself)."""
    d = math.prod(as_shape(shape))
    if d < 1:
        raise ValueError(f"shape: {tuple(as_shape(shape))} has no elements; compressors need d >= 1.")
    return d


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def resolve_k(*, k: int | None, ratio: float | None, d: int, owner: str) -> int:
    """The number of kept coordinates for dimension ``d``, from a count or a ratio.

    A ratio keeps ``ceil(ratio * d)`` coordinates, so at least that fraction is sent.
    """
    if k is not None:
        if k > d:
            raise ValueError(f"{owner}.k: k={k} exceeds the tensor dimension d={d}; use 1 <= k <= {d} or a ratio.")
        return k
    assert ratio is not None
    return max(1, min(d, math.ceil(ratio * d - 1e-9)))


def check_k_or_ratio(k: int | None, ratio: float | None, owner: str) -> None:
    """Exactly one of ``k`` (an int >= 1) or ``ratio`` (in (0, 1]) must be given."""
    if (k is None) == (ratio is None):
        raise ValueError(
            f"{owner}: give exactly one of k (a count >= 1) or ratio (a fraction in (0, 1]); "
            f"got k={k!r}, ratio={ratio!r}."
        )
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{owner}.k: k={k!r} is invalid; k must be an integer >= 1.")
    else:
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (0.0 < ratio <= 1.0):
            raise ValueError(f"{owner}.ratio: ratio={ratio!r} is out of range; ratio must be in (0, 1].")
