"""Synthetic ridge problems with a tunable Hessian similarity, for tests and small experiments."""

from __future__ import annotations

import math

import torch

from lit_commeff.problems.base import check_dtype, check_float, check_int
from lit_commeff.problems.ridge import Ridge


def synthetic_ridge(
    workers: int = 8,
    n: int = 50,
    dim: int = 10,
    similarity: float = 0.1,
    lam: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Ridge:
    """A ridge problem whose shards share a base design plus a per-worker perturbation of size ``similarity``.

    Worker m gets ``A_m = B + s·E_m`` and ``b_m = A_m x_true + 0.1·ε + s·η_m``, with ``s = similarity``,
    a shared Gaussian base design ``B`` (n, d), shared noise ``ε`` and per-worker Gaussian ``E_m``, ``η_m``.
    Each ``E_m`` is projected onto the orthogonal complement of the column space of ``B`` (so
    ``Bᵀ E_m = 0``), which makes ``H_m - H = s² (2/n)(E_mᵀE_m - mean_k E_kᵀE_k)``: ``delta`` is exactly
    ``s²`` times the value at ``s = 1``, so it grows monotonically with ``similarity`` and is 0 (identical
    shards) at ``similarity = 0``. The draws depend on ``seed`` only, not on ``similarity``.

    Args:
        workers: Number of workers M (>= 1).
        n: Rows per worker (> dim, so the perturbation has room outside the column space of B).
        dim: Dimension d (>= 1).
        similarity: Perturbation scale s >= 0 (0 = identical shards; larger = less similar workers).
        lam: Regularisation coefficient (>= 0).
        seed: Seed of every random draw.
        dtype: Working dtype.

    Returns:
        A :class:`~lit_commeff.problems.Ridge` on the CPU.

    Raises:
        ValueError: An argument out of range (the message names it).
    """
    workers = check_int(workers, "workers")
    dim = check_int(dim, "dim")
    n = check_int(n, "n")
    if n <= dim:
        raise ValueError(f"n must exceed dim (got n={n}, dim={dim}): the per-worker perturbation lives outside col(B)")
    s = check_float(similarity, "similarity")
    lam = check_float(lam, "lam")
    seed = check_int(seed, "seed", minimum=0)
    dtype = check_dtype(dtype)

    gen = torch.Generator(device="cpu").manual_seed(seed)
    f64 = torch.float64
    B = torch.randn(n, dim, generator=gen, dtype=f64)
    x_true = torch.randn(dim, generator=gen, dtype=f64) / math.sqrt(dim)
    shared_noise = torch.randn(n, generator=gen, dtype=f64)
    G = torch.randn(workers, n, dim, generator=gen, dtype=f64)
    worker_noise = torch.randn(workers, n, generator=gen, dtype=f64)
    Q, _ = torch.linalg.qr(B)  # (n, dim) orthonormal basis of col(B)
    E = G - Q @ (Q.T @ G)  # broadcasts over workers: E_m ⟂ col(B)
    A = B + s * E
    b = A @ x_true + 0.1 * shared_noise + s * worker_noise
    return Ridge(A.to(dtype), b.to(dtype), lam=lam)
