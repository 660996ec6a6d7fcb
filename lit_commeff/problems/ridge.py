"""Distributed ridge regression with exact constants and a closed-form hub prox."""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from lit_commeff.problems.base import Problem, check_dtype, check_float, split_shards
from lit_commeff.problems.libsvm import load_libsvm

#: How many (theta, worker) Cholesky factors :meth:`Ridge.hub_prox` keeps (least recently used dropped).
PROX_CACHE_SIZE = 16

#: ``grad_path="auto"`` takes the sparse data path when ``SPARSE_COST * nnz(A) < M d²``: a sparse product
#: costs a few times a dense flop per stored entry, and the data path makes two of them (measured on CPU).
SPARSE_COST = 4

GradPath = Literal["auto", "hessian", "data"]


def _ridge_losses(A: Tensor, b: Tensor, lam: float, x: Tensor) -> Tensor:
    """``(1/n)||A_m x - b_m||^2 + lam ||x||^2`` for every shard, shape (M,)."""
    residual = A @ x - b
    return residual.square().mean(-1) + lam * (x @ x)


def _csr_parts(row: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """CSR ``(crow, col, values)`` from COO entries, int32 indices where they fit (a faster product on CPU).

    Kept as plain tensors, so the problem still deep-copies, pickles and moves with :meth:`Problem.to`;
    :func:`_csr` wraps them (no copy) for each product.
    """
    matrix = torch.sparse_coo_tensor(torch.stack([row, col]), values, shape).coalesce().to_sparse_csr()
    crow, cols = matrix.crow_indices(), matrix.col_indices()
    if max(*shape, values.numel()) < 2**31:
        crow, cols = crow.to(torch.int32), cols.to(torch.int32)
    return crow, cols, matrix.values()


def _csr(parts: tuple[Tensor, Tensor, Tensor], shape: tuple[int, int]) -> Tensor:
    return torch.sparse_csr_tensor(*parts, shape, check_invariants=False)


class Ridge(Problem):
    """Ridge regression split over M workers (the paper's first experiment).

    ``f_m(x) = (1/n) ||A_m x - b_m||^2 + lam ||x||^2`` and ``f = (1/M) Σ_m f_m``. Every constant is exact:
    with ``H_m = (2/n) A_mᵀA_m + 2 lam I`` (the Hessian of f_m) and ``H = (1/M) Σ_m H_m``,
    ``L = λ_max(H)``, ``mu = λ_min(H)``, ``delta = max_m ||H_m - H||_2`` and ``x_star = H⁻¹ (1/M) Σ_m c_m``
    with ``c_m = (2/n) A_mᵀ b_m``.

    Default regularisation: λ = L/100 where L is the smoothness of the data term of the full objective,
    i.e. ``lam = L_data / lam_div`` with ``L_data = λ_max((2/N) AᵀA)`` over the N = M·n rows kept in the
    shards (the reference oracle's choice).

    Constants are computed in float64 whatever the working dtype.

    Every worker's gradient at one point, the simulator's most frequent call, takes one of two paths:
    ``hessian`` reads the (M, d, d) Hessians (``H_m x − c_m``, M d² flops); ``data`` makes two sparse
    products with the rows (``(2/n) A_mᵀ(A_m x − b_m) + 2 lam x``, about 4 nnz(A) flops), far cheaper on
    sparse LibSVM data with d in the hundreds (e.g. 50,000 rows × 300 features at 4% density: 1.2 M
    against 9 M). Both are exact; they differ by rounding (a few ulps).

    Args:
        A: Shards, shape (M, n, d) (see :func:`~lit_commeff.problems.split_shards`).
        b: Targets, shape (M, n), same dtype and device as ``A``.
        lam: Regularisation coefficient (>= 0). Default ``L_data / lam_div``.
        lam_div: Divisor of the default ``lam`` (> 0).
        grad_path: ``"hessian"``, ``"data"`` or ``"auto"`` (the data path when
            ``SPARSE_COST · nnz(A) < M d²``). Points given per worker and subsets of workers always take
            the Hessian path.

    Attributes:
        L_data: ``λ_max((2/N) AᵀA)``, the smoothness of the data term.
        L_tilde: Quadratic mean of the workers' smoothness constants, ``sqrt((1/M) Σ_m λ_max(H_m)²)``.
        H_m: Worker Hessians, shape (M, d, d).
        c_m: Linear terms ``(2/n) A_mᵀ b_m``, shape (M, d); ``∇f_m(x) = H_m x - c_m``.
        H: Hessian of f, shape (d, d).
    """

    def __init__(
        self, A: Tensor, b: Tensor, *, lam: float | None = None, lam_div: float = 100.0, grad_path: GradPath = "auto"
    ) -> None:
        super().__init__(A, b, 0.0 if lam is None else lam)
        lam_div = check_float(lam_div, "lam_div", positive=True)
        if grad_path not in ("auto", "hessian", "data"):
            raise ValueError(f"grad_path: got {grad_path!r}; use 'auto', 'hessian' or 'data'.")
        M, n, d = self.num_workers, self.n_per_worker, self.dim
        A64, b64 = A.to(torch.float64), b.to(torch.float64)
        gram_m = A64.transpose(1, 2) @ A64  # (M, d, d)
        self.L_data = float(torch.linalg.eigvalsh(gram_m.sum(0) * (2.0 / (M * n)))[-1])
        if lam is None:
            self.lam = self.L_data / lam_div
        eye = torch.eye(d, dtype=torch.float64, device=self.device)
        H_m = gram_m * (2.0 / n) + 2.0 * self.lam * eye
        c_m = torch.einsum("mni,mn->mi", A64, b64) * (2.0 / n)
        H = H_m.mean(0)
        eigs = torch.linalg.eigvalsh(H)
        self.mu, self.L = float(eigs[0]), float(eigs[-1])
        self.delta = float(torch.linalg.eigvalsh(H_m - H).abs().max())
        self.L_tilde = float(torch.linalg.eigvalsh(H_m)[:, -1].square().mean().sqrt())
        x_star = torch.linalg.solve(H, c_m.mean(0))
        self.f_star = float(_ridge_losses(A64, b64, self.lam, x_star).mean())
        self.x_star = x_star.to(self.dtype)
        self.H_m = H_m.to(self.dtype)
        self.c_m = c_m.to(self.dtype)
        self.H = H.to(self.dtype)
        self._prox_cache: OrderedDict[tuple[float, int], Tensor] = OrderedDict()
        nnz = int(torch.count_nonzero(A))
        if grad_path == "auto":
            grad_path = "data" if SPARSE_COST * nnz < M * d * d else "hessian"
        #: The path every worker's gradient at one point takes (``"hessian"`` or ``"data"``).
        self.grad_path: str = grad_path
        # data path: A as a CSR matrix (M n, d), and its block transpose (M d, M n) whose row (m, j) holds A_m[:, j]
        self._rows: tuple[Tensor, Tensor, Tensor] | None = None
        self._rows_t: tuple[Tensor, Tensor, Tensor] | None = None
        if grad_path == "data":
            self._build_sparse()

    def _build_sparse(self) -> None:
        M, n, d = self.num_workers, self.n_per_worker, self.dim
        flat = self.A.reshape(M * n, d)
        row, col = flat.nonzero().unbind(1)
        values = flat[row, col]
        with warnings.catch_warnings():  # torch calls its CSR support beta; the two products used here are stable
            warnings.simplefilter("ignore", UserWarning)
            self._build_csr(row, col, values)

    def _build_csr(self, row: Tensor, col: Tensor, values: Tensor) -> None:
        M, n, d = self.num_workers, self.n_per_worker, self.dim
        block_row = (row // n) * d + col
        self._rows = _csr_parts(row, col, values, (M * n, d))
        self._rows_t = _csr_parts(block_row, row, values, (M * d, M * n))

    @classmethod
    def from_data(
        cls,
        A: Tensor,
        b: Tensor,
        workers: int,
        *,
        lam: float | None = None,
        lam_div: float = 100.0,
        grad_path: GradPath = "auto",
        seed: int = 0,
        perm: Tensor | Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> Ridge:
        """Shuffle ``(A, b)`` (N rows), split it into ``workers`` equal shards and build the problem.

        Args:
            A: Design matrix, shape (N, d).
            b: Targets, shape (N,).
            workers: Number of workers M (1 <= M <= N); the last ``N mod M`` shuffled rows are dropped.
            lam: Regularisation coefficient. Default: λ = L/100 where L is the smoothness of the data term
                of the full objective (``L_data / lam_div``, ``L_data = λ_max((2/N) AᵀA)`` over kept rows).
            lam_div: Divisor of the default ``lam``.
            grad_path: How every worker's gradient is computed (see :class:`Ridge`).
            seed: Seed of the shuffle (see :func:`~lit_commeff.problems.split_shards`).
            perm: Explicit row permutation, overriding ``seed``.
            dtype: Working dtype.
            device: Device of the data.

        Returns:
            The :class:`Ridge` problem.
        """
        dtype = check_dtype(dtype)
        A = torch.as_tensor(A).to(dtype=dtype, device=device)
        b = torch.as_tensor(b).to(dtype=dtype, device=device)
        A_shards, b_shards = split_shards(A, b, workers, seed, perm=perm)
        return cls(A_shards, b_shards, lam=lam, lam_div=lam_div, grad_path=grad_path)

    @classmethod
    def from_libsvm(
        cls, path: str | os.PathLike[str], workers: int, *, n_features: int | None = None, **kwargs
    ) -> Ridge:
        """Load a LibSVM file with :func:`~lit_commeff.problems.load_libsvm` and call :meth:`from_data`.

        Args:
            path: LibSVM file; labels are mapped to ±1 and used as regression targets.
            workers: Number of workers M.
            n_features: Feature count d (default: the largest index in the file).
            **kwargs: Keyword arguments of :meth:`from_data`.
        """
        A, b = load_libsvm(path, n_features=n_features, dtype=torch.float64)
        return cls.from_data(A, b, workers, **kwargs)

    def worker_losses(self, x: Tensor) -> Tensor:
        """``f_m(x) = (1/n)||A_m x - b_m||^2 + lam ||x||^2`` for every worker, shape (M,)."""
        return _ridge_losses(self.A, self.b, self.lam, self._as_point(x, "x"))

    def suboptimality(self, x: Tensor) -> float:
        """``f(x) - f* = (x - x*)ᵀ H (x - x*) / 2`` exactly (f is quadratic): O(d²), no cancellation."""
        e = self._as_point(x, "x") - self.x_star
        return float(e @ (self.H @ e)) / 2

    def grad(self, x: Tensor) -> Tensor:
        """``∇f(x) = H x - mean_m c_m`` in O(d²)."""
        return self.H @ self._as_point(x, "x") - self.c_m.mean(0)

    def _worker_grads(self, X: Tensor, idx: Tensor | None) -> Tensor:
        if idx is None and X.dim() == 1 and self._rows is not None and self._rows_t is not None:
            M, n, d = self.num_workers, self.n_per_worker, self.dim
            residual = (_csr(self._rows, (M * n, d)) @ X).sub_(self.b.reshape(-1))
            grads = (_csr(self._rows_t, (M * d, M * n)) @ residual).view(M, d)
            return grads.mul_(2.0 / self.n_per_worker).add_(X, alpha=2.0 * self.lam)
        H_m = self.H_m if idx is None else self.H_m[idx]
        c_m = self.c_m if idx is None else self.c_m[idx]
        if X.dim() == 1:
            return H_m @ X - c_m
        return torch.einsum("rij,rj->ri", H_m, X) - c_m

    def hub_prox(self, x_k: Tensor, t: Tensor, theta: float, worker: int = 0) -> Tensor:
        """Exact prox step of worker ``worker`` (the hub).

        Solves ``(I/theta + H_w) x = x_k/theta - t + c_w``, the optimality condition of
        ``argmin_x <t, x - x_k> + ||x - x_k||^2 / (2 theta) + f_w(x)``, with a Cholesky factor cached
        per ``(theta, worker)``.

        Args:
            x_k: Prox centre, shape (d,).
            t: Linear term, shape (d,).
            theta: Prox step (> 0).
            worker: Worker whose loss enters the prox, in [0, M).

        Returns:
            The minimiser, shape (d,).
        """
        theta = check_float(theta, "theta", positive=True)
        worker = self._check_worker(worker)
        x_k = self._as_point(x_k, "x_k")
        t = self._as_point(t, "t")
        key = (theta, worker)
        chol = self._prox_cache.get(key)
        if chol is None:
            system = self.H_m[worker] + torch.eye(self.dim, dtype=self.dtype, device=self.device) / theta
            chol = torch.linalg.cholesky(system)
            self._prox_cache[key] = chol
            if len(self._prox_cache) > PROX_CACHE_SIZE:
                self._prox_cache.popitem(last=False)
        else:
            self._prox_cache.move_to_end(key)
        rhs = x_k / theta - t + self.c_m[worker]
        return torch.cholesky_solve(rhs.unsqueeze(1), chol).squeeze(1)

    def _clear_caches(self) -> None:
        self._prox_cache.clear()
        if self.grad_path == "data":  # sparse tensors are rebuilt on the new device
            self._build_sparse()
