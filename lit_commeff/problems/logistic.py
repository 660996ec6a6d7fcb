"""Distributed ℓ2-regularised logistic regression with a Newton hub prox."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from lit_commeff.problems.base import Problem, check_dtype, check_float, check_int, split_shards
from lit_commeff.problems.libsvm import load_libsvm

#: Newton iteration cap of :meth:`Logistic.hub_prox` and of the x_star solve.
NEWTON_MAX_ITER = 50
#: Relative gradient-norm target of :meth:`Logistic.hub_prox` (relative to ``||t|| + ||∇f_w(x_k)||``).
PROX_GTOL = 1e-12
#: Relative gradient-norm target of the x_star solve (relative to ``||∇f(0)||``).
XSTAR_GTOL = 1e-13


def _logistic_losses(A: Tensor, b: Tensor, lam: float, x: Tensor) -> Tensor:
    """``(1/n) Σ log(1 + exp(-b <a, x>)) + lam ||x||^2`` per shard, shape (R,); stable for any margin."""
    margins = b * (A @ x)
    return torch.logaddexp(torch.zeros_like(margins), -margins).mean(-1) + lam * (x @ x)


def _logistic_grads(A: Tensor, b: Tensor, lam: float, X: Tensor) -> Tensor:
    """Gradients per shard: ``A`` (R, n, d), ``b`` (R, n), ``X`` (d,) or (R, d); returns (R, d)."""
    Ax = A @ X if X.dim() == 1 else torch.einsum("rnd,rd->rn", A, X)
    coef = -b * torch.sigmoid(-b * Ax) / A.shape[1]
    return torch.einsum("rnd,rn->rd", A, coef) + 2.0 * lam * X


def _logistic_hessians(A: Tensor, b: Tensor, lam: float, x: Tensor) -> Tensor:
    """Hessians per shard at one point ``x`` (d,): ``(1/n) A_rᵀ diag(σ(z)σ(-z) b²) A_r + 2 lam I``, (R, d, d)."""
    z = b * (A @ x)
    weights = torch.sigmoid(z) * torch.sigmoid(-z) * b.square() / A.shape[1]
    eye = torch.eye(A.shape[2], dtype=A.dtype, device=A.device)
    return (A * weights.unsqueeze(-1)).transpose(1, 2) @ A + 2.0 * lam * eye


def _newton(
    value: Callable[[Tensor], float],
    grad_hess: Callable[[Tensor], tuple[Tensor, Tensor]],
    x0: Tensor,
    gtol: float,
    max_iter: int = NEWTON_MAX_ITER,
) -> tuple[Tensor, float, int]:
    """Newton's method with Armijo backtracking, for a strongly convex smooth objective.

    Far from the solution the step is halved until it decreases ``value`` by a quarter of the predicted
    amount; once the squared Newton decrement is below 1e-10·max(1, |value|) (where ``value``
    differences drown in rounding) full steps are taken. Stops at ``||g|| <= gtol``, after a step at
    rounding level, or after ``max_iter`` iterations.

    Returns:
        ``(x, ||g(x)||, iterations)``.
    """
    x = x0.clone()
    eps = torch.finfo(x.dtype).eps
    iterations = 0
    for it in range(max_iter):
        g, hess = grad_hess(x)
        gnorm = float(torch.linalg.vector_norm(g))
        if gnorm <= gtol:
            return x, gnorm, it
        chol, info = torch.linalg.cholesky_ex(hess)
        if int(info) == 0:
            dx = -torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1)
        else:  # singular Hessian (lam = 0 and rank-deficient data): least-squares direction
            dx = -(torch.linalg.pinv(hess, hermitian=True) @ g)
        decrement2 = -float(g @ dx)
        step = 1.0
        f0 = value(x)
        if decrement2 > 1e-10 * max(1.0, abs(f0)):
            while step > 1e-12 and value(x + step * dx) > f0 - 0.25 * step * decrement2:
                step *= 0.5
        x = x + step * dx
        iterations = it + 1
        if step * float(torch.linalg.vector_norm(dx)) <= 4 * eps * max(float(torch.linalg.vector_norm(x)), 1e-300):
            break  # the step is at rounding level: no further progress possible
    g, _ = grad_hess(x)
    return x, float(torch.linalg.vector_norm(g)), iterations


class Logistic(Problem):
    """Binary logistic regression with ℓ2 regularisation split over M workers (labels in {-1, +1}).

    ``f_m(x) = (1/n) Σ_j log(1 + exp(-b_j <a_j, x>)) + lam ||x||^2`` and ``f = (1/M) Σ_m f_m``.

    Default regularisation: λ = L/100 where L is the smoothness of the data term of the full objective:
    ``lam = L_data / lam_div`` with ``L_data = λ_max((1/(4N)) AᵀA)`` over the N = M·n kept rows
    (σ(z)σ(-z) <= 1/4 bounds the logistic curvature).

    Constants (computed in float64):

    * ``L = L_data + 2 lam``: an upper bound on λ_max(∇²f(x)) for every x (stated, not tight).
    * ``mu = 2 lam``: a lower bound on λ_min(∇²f(x)) (stated; the data term adds curvature near x_star).
    * ``delta``: an ESTIMATE of the Hessian similarity, ``max_{x in S} max_m ||∇²f_m(x) - ∇²f(x)||_2``
      over ``delta_points`` sampled points S: x_star, 0, and ``delta_points - 2`` seeded random points
      ``x_star + ξ`` with ``ξ ~ N(0, (r²/d) I)``, ``r = 0.1·max(||x_star||, 1)``. The per-point values
      are kept in :attr:`delta_samples`.
    * ``x_star``: Newton's method with backtracking on f from 0, to ``||∇f|| <= 1e-13·||∇f(0)||``
      (or rounding level); ``f_star = f(x_star)``.

    Args:
        A: Shards, shape (M, n, d).
        b: Labels in {-1, +1}, shape (M, n), same dtype and device as ``A``.
        lam: Regularisation coefficient (>= 0). Default ``L_data / lam_div``.
        lam_div: Divisor of the default ``lam`` (> 0).
        delta_points: Number of points the delta estimate samples (>= 1; 1 means x_star only,
            2 adds 0).
        delta_seed: Seed of the random sample points.

    Attributes:
        L_data: ``λ_max((1/(4N)) AᵀA)``.
        L_tilde: Quadratic mean of the workers' smoothness bounds
            ``L_m = λ_max((1/(4n)) A_mᵀA_m) + 2 lam``: ``sqrt((1/M) Σ_m L_m²)``.
        delta_samples: ``max_m ||∇²f_m(x) - ∇²f(x)||_2`` at each sampled point, shape (delta_points,).
    """

    def __init__(
        self,
        A: Tensor,
        b: Tensor,
        *,
        lam: float | None = None,
        lam_div: float = 100.0,
        delta_points: int = 8,
        delta_seed: int = 0,
    ) -> None:
        super().__init__(A, b, 0.0 if lam is None else lam)
        lam_div = check_float(lam_div, "lam_div", positive=True)
        delta_points = check_int(delta_points, "delta_points")
        delta_seed = check_int(delta_seed, "delta_seed", minimum=0)
        if not bool(((b == 1) | (b == -1)).all()):
            found = sorted({float(v) for v in b.unique()[:10].tolist()})
            raise ValueError(f"b must hold labels in {{-1, +1}} for logistic regression, found values {found}")
        M, n, d = self.num_workers, self.n_per_worker, self.dim
        N = M * n
        A64, b64 = A.to(torch.float64), b.to(torch.float64)
        A_flat = A64.reshape(1, N, d)  # the full objective as one shard (shards are equal-sized)
        b_flat = b64.reshape(1, N)
        self.L_data = float(torch.linalg.eigvalsh(A_flat[0].T @ A_flat[0] / (4.0 * N))[-1])
        if lam is None:
            self.lam = self.L_data / lam_div
        lam = self.lam
        self.L = self.L_data + 2.0 * lam
        L_workers = torch.linalg.eigvalsh(A64.transpose(1, 2) @ A64 / (4.0 * n))[:, -1] + 2.0 * lam
        self.L_tilde = float(L_workers.square().mean().sqrt())
        self.mu = 2.0 * lam

        x0 = torch.zeros(d, dtype=torch.float64, device=self.device)
        g0 = float(torch.linalg.vector_norm(_logistic_grads(A_flat, b_flat, lam, x0)[0]))
        x_star, gnorm, _ = _newton(
            lambda x: float(_logistic_losses(A_flat, b_flat, lam, x)[0]),
            lambda x: (_logistic_grads(A_flat, b_flat, lam, x)[0], _logistic_hessians(A_flat, b_flat, lam, x)[0]),
            x0,
            gtol=XSTAR_GTOL * g0,
        )
        if gnorm > 1e3 * XSTAR_GTOL * g0:
            warnings.warn(
                f"Logistic x_star: Newton stopped at ||∇f|| = {gnorm:.3g} (target {XSTAR_GTOL * g0:.3g}); "
                "f_star may be inaccurate (lam = 0 on separable data has no minimiser)",
                RuntimeWarning,
                stacklevel=2,
            )
        self.f_star = float(_logistic_losses(A_flat, b_flat, lam, x_star)[0])
        self.x_star = x_star.to(self.dtype)

        gen = torch.Generator(device="cpu").manual_seed(delta_seed)
        radius = 0.1 * max(float(torch.linalg.vector_norm(x_star)), 1.0)
        points = [x_star, x0][:delta_points]
        for _ in range(delta_points - len(points)):
            noise = torch.randn(d, generator=gen, dtype=torch.float64).to(self.device)
            points.append(x_star + noise * (radius / math.sqrt(d)))
        samples = []
        for x in points:  # a loop over sample points; workers are batched
            H_m = _logistic_hessians(A64, b64, lam, x)
            samples.append(torch.linalg.eigvalsh(H_m - H_m.mean(0)).abs().max())
        self.delta_samples = torch.stack(samples)
        self.delta = float(self.delta_samples.max())

    @classmethod
    def from_data(
        cls,
        A: Tensor,
        b: Tensor,
        workers: int,
        *,
        lam: float | None = None,
        lam_div: float = 100.0,
        seed: int = 0,
        perm: Tensor | Sequence[int] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        delta_points: int = 8,
    ) -> Logistic:
        """Shuffle ``(A, b)`` (N rows), split it into ``workers`` equal shards and build the problem.

        Args:
            A: Design matrix, shape (N, d).
            b: Labels in {-1, +1}, shape (N,).
            workers: Number of workers M (1 <= M <= N); the last ``N mod M`` shuffled rows are dropped.
            lam: Regularisation coefficient. Default: λ = L/100 where L is the smoothness of the data term
                of the full objective (``L_data / lam_div``, ``L_data = λ_max((1/(4N)) AᵀA)``).
            lam_div: Divisor of the default ``lam``.
            seed: Seed of the shuffle and of the delta sample points.
            perm: Explicit row permutation, overriding ``seed`` for the shuffle.
            dtype: Working dtype.
            device: Device of the data.
            delta_points: Number of points of the delta estimate.

        Returns:
            The :class:`Logistic` problem.
        """
        dtype = check_dtype(dtype)
        A = torch.as_tensor(A).to(dtype=dtype, device=device)
        b = torch.as_tensor(b).to(dtype=dtype, device=device)
        A_shards, b_shards = split_shards(A, b, workers, seed, perm=perm)
        return cls(A_shards, b_shards, lam=lam, lam_div=lam_div, delta_points=delta_points, delta_seed=seed)

    @classmethod
    def from_libsvm(
        cls, path: str | os.PathLike[str], workers: int, *, n_features: int | None = None, **kwargs
    ) -> Logistic:
        """Load a LibSVM file with :func:`~lit_commeff.problems.load_libsvm` and call :meth:`from_data`.

        Args:
            path: LibSVM file (labels are mapped to ±1).
            workers: Number of workers M.
            n_features: Feature count d (default: the largest index in the file).
            **kwargs: Keyword arguments of :meth:`from_data`.
        """
        A, b = load_libsvm(path, n_features=n_features, dtype=torch.float64)
        return cls.from_data(A, b, workers, **kwargs)

    def worker_losses(self, x: Tensor) -> Tensor:
        """``f_m(x)`` for every worker, shape (M,) (stable softplus; differentiable in ``x``)."""
        return _logistic_losses(self.A, self.b, self.lam, self._as_point(x, "x"))

    def _worker_grads(self, X: Tensor, idx: Tensor | None) -> Tensor:
        A = self.A if idx is None else self.A[idx]
        b = self.b if idx is None else self.b[idx]
        return _logistic_grads(A, b, self.lam, X)

    def worker_hessians(self, x: Tensor, workers: Tensor | Sequence[int] | None = None) -> Tensor:
        """Hessians ``∇²f_m(x)`` of the selected workers (default all) at one point, shape (R, d, d)."""
        idx = self._resolve_workers(workers)
        x = self._as_point(x, "x")
        A = self.A if idx is None else self.A[idx]
        b = self.b if idx is None else self.b[idx]
        return _logistic_hessians(A, b, self.lam, x)

    def hub_prox(self, x_k: Tensor, t: Tensor, theta: float, worker: int = 0) -> Tensor:
        """Prox step of worker ``worker`` (the hub), solved by Newton's method.

        Minimises ``φ(x) = <t, x - x_k> + ||x - x_k||^2 / (2 theta) + f_w(x)`` from the warm start
        ``x_k`` with Newton steps on the Hessian ``I/theta + ∇²f_w(x)`` and Armijo backtracking while far
        from the solution, to ``||∇φ|| <= 1e-12 (||t|| + ||∇f_w(x_k)||)`` or rounding level, at most
        50 iterations (a RuntimeWarning reports a solve that stops well short of the target).

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
        A, b, lam = self.A[worker : worker + 1], self.b[worker : worker + 1], self.lam
        inv_theta = 1.0 / theta

        def value(x: Tensor) -> float:
            diff = x - x_k
            return float(t @ diff + 0.5 * inv_theta * (diff @ diff) + _logistic_losses(A, b, lam, x)[0])

        def grad_hess(x: Tensor) -> tuple[Tensor, Tensor]:
            g = t + (x - x_k) * inv_theta + _logistic_grads(A, b, lam, x)[0]
            hess = _logistic_hessians(A, b, lam, x)[0]
            return g, hess + inv_theta * torch.eye(self.dim, dtype=self.dtype, device=self.device)

        scale = float(torch.linalg.vector_norm(t) + torch.linalg.vector_norm(_logistic_grads(A, b, lam, x_k)[0]))
        finfo = torch.finfo(self.dtype)
        gtol = max(PROX_GTOL, 100 * finfo.eps) * max(scale, finfo.tiny)  # float32 cannot reach 1e-12
        x, gnorm, _ = _newton(value, grad_hess, x_k, gtol)
        if gnorm > 1e3 * gtol:
            warnings.warn(
                f"Logistic.hub_prox: Newton stopped at ||∇φ|| = {gnorm:.3g} (target {gtol:.3g}) after "
                f"{NEWTON_MAX_ITER} iterations at most; theta={theta:g}, worker={worker}",
                RuntimeWarning,
                stacklevel=2,
            )
        return x
