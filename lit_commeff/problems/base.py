"""Finite-sum convex problems split over workers: the interface the convex algorithms run on.

A :class:`Problem` holds M equal data shards stacked as ``A: (M, n, d)`` and ``b: (M, n)`` and the
objective ``f(x) = (1/M) Σ_m f_m(x)``. Every per-worker quantity is computed for all workers at once
with batched tensor ops (no Python loop over workers), so a simulated round costs a few kernels.
"""

from __future__ import annotations

import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

_P = TypeVar("_P", bound="Problem")


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise a ValueError naming ``name``."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def check_float(value: Any, name: str, *, positive: bool = False) -> float:
    """Return ``value`` as a finite float >= 0 (> 0 if ``positive``) or raise a ValueError naming ``name``."""
    bound = "> 0" if positive else ">= 0"
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite float {bound}, got {value!r}") from None
    if not math.isfinite(out) or out < 0 or (positive and out == 0):
        raise ValueError(f"{name} must be a finite float {bound}, got {value!r}")
    return out


def check_dtype(dtype: Any) -> torch.dtype:
    """Return ``dtype`` if it is a floating torch dtype, else raise a ValueError naming ``dtype``."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float64), got {dtype!r}")
    return dtype


def split_shards(
    A: Tensor,
    b: Tensor,
    workers: int,
    seed: int = 0,
    *,
    perm: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Shuffle the rows and cut them into ``workers`` equal shards, dropping the remainder.

    Same recipe as the reference oracle: rows ``perm[: n * M]`` with ``n = N // M``, reshaped so that
    worker m gets rows ``perm[m * n : (m + 1) * n]``. The permutation comes from
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))`` unless ``perm`` is given
    (the oracle uses numpy's RNG, so pass its permutation to reproduce its split exactly).

    Args:
        A: Design matrix, shape (N, d).
        b: Targets / labels, shape (N,).
        workers: Number of shards M, 1 <= M <= N.
        seed: Seed of the shuffle (ignored when ``perm`` is given).
        perm: Explicit permutation of ``range(N)``.

    Returns:
        ``(A_shards, b_shards)`` of shapes (M, n, d) and (M, n), on ``A``'s device and dtype.

    Raises:
        ValueError: Bad shapes, ``workers`` outside [1, N] or ``perm`` not a permutation of range(N).
    """
    if not isinstance(A, Tensor) or A.dim() != 2:
        raise ValueError(f"A must be a 2-D tensor (rows, features), got {_describe(A)}")
    if not isinstance(b, Tensor) or b.dim() != 1 or b.shape[0] != A.shape[0]:
        raise ValueError(f"b must be a 1-D tensor with one entry per row of A ({A.shape[0]}), got {_describe(b)}")
    N = A.shape[0]
    workers = check_int(workers, "workers")
    if workers > N:
        raise ValueError(f"workers={workers} exceeds the number of data rows N={N}; use at most {N} workers")
    if perm is None:
        gen = torch.Generator(device="cpu").manual_seed(check_int(seed, "seed", minimum=0))
        perm_t = torch.randperm(N, generator=gen)
    else:
        perm_t = torch.as_tensor(perm)
        if perm_t.dim() != 1 or perm_t.shape[0] != N or perm_t.dtype.is_floating_point or perm_t.dtype == torch.bool:
            raise ValueError(f"perm must be a 1-D integer permutation of range(N={N}), got {_describe(perm_t)}")
        perm_t = perm_t.to(torch.long).cpu()
        if not torch.equal(torch.sort(perm_t).values, torch.arange(N)):
            raise ValueError(f"perm must be a permutation of range(N={N}): it has repeated or out-of-range entries")
    n = N // workers
    keep = perm_t[: n * workers].to(A.device)
    return A[keep].reshape(workers, n, A.shape[1]), b[keep].reshape(workers, n)


def _describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


class Problem(ABC):
    """A distributed finite-sum problem ``f(x) = (1/M) Σ_m f_m(x)`` with known constants.

    Attributes:
        A: Stacked data shards, shape (M, n, d).
        b: Stacked targets, shape (M, n).
        num_workers: Number of workers M.
        dim: Dimension d of x.
        n_per_worker: Rows per shard n.
        dtype: Floating dtype of the data and of every returned tensor.
        device: Device of the data.
        lam: Coefficient of the ``lam * ||x||^2`` regulariser in every f_m.
        L: Smoothness constant of f.
        mu: Strong-convexity constant of f.
        delta: Hessian similarity: ``||∇²f_m(x) - ∇²f(x)||_2 <= delta`` for all m (see subclasses).
        x_star: Minimiser of f, shape (d,).
        f_star: ``f(x_star)``.
    """

    A: Tensor
    b: Tensor
    num_workers: int
    dim: int
    n_per_worker: int
    dtype: torch.dtype
    device: torch.device
    lam: float
    L: float
    mu: float
    delta: float
    x_star: Tensor
    f_star: float

    def __init__(self, A: Tensor, b: Tensor, lam: float) -> None:
        if not isinstance(A, Tensor) or A.dim() != 3 or A.shape[0] < 1 or A.shape[1] < 1 or A.shape[2] < 1:
            raise ValueError(f"A must be a non-empty 3-D tensor of shards (M, n, d), got {_describe(A)}")
        if not isinstance(b, Tensor) or tuple(b.shape) != tuple(A.shape[:2]):
            raise ValueError(f"b must have shape (M, n) = {tuple(A.shape[:2])} to match A, got {_describe(b)}")
        check_dtype(A.dtype)
        if b.dtype != A.dtype or b.device != A.device:
            raise ValueError(f"b must share A's dtype and device ({A.dtype}, {A.device}), got ({b.dtype}, {b.device})")
        if not bool(torch.isfinite(A).all()) or not bool(torch.isfinite(b).all()):
            raise ValueError("A and b must be finite (found NaN or inf in the data)")
        self.A = A
        self.b = b
        self.num_workers, self.n_per_worker, self.dim = (int(s) for s in A.shape)
        self.dtype = A.dtype
        self.device = A.device
        self.lam = check_float(lam, "lam")

    # ---------------------------------------------------------------- objective

    @abstractmethod
    def worker_losses(self, x: Tensor) -> Tensor:
        """Every worker's local objective ``f_m(x)``, shape (M,) (differentiable in ``x``)."""

    def loss(self, x: Tensor) -> float:
        """The full objective ``f(x) = (1/M) Σ_m f_m(x)``."""
        return float(self.worker_losses(x).mean())

    def suboptimality(self, x: Tensor) -> float:
        """``f(x) - f*`` (subclasses with a closed form avoid the cancellation of two losses)."""
        return self.loss(x) - self.f_star

    def worker_grads(self, X: Tensor, workers: Tensor | Sequence[int] | None = None) -> Tensor:
        """Local gradients, vectorised over workers.

        Args:
            X: Either one point of shape (d,), at which every selected worker is evaluated, or R points
                of shape (R, d), row r evaluated with worker ``workers[r]``'s loss.
            workers: Worker ids (R,), each in [0, M); repeats allowed. Default ``arange(M)`` (R = M).

        Returns:
            Tensor of shape (R, d): row r is ``∇f_{workers[r]}(X or X[r])``.

        Raises:
            ValueError: Bad shapes or worker ids out of range.
        """
        idx = self._resolve_workers(workers)
        R = self.num_workers if idx is None else idx.shape[0]
        X = self._as_points(X, R)
        return self._worker_grads(X, idx)

    def grad(self, x: Tensor) -> Tensor:
        """The full gradient ``∇f(x)``, shape (d,)."""
        return self.worker_grads(self._as_point(x, "x")).mean(0)

    @abstractmethod
    def _worker_grads(self, X: Tensor, idx: Tensor | None) -> Tensor:
        """Gradients for checked inputs: ``X`` is (d,) or (R, d); ``idx`` is None (all workers) or (R,)."""

    @abstractmethod
    def hub_prox(self, x_k: Tensor, t: Tensor, theta: float, worker: int = 0) -> Tensor:
        """``argmin_x <t, x - x_k> + ||x - x_k||^2 / (2 theta) + f_worker(x)``, shape (d,)."""

    # ---------------------------------------------------------------- device

    def to(self: _P, device: torch.device | str) -> _P:
        """Move every tensor of the problem to ``device`` (in place) and return the problem."""
        device = torch.device(device)
        for name, value in list(vars(self).items()):
            if isinstance(value, Tensor):
                setattr(self, name, value.to(device))
        self.device = device
        self._clear_caches()
        return self

    def _clear_caches(self) -> None:
        """Drop device-bound caches (overridden by subclasses that keep factorizations)."""
        return None

    # ---------------------------------------------------------------- checks

    def _as_point(self, x: Tensor, name: str) -> Tensor:
        x = torch.as_tensor(x)
        if x.shape != (self.dim,):
            raise ValueError(f"{name} must have shape (d,) = ({self.dim},), got {tuple(x.shape)}")
        return x.to(dtype=self.dtype, device=self.device)

    def _as_points(self, X: Tensor, R: int) -> Tensor:
        X = torch.as_tensor(X)
        if X.dim() == 1:
            return self._as_point(X, "X")
        if X.dim() != 2 or X.shape != (R, self.dim):
            raise ValueError(
                f"X must have shape (d,) = ({self.dim},) or (R, d) = ({R}, {self.dim}) with R = len(workers), "
                f"got {tuple(X.shape)}"
            )
        return X.to(dtype=self.dtype, device=self.device)

    def _resolve_workers(self, workers: Tensor | Sequence[int] | None) -> Tensor | None:
        if workers is None:
            return None
        idx = torch.as_tensor(workers)
        if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise ValueError(f"workers must be a 1-D integer tensor of worker ids, got {_describe(idx)}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_workers):
            raise ValueError(
                f"workers ids must lie in [0, {self.num_workers}), got min {int(idx.min())} max {int(idx.max())}"
            )
        idx = idx.to(device=self.device, dtype=torch.long)
        if idx.shape[0] == self.num_workers and torch.equal(idx, torch.arange(self.num_workers, device=self.device)):
            return None  # every worker in order (the simulator's oracle): no gather copy of the (M, ...) data
        return idx

    def _check_worker(self, worker: int) -> int:
        if isinstance(worker, bool):
            raise ValueError(f"worker must be an int in [0, {self.num_workers}), got {worker!r}")
        try:
            worker = operator.index(worker)
        except TypeError:
            raise ValueError(f"worker must be an int in [0, {self.num_workers}), got {worker!r}") from None
        if not 0 <= worker < self.num_workers:
            raise ValueError(f"worker must be an int in [0, {self.num_workers}), got {worker}")
        return worker

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(M={self.num_workers}, n={self.n_per_worker}, d={self.dim}, lam={self.lam:.4g}, "
            f"L={self.L:.4g}, mu={self.mu:.4g}, delta={self.delta:.4g}, dtype={self.dtype}, device={self.device})"
        )
