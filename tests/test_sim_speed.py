"""The simulator's fast paths (issue 20) compute what the slow ones did."""

from __future__ import annotations

import random

import pytest
import torch

from lit_commeff import sim
from lit_commeff.compression.seeding import SHARED_WORKER, derive_seed, derive_seeds
from lit_commeff.problems import Ridge
from lit_commeff.transport import SimulatorTransport


def _sparse_ridge(grad_path: str, workers: int = 8, n: int = 40, dim: int = 30, seed: int = 0) -> Ridge:
    g = torch.Generator().manual_seed(seed)
    A = (torch.rand(workers * n, dim, generator=g, dtype=torch.float64) < 0.1).to(torch.float64)
    A = A * torch.rand(workers * n, dim, generator=g, dtype=torch.float64)
    b = torch.randn(workers * n, generator=g, dtype=torch.float64)
    return Ridge.from_data(A, b, workers, grad_path=grad_path)  # type: ignore[arg-type]


def test_derive_seeds_equals_derive_seed_per_worker() -> None:
    rng = random.Random(0)
    for _ in range(50):
        seed, step = rng.randrange(2**63), rng.randrange(10**9)
        key, stream = rng.choice(["", "olga", "olga/dense"]), rng.choice([0, 1, 7])
        workers = [SHARED_WORKER, 0, 1, rng.randrange(10**6)]
        expected = [derive_seed(seed, step, w, key, stream) for w in workers]
        assert derive_seeds(seed, step, workers, key, stream).tolist() == expected


def test_ridge_auto_path_takes_sparse_data_when_cheaper() -> None:
    assert _sparse_ridge("auto").grad_path == "data"  # 10% dense: 4 nnz < M d²
    dense = Ridge.from_data(torch.randn(80, 5, dtype=torch.float64), torch.randn(80, dtype=torch.float64), 4)
    assert dense.grad_path == "hessian"
    with pytest.raises(ValueError, match="grad_path"):
        _sparse_ridge("csr")


def test_ridge_data_path_equals_hessian_path() -> None:
    data, hessian = _sparse_ridge("data"), _sparse_ridge("hessian")
    for x in (torch.zeros(30, dtype=torch.float64), torch.randn(30, dtype=torch.float64), hessian.x_star):
        torch.testing.assert_close(data.worker_grads(x), hessian.worker_grads(x), rtol=0, atol=1e-12)
    idx = torch.tensor([3, 0])  # subsets take the Hessian path on both
    assert torch.equal(data.worker_grads(x, idx), hessian.worker_grads(x, idx))


def test_ridge_data_path_runs_the_same_method() -> None:
    """OLGA on both paths: the same CC-3 counts to every target (the paths differ by a few ulps)."""
    runs = [
        sim.run(_sparse_ridge(p), "olga", compressor=("randk", {"k": 3}), preset="similarity", rounds=300)
        for p in ("data", "hessian")
    ]
    for eps in (1e-2, 1e-4, 1e-6, 1e-8):
        assert runs[0].cc3_to(eps) == runs[1].cc3_to(eps)
    assert runs[0].final["rel_subopt"] == pytest.approx(runs[1].final["rel_subopt"], rel=1e-6, abs=1e-14)


def test_full_worker_index_equals_no_index() -> None:
    problem = _sparse_ridge("hessian")
    x = torch.randn(30, dtype=torch.float64)
    assert torch.equal(problem.worker_grads(x, torch.arange(8)), problem.worker_grads(x))
    assert torch.equal(problem.worker_grads(x, list(range(8))), problem.worker_grads(x))


def test_simulator_transport_holds_the_hub() -> None:
    t = SimulatorTransport(num_workers=4, dim=3, hub=2)
    assert t.is_hub and t.hub_row == 2
    with pytest.raises(ValueError, match="hub"):
        SimulatorTransport(num_workers=4, dim=3, hub=4)


@pytest.mark.parametrize("hub", [0, 2])
@pytest.mark.parametrize("compressor", [("randk", {"k": 3}), ("qsgd", {"s": 4})])
def test_chunked_round_equals_unchunked(hub: int, compressor: tuple) -> None:
    """``chunk_workers``: OLGA's state and ledger after every round equal the whole-block run's, bit for bit."""
    from lit_commeff.algorithms import OLGA, ProblemOracle
    from lit_commeff.compression import build
    from lit_commeff.problems import SeparableQuadratic

    problem = SeparableQuadratic(workers=7, dim=40, dtype=torch.float64)
    runs = []
    for chunk in (None, 2, 3):
        transport = SimulatorTransport(num_workers=7, dim=40, hub=hub, chunk_workers=chunk)
        alg = OLGA(
            transport=transport, oracle=ProblemOracle(problem, transport.workers, hub=hub),
            x0=torch.zeros(40, dtype=torch.float64), compressor=build(compressor[0], **compressor[1]),
            mu=problem.mu, delta=problem.delta, preset="similarity", p=0.3, seed=1,
        )  # fmt: skip
        states = []
        for _ in range(25):
            alg.step()
            states.append((alg.phase, alg.xk.clone(), alg.y.clone(), transport.ledger.uplink_bytes))
        runs.append((states, transport.ledger.summary()))
    for states, summary in runs[1:]:
        assert summary == runs[0][1]
        for (phase, xk, y, up), (phase0, xk0, y0, up0) in zip(states, runs[0][0], strict=True):
            assert (phase, up) == (phase0, up0)
            assert torch.equal(xk, xk0) and torch.equal(y, y0)


def test_sim_run_chunk_workers_same_history() -> None:
    problem = _sparse_ridge("hessian")
    kw = {"compressor": ("randk", {"k": 2}), "rounds": 60}
    whole, chunked = sim.run(problem, "diana", **kw), sim.run(problem, "diana", chunk_workers=3, **kw)
    assert whole.rows == chunked.rows
    with pytest.raises(ValueError, match="chunk_workers"):
        sim.run(problem, "diana", chunk_workers=0, **kw)


def test_separable_quadratic_lean_build_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``LEAN_ELEMENTS`` the problem is drawn slice by slice: the same draws, centring rounded in float32."""
    from lit_commeff.problems import separable

    whole = separable.SeparableQuadratic(workers=50, dim=64)
    monkeypatch.setattr(separable, "LEAN_ELEMENTS", 7 * 64)  # slices of 7 workers
    lean = separable.SeparableQuadratic(workers=50, dim=64)
    assert torch.equal(lean.c, whole.c)
    torch.testing.assert_close(lean.h, whole.h, rtol=0, atol=1e-5)
    assert lean.delta == pytest.approx(whole.delta, rel=1e-5)
    assert lean.L_tilde == pytest.approx(whole.L_tilde, rel=1e-6)
    assert lean.f_star == pytest.approx(whole.f_star, rel=1e-12)  # slice sums of the same draws
    x = torch.randn(64)
    assert torch.equal(lean.worker_grads(x, torch.arange(50)), lean.worker_grads(x))


def test_ridge_data_path_copies_pickles_and_moves() -> None:
    import copy
    import pickle

    problem = _sparse_ridge("data")
    x = torch.randn(30, dtype=torch.float64)
    expected = problem.worker_grads(x)
    for other in (copy.deepcopy(problem), pickle.loads(pickle.dumps(problem)), problem.to("cpu")):
        assert torch.equal(other.worker_grads(x), expected)
