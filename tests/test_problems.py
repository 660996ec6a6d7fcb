"""Ridge / Logistic problems: oracle constants, autograd gradients, vectorisation, prox optimality."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import jacrev

from lit_commeff.problems import Logistic, Problem, Ridge, load_libsvm, split_shards, synthetic_ridge

F64 = torch.float64
N_ROWS, DIM, WORKERS = 203, 6, 5  # 203 = 5 * 40 + 3: the remainder is dropped


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(N_ROWS, DIM, generator=gen, dtype=F64)
    A[:, 0] *= 3.0  # some conditioning
    y = A @ torch.randn(DIM, generator=gen, dtype=F64) + 0.5 * torch.randn(N_ROWS, generator=gen, dtype=F64)
    labels = torch.where(y > 0, 1.0, -1.0).to(F64)
    return A, y, labels


@pytest.fixture(scope="module")
def ridge() -> Ridge:
    A, y, _ = make_data()
    return Ridge.from_data(A, y, WORKERS, seed=3)


@pytest.fixture(scope="module")
def logistic() -> Logistic:
    A, _, labels = make_data()
    return Logistic.from_data(A, labels, WORKERS, seed=3)


@pytest.fixture(params=["ridge", "logistic"])
def problem(request: pytest.FixtureRequest, ridge: Ridge, logistic: Logistic) -> Problem:
    return ridge if request.param == "ridge" else logistic


def random_point(dim: int = DIM, seed: int = 1) -> torch.Tensor:
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ------------------------------------------------------------------ shards


def test_split_shards_shapes_seed_and_perm() -> None:
    A, y, _ = make_data()
    A_s, b_s = split_shards(A, y, WORKERS, seed=7)
    n = N_ROWS // WORKERS
    assert A_s.shape == (WORKERS, n, DIM) and b_s.shape == (WORKERS, n)
    A_s2, _ = split_shards(A, y, WORKERS, seed=7)
    A_s3, _ = split_shards(A, y, WORKERS, seed=8)
    assert torch.equal(A_s, A_s2) and not torch.equal(A_s, A_s3)
    perm = torch.randperm(N_ROWS, generator=torch.Generator().manual_seed(7))
    assert torch.equal(A_s.reshape(-1, DIM), A[perm[: n * WORKERS]])
    # an explicit permutation (e.g. numpy's) overrides the seed
    np_perm = np.random.default_rng(0).permutation(N_ROWS)
    A_p, b_p = split_shards(A, y, WORKERS, seed=123, perm=torch.from_numpy(np_perm))
    assert torch.equal(A_p[1], A[torch.from_numpy(np_perm[n : 2 * n])])
    assert torch.equal(b_p.reshape(-1), y[torch.from_numpy(np_perm[: n * WORKERS])])


def test_split_shards_rejects_bad_perm() -> None:
    A, y, _ = make_data()
    with pytest.raises(ValueError, match="perm"):
        split_shards(A, y, 2, perm=torch.zeros(N_ROWS, dtype=torch.long))
    with pytest.raises(ValueError, match="perm"):
        split_shards(A, y, 2, perm=torch.arange(N_ROWS - 1))


# ------------------------------------------------------------------ ridge vs the oracle's formulas


def oracle_ridge(A: np.ndarray, b: np.ndarray, workers: int, perm: np.ndarray, lam_div: float = 100.0) -> dict:
    """The numpy reference oracle's Ridge formulas, re-implemented."""
    n = len(b) // workers
    As = A[perm][: n * workers].reshape(workers, n, -1)
    bs = b[perm][: n * workers].reshape(workers, n)
    d = As.shape[2]
    Af = As.reshape(-1, d)
    lam = np.linalg.eigvalsh(2 / len(Af) * Af.T @ Af).max() / lam_div
    H_m = 2 / n * np.einsum("mni,mnj->mij", As, As) + 2 * lam * np.eye(d)
    c_m = 2 / n * np.einsum("mni,mn->mi", As, bs)
    H = H_m.mean(0)
    ev = np.linalg.eigvalsh(H)
    delta = max(np.abs(np.linalg.eigvalsh(Hm - H)).max() for Hm in H_m)
    xstar = np.linalg.solve(H, c_m.mean(0))

    def f(x: np.ndarray) -> float:
        return float(np.mean((As @ x - bs) ** 2) + lam * x @ x)

    def prox(theta: float, xk: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.linalg.inv(np.eye(d) / theta + H_m[0]) @ (xk / theta - t + c_m[0])

    return {
        "lam": lam,
        "mu": ev.min(),
        "L": ev.max(),
        "delta": delta,
        "xstar": xstar,
        "fstar": f(xstar),
        "f": f,
        "grads": lambda x: np.einsum("mij,j->mi", H_m, x) - c_m,
        "prox": prox,
        "H_m": H_m,
    }


@pytest.mark.parametrize("workers", [1, 4, 7])
def test_ridge_constants_match_oracle_formulas(workers: int) -> None:
    A, y, _ = make_data(seed=2)
    perm = np.random.default_rng(5).permutation(N_ROWS)
    ref = oracle_ridge(A.numpy(), y.numpy(), workers, perm)
    P = Ridge.from_data(A, y, workers, perm=torch.from_numpy(perm))
    assert (P.num_workers, P.n_per_worker, P.dim) == (workers, N_ROWS // workers, DIM)
    for name in ("lam", "mu", "L", "delta"):
        assert getattr(P, name) == pytest.approx(ref[name], rel=1e-12, abs=1e-13), name
    assert P.f_star == pytest.approx(ref["fstar"], rel=1e-12)
    np.testing.assert_allclose(P.x_star.numpy(), ref["xstar"], rtol=1e-10, atol=1e-12)
    x = random_point()
    np.testing.assert_allclose(P.worker_grads(x).numpy(), ref["grads"](x.numpy()), rtol=1e-10, atol=1e-12)
    assert P.loss(x) == pytest.approx(ref["f"](x.numpy()), rel=1e-12)
    t = random_point(seed=9)
    np.testing.assert_allclose(
        P.hub_prox(x, t, 0.3).numpy(), ref["prox"](0.3, x.numpy(), t.numpy()), rtol=1e-10, atol=1e-12
    )
    L_m = [np.linalg.eigvalsh(H).max() for H in ref["H_m"]]
    assert P.L_tilde == pytest.approx(np.sqrt(np.mean(np.square(L_m))), rel=1e-12)
    assert P.L_tilde >= P.L * (1 - 1e-12)
    if workers == 1:
        assert P.delta == pytest.approx(0.0, abs=1e-12)


def test_ridge_explicit_lam_and_lam_div() -> None:
    A, y, _ = make_data()
    P = Ridge.from_data(A, y, 3, lam=0.25)
    assert P.lam == 0.25
    P10 = Ridge.from_data(A, y, 3, lam_div=10.0)
    assert P10.lam == pytest.approx(P10.L_data / 10.0)
    assert P10.mu >= 2 * P10.lam * (1 - 1e-12)


def test_ridge_from_libsvm_equals_from_data(tmp_path: Path) -> None:
    A, _, labels = make_data()
    lines = []
    for row, lab in zip(A.tolist(), labels.tolist(), strict=True):
        lines.append(f"{int(lab):+d} " + " ".join(f"{j + 1}:{v!r}" for j, v in enumerate(row) if v != 0) + " \n")
    path = tmp_path / "small.svm"
    path.write_text("".join(lines))
    A2, b2 = load_libsvm(path)
    assert torch.equal(A2, A) and torch.equal(b2, labels)
    P = Ridge.from_libsvm(path, 4, seed=1)
    Q = Ridge.from_data(A, labels, 4, seed=1)
    assert (P.L, P.mu, P.delta, P.f_star) == (Q.L, Q.mu, Q.delta, Q.f_star)
    L = Logistic.from_libsvm(path, 4, n_features=DIM + 2, delta_points=2)
    assert L.dim == DIM + 2


# ------------------------------------------------------------------ gradients


def test_worker_grads_match_autograd(problem: Problem) -> None:
    x = random_point(seed=4)
    jac = jacrev(problem.worker_losses)(x)  # (M, d): row m = ∇f_m(x)
    torch.testing.assert_close(problem.worker_grads(x), jac, rtol=1e-10, atol=1e-12)
    x_req = x.clone().requires_grad_(True)
    problem.worker_losses(x_req).mean().backward()
    torch.testing.assert_close(problem.grad(x), x_req.grad, rtol=1e-10, atol=1e-12)
    assert problem.loss(x) == pytest.approx(float(problem.worker_losses(x).mean()))


def test_vectorised_worker_grads_equal_a_loop(problem: Problem) -> None:
    M = problem.num_workers
    X = torch.randn(M, problem.dim, generator=torch.Generator().manual_seed(11), dtype=F64)
    loop = torch.stack([jacrev(problem.worker_losses)(X[m])[m] for m in range(M)])
    torch.testing.assert_close(problem.worker_grads(X), loop, rtol=1e-10, atol=1e-12)
    # a subset with repeats, one point per row
    workers = torch.tensor([3, 0, 3, 1])
    Xs = X[:4]
    rows = torch.stack([problem.worker_grads(Xs[r], [int(w)])[0] for r, w in enumerate(workers)])
    torch.testing.assert_close(problem.worker_grads(Xs, workers), rows, rtol=0, atol=1e-13)
    # a subset at one shared point
    shared = problem.worker_grads(X[0], workers=[4, 2])
    torch.testing.assert_close(shared, problem.worker_grads(X[0])[[4, 2]], rtol=0, atol=1e-13)


def test_worker_grads_shape_errors(problem: Problem) -> None:
    with pytest.raises(ValueError, match="X must have shape"):
        problem.worker_grads(torch.zeros(problem.num_workers + 1, problem.dim, dtype=F64))
    with pytest.raises(ValueError, match="X must have shape"):
        problem.worker_grads(torch.zeros(2, problem.dim, dtype=F64), workers=[0, 1, 2])
    with pytest.raises(ValueError, match="workers"):
        problem.worker_grads(torch.zeros(problem.dim, dtype=F64), workers=[problem.num_workers])
    with pytest.raises(ValueError, match="workers"):
        problem.worker_grads(torch.zeros(problem.dim, dtype=F64), workers=[-1])
    with pytest.raises(ValueError, match="x must have shape"):
        problem.loss(torch.zeros(problem.dim + 1, dtype=F64))


def test_logistic_hessians_match_autograd(logistic: Logistic) -> None:
    x = random_point(seed=6)
    H = logistic.worker_hessians(x)
    for m in range(logistic.num_workers):
        expected = jacrev(jacrev(lambda z, m=m: logistic.worker_losses(z)[m]))(x)
        torch.testing.assert_close(H[m], expected, rtol=1e-10, atol=1e-12)


def test_logistic_loss_is_stable_for_huge_margins(logistic: Logistic) -> None:
    x = 1e4 * logistic.x_star / logistic.x_star.norm()
    assert math.isfinite(logistic.loss(x)) and math.isfinite(logistic.loss(-x))
    assert torch.isfinite(logistic.grad(-x)).all()


# ------------------------------------------------------------------ optimum and constants


def test_x_star_has_zero_gradient(problem: Problem) -> None:
    g0 = problem.grad(torch.zeros(problem.dim, dtype=F64)).norm()
    assert problem.grad(problem.x_star).norm() <= 1e-12 * g0
    assert problem.f_star == pytest.approx(problem.loss(problem.x_star), rel=1e-14)
    for seed in range(3):
        assert problem.loss(problem.x_star + 1e-3 * random_point(seed=seed)) > problem.f_star


def test_logistic_constants(logistic: Logistic) -> None:
    A = logistic.A.reshape(-1, logistic.dim).numpy()
    L_data = np.linalg.eigvalsh(A.T @ A / (4 * len(A))).max()
    assert logistic.L_data == pytest.approx(L_data, rel=1e-12)
    assert logistic.lam == pytest.approx(L_data / 100, rel=1e-12)
    assert math.isclose(logistic.L, L_data + 2 * logistic.lam, rel_tol=1e-12)
    As = logistic.A.numpy()
    L_m = [np.linalg.eigvalsh(a.T @ a / (4 * len(a))).max() + 2 * logistic.lam for a in As]
    assert logistic.L_tilde == pytest.approx(np.sqrt(np.mean(np.square(L_m))), rel=1e-12)
    assert logistic.mu == pytest.approx(2 * logistic.lam)
    assert logistic.delta_samples.shape == (8,)
    assert logistic.delta == float(logistic.delta_samples.max())
    for x in (logistic.x_star, torch.zeros(logistic.dim, dtype=F64), random_point(seed=8)):
        H_m = logistic.worker_hessians(x)
        H = H_m.mean(0)
        eig = torch.linalg.eigvalsh(H)
        assert logistic.mu <= eig[0] * (1 + 1e-12) and eig[-1] <= logistic.L * (1 + 1e-12)
    H_m = logistic.worker_hessians(logistic.x_star)
    at_star = torch.linalg.eigvalsh(H_m - H_m.mean(0)).abs().max()
    assert float(logistic.delta_samples[0]) == pytest.approx(float(at_star), rel=1e-10)
    assert logistic.delta >= float(at_star)


def test_logistic_rejects_non_binary_labels() -> None:
    A, y, _ = make_data()
    with pytest.raises(ValueError, match=r"b must hold labels in \{-1, \+1\}"):
        Logistic.from_data(A, y, 3)


# ------------------------------------------------------------------ hub prox


@pytest.mark.parametrize("theta", [1e-3, 0.5, 30.0, 1e4])
@pytest.mark.parametrize("worker", [0, 3])
def test_hub_prox_optimality(problem: Problem, theta: float, worker: int) -> None:
    x_k = random_point(seed=20)
    t = 2.0 * random_point(seed=21)
    x_plus = problem.hub_prox(x_k, t, theta, worker=worker)
    residual = t + (x_plus - x_k) / theta + problem.worker_grads(x_plus, [worker])[0]
    assert residual.norm() <= 1e-9
    assert x_plus.shape == (problem.dim,) and x_plus.dtype == F64


def test_ridge_prox_cache_is_reused_and_bounded(ridge: Ridge) -> None:
    x_k, t = random_point(seed=1), random_point(seed=2)
    first = ridge.hub_prox(x_k, t, 0.7)
    assert torch.equal(ridge.hub_prox(x_k, t, 0.7), first)
    for i in range(40):
        ridge.hub_prox(x_k, t, 1.0 + i)
    assert len(ridge._prox_cache) <= 16


def test_hub_prox_bad_arguments(problem: Problem) -> None:
    x = torch.zeros(problem.dim, dtype=F64)
    for theta in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="theta"):
            problem.hub_prox(x, x, theta)
    with pytest.raises(ValueError, match="worker"):
        problem.hub_prox(x, x, 1.0, worker=problem.num_workers)
    with pytest.raises(ValueError, match="t must have shape"):
        problem.hub_prox(x, torch.zeros(problem.dim + 1, dtype=F64), 1.0)


# ------------------------------------------------------------------ synthetic similarity


def test_synthetic_delta_grows_with_similarity() -> None:
    levels = [0.0, 0.05, 0.1, 0.3, 1.0, 2.0]
    deltas = [synthetic_ridge(workers=6, n=30, dim=8, similarity=s, seed=4).delta for s in levels]
    assert deltas[0] == pytest.approx(0.0, abs=1e-12)
    assert all(a < b for a, b in itertools.pairwise(deltas))
    for s, d in zip(levels[1:], deltas[1:], strict=True):
        assert d == pytest.approx(s**2 * deltas[-1] / 4.0, rel=1e-8)


def test_synthetic_identical_shards_and_attributes() -> None:
    P = synthetic_ridge(similarity=0.0)
    assert torch.equal(P.A[0], P.A[-1]) and torch.equal(P.b[0], P.b[-1])
    Q = synthetic_ridge(workers=3, n=20, dim=4, lam=0.5, dtype=torch.float32)
    assert (Q.num_workers, Q.n_per_worker, Q.dim, Q.lam) == (3, 20, 4, 0.5)
    assert Q.grad(torch.zeros(4)).dtype == torch.float32


# ------------------------------------------------------------------ argument checks and devices


@pytest.mark.parametrize("cls", [Ridge, Logistic])
def test_bad_arguments_name_the_field(cls: type[Ridge] | type[Logistic]) -> None:
    A, _, labels = make_data()
    with pytest.raises(ValueError, match="workers"):
        cls.from_data(A, labels, 0)
    with pytest.raises(ValueError, match="workers"):
        cls.from_data(A, labels, N_ROWS + 1)
    with pytest.raises(ValueError, match="lam"):
        cls.from_data(A, labels, 2, lam=-0.1)
    with pytest.raises(ValueError, match="lam_div"):
        cls.from_data(A, labels, 2, lam_div=0.0)
    with pytest.raises(ValueError, match="dtype"):
        cls.from_data(A, labels, 2, dtype=torch.int32)
    with pytest.raises(ValueError, match="b must"):
        cls.from_data(A, labels[:-1], 2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"n": 5, "dim": 5}, "n"),
        ({"similarity": -1.0}, "similarity"),
        ({"lam": -1}, "lam"),
        ({"dim": 0}, "dim"),
    ],
)
def test_synthetic_bad_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        synthetic_ridge(**kwargs)


def test_to_device(device: str) -> None:
    A, _, labels = make_data()
    for P in (Ridge.from_data(A, labels, 3), Logistic.from_data(A, labels, 3, delta_points=2)):
        ref_prox = P.hub_prox(P.x_star.cpu(), torch.ones(DIM, dtype=F64), 0.5).cpu()
        assert P.to(device) is P and P.A.device.type == device and P.x_star.device.type == device
        x = torch.zeros(DIM, dtype=F64, device=device)
        assert P.worker_grads(x).device.type == device
        out = P.hub_prox(P.x_star, torch.ones(DIM, dtype=F64, device=device), 0.5)
        torch.testing.assert_close(out.cpu(), ref_prox, rtol=1e-10, atol=1e-12)
        assert "M=3" in repr(P)


def test_ridge_closed_form_suboptimality_and_gradient_match_data_formulas():
    from lit_commeff.problems import synthetic_ridge

    p = synthetic_ridge(workers=4, n=30, dim=6, similarity=0.5, seed=2)
    x = torch.randn(6, dtype=torch.float64)
    assert p.suboptimality(x) == pytest.approx(p.loss(x) - p.f_star, rel=1e-9)
    assert torch.allclose(p.grad(x), p.worker_grads(x).mean(0), atol=1e-12)
