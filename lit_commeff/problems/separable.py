"""A separable quadratic with M workers, cheap enough to simulate thousands of workers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Above this many worker-coordinates (M·d) the problem is drawn slice by slice into the working dtype.
LEAN_ELEMENTS = 2**24


class SeparableQuadratic:
    """``f_m(x) = ½ Σ_j h_mj x_j² − c_mᵀx`` with diagonal Hessians, for scale benchmarks (B6).

    Worker Hessians are ``h_m = h̄ ⊙ (1 + s ξ_m)`` around a common spectrum ``h̄`` spread over
    ``[mu, L]``, so δ = max_m ||h_m − mean h||_∞ is exact and controlled by ``similarity`` (s). Every
    operation is O(M d) or O(d): gradients of a block of workers, the exact hub prox, f − f*. It
    provides the same methods the simulator uses from :class:`~lit_commeff.problems.Problem`
    (duck-typed: it holds no data matrix).

    Args:
        workers: Number of workers M.
        dim: Dimension d.
        mu: Smallest curvature of the mean Hessian.
        L: Largest curvature of the mean Hessian.
        similarity: Relative spread s of worker curvatures, in [0, 1).
        seed: Seed of the draws.
        dtype: Working dtype (float32 keeps 10,000 x 100,000 blocks in memory budget).
        device: Where the tensors live.
        storage_dtype: Dtype of the stored (M, d) curvatures and linear terms (default ``dtype``). A narrower
            one (``torch.float16``) halves their memory, which at M = 10,000, d = 100,000 is the difference
            between 8 GB and 4 GB; gradients are still computed in ``dtype``. The problem is then the one with
            the rounded values: its mean Hessian, μ, L, δ, L̃, x* and f* are computed from the stored values.
    """

    def __init__(
        self,
        *,
        workers: int,
        dim: int,
        mu: float = 0.1,
        L: float = 10.0,
        similarity: float = 0.05,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        storage_dtype: torch.dtype | None = None,
    ) -> None:
        if workers < 1 or dim < 1:
            raise ValueError(f"workers/dim: got workers={workers}, dim={dim}; both must be >= 1.")
        if not 0 <= similarity < 1:
            raise ValueError(f"similarity: similarity={similarity} is out of range; use a value in [0, 1).")
        if not 0 < mu <= L:
            raise ValueError(f"mu/L: need 0 < mu <= L, got mu={mu}, L={L}.")
        g = torch.Generator(device="cpu").manual_seed(seed)
        self.num_workers, self.dim, self.dtype, self.device = workers, dim, dtype, torch.device(device)
        self.storage_dtype = storage = dtype if storage_dtype is None else storage_dtype
        if not storage.is_floating_point:
            raise ValueError(f"storage_dtype: {storage} is not a floating dtype; use e.g. torch.float16 or None.")
        base = torch.logspace(math.log10(mu), math.log10(L), dim, dtype=torch.float64)
        self.mu, self.L = float(base.min()), float(base.max())
        self.lam = 0.0
        self.n_per_worker = 1
        if workers * dim > LEAN_ELEMENTS:
            c_mean = self._build_lean(base, similarity, g)
        else:
            noise = torch.rand(workers, dim, generator=g, dtype=torch.float64) * 2 - 1
            h = base * (1 + similarity * noise)
            h = h - h.mean(0) + base  # mean Hessian exactly the base spectrum
            c = torch.randn(workers, dim, generator=g, dtype=torch.float64)
            self.delta = float((h - base).abs().max())
            self.L_tilde = float(h.max(dim=1).values.square().mean().sqrt())
            c_mean = c.mean(0)
            self.h = h.to(dtype=storage, device=self.device)
            self.c = c.to(dtype=storage, device=self.device)
        if storage != dtype:  # the problem is the rounded one: its constants from the stored values
            base, c_mean = self._stored_constants()
            self.mu, self.L = float(base.min()), float(base.max())
        self._x_star64 = c_mean / base
        self.f_star = float(-0.5 * (c_mean * self._x_star64).sum())
        self.h_mean = base.to(dtype=dtype, device=self.device)
        self.x_star = self._x_star64.to(dtype=dtype, device=self.device)
        self._c_mean: Tensor | None = None

    def _stored_constants(self) -> tuple[Tensor, Tensor]:
        """Mean curvatures and linear terms of the stored values (float64, on the CPU); sets δ and L̃ from them."""
        M, rows = self.num_workers, max(1, LEAN_ELEMENTS // self.dim)
        h_sum = torch.zeros(self.dim, dtype=torch.float64)
        c_sum = torch.zeros(self.dim, dtype=torch.float64)
        for a in range(0, M, rows):
            h_sum += self.h[a : a + rows].double().sum(0).cpu()
            c_sum += self.c[a : a + rows].double().sum(0).cpu()
        h_mean = h_sum / M
        delta, l_sq, on_device = 0.0, 0.0, h_mean.to(self.device)
        for a in range(0, M, rows):
            h = self.h[a : a + rows].double()
            delta = max(delta, float((h - on_device).abs().max()))
            l_sq += float(h.max(dim=1).values.square().sum())
        self.delta, self.L_tilde = delta, math.sqrt(l_sq / M)
        return h_mean, c_sum / M

    def _build_lean(self, base: Tensor, similarity: float, g: torch.Generator) -> Tensor:
        """Large M·d: draw and centre slices of workers into the working dtype (no float64 (M, d) block).

        The same draws in the same order as the small-problem path; the centring is applied in the working
        dtype, so values differ from a float64 centring by its rounding only.
        """
        M, d = self.num_workers, self.dim
        rows = max(1, LEAN_ELEMENTS // d)
        self.h = torch.empty(M, d, dtype=self.storage_dtype, device=self.device)
        self.c = torch.empty(M, d, dtype=self.storage_dtype, device=self.device)
        h_sum = torch.zeros(d, dtype=torch.float64)
        for a in range(0, M, rows):
            noise = torch.rand(min(rows, M - a), d, generator=g, dtype=torch.float64) * 2 - 1
            h = base * (1 + similarity * noise)
            h_sum += h.sum(0)
            self.h[a : a + rows] = h.to(self.storage_dtype)
        shift = (h_sum / M - base).to(device=self.device, dtype=self.storage_dtype)
        delta, l_sq = 0.0, 0.0
        for a in range(0, M, rows):
            h = self.h[a : a + rows].sub_(shift)  # mean Hessian the base spectrum (up to rounding)
            delta = max(delta, float((h.double() - base.to(self.device)).abs().max()))
            l_sq += float(h.double().max(dim=1).values.square().sum())
        self.delta, self.L_tilde = delta, math.sqrt(l_sq / M)
        c_sum = torch.zeros(d, dtype=torch.float64)
        for a in range(0, M, rows):
            c = torch.randn(min(rows, M - a), d, generator=g, dtype=torch.float64)
            c_sum += c.sum(0)
            self.c[a : a + rows] = c.to(self.storage_dtype)
        return c_sum / M  # mean of the linear terms, float64

    def worker_grads(self, X: Tensor, workers: Tensor | Sequence[int] | None = None) -> Tensor:
        """``h_m ⊙ x − c_m`` for a block of workers (one shared point or one point per row), in ``dtype``.

        A contiguous run of worker ids (every worker in order, or a slice ``a, a+1, …, b−1``) reads the stored
        rows in place, with no gathered copy of the curvatures.
        """
        idx = None if workers is None else torch.as_tensor(workers, device=self.device)
        if idx is None:
            return self._rows(X, 0, self.num_workers)
        n = idx.numel()
        first = int(idx[0]) if n else 0
        if n and int(idx[-1]) == first + n - 1 and torch.equal(idx, torch.arange(first, first + n, device=idx.device)):
            return self._rows(X, first, first + n)
        return self._promote(self.h[idx] * X - self.c[idx])

    def _rows(self, X: Tensor, start: int, stop: int) -> Tensor:
        h, c = (self.h, self.c) if (start, stop) == (0, self.num_workers) else (self.h[start:stop], self.c[start:stop])
        return self._promote(h * X - c)

    def _promote(self, g: Tensor) -> Tensor:
        return g if g.dtype == self.dtype else g.to(self.dtype)

    def grad(self, x: Tensor) -> Tensor:
        """``∇f(x) = h̄ ⊙ x − mean c``."""
        if self._c_mean is None:  # one pass over the (M, d) linear terms, not one per call
            self._c_mean = self.c.mean(0, dtype=self.dtype)
        return self.h_mean * x - self._c_mean

    def hub_prox(self, x_k: Tensor, t: Tensor, theta: float, worker: int = 0) -> Tensor:
        """Exact prox of the hub's separable quadratic."""
        c, h = self.c[worker].to(self.dtype), self.h[worker].to(self.dtype)
        return (x_k / theta - t + c) / (1 / theta + h)

    def suboptimality(self, x: Tensor) -> float:
        """``f(x) − f* = ½ Σ h̄_j (x_j − x*_j)²``."""
        e = x.double() - self._x_star64.to(x.device)
        return float(0.5 * (self.h_mean.double() * e * e).sum())

    def loss(self, x: Tensor) -> float:
        """``f(x)``."""
        return self.f_star + self.suboptimality(x)
