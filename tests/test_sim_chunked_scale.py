"""OLGA over worker slices (issue 20, B6 at 10,000 x 100,000): a sliced round equals a whole-block one.

``worker_slices`` keeps no (M, d) block: the same messages, seeds and ledger; the iterates differ only by
the order of the sums over workers. Small sizes, float64, so "equal" is to 1e-12.
"""

from __future__ import annotations

import pytest
import torch

from lit_commeff import sim
from lit_commeff.algorithms import OLGA, ProblemOracle
from lit_commeff.compression import build
from lit_commeff.options import OptionError
from lit_commeff.problems import Ridge, SeparableQuadratic
from lit_commeff.transport import SimulatorTransport


def _ridge() -> Ridge:
    g = torch.Generator().manual_seed(3)
    A = torch.randn(11 * 12, 9, generator=g, dtype=torch.float64)
    b = torch.randn(11 * 12, generator=g, dtype=torch.float64)
    return Ridge.from_data(A, b, 11)


def _olga(problem, hub: int, slices: int | None, **options) -> tuple[OLGA, SimulatorTransport]:
    transport = SimulatorTransport(num_workers=problem.num_workers, dim=problem.dim, hub=hub)
    oracle = ProblemOracle(problem, transport.workers, hub=hub)
    x0 = torch.zeros(problem.dim, dtype=torch.float64)
    alg = OLGA(
        transport=transport, oracle=oracle, x0=x0, compressor=build("randk", k=2, seed=5), mu=problem.mu,
        delta=problem.delta, preset="similarity", seed=1, worker_slices=slices, **options,
    )  # fmt: skip
    return alg, transport


@pytest.mark.parametrize("hub", [0, 4])
@pytest.mark.parametrize("slices", [1, 3, 10])
@pytest.mark.parametrize("accelerate", [True, False])
def test_sliced_rounds_equal_whole_block_rounds(hub: int, slices: int, accelerate: bool) -> None:
    problem = _ridge()
    whole, t_whole = _olga(problem, hub, None, accelerate=accelerate)
    sliced, t_sliced = _olga(problem, hub, slices, accelerate=accelerate)
    phases = set()
    for _ in range(40):
        phases.add(whole.phase)
        assert sliced.phase == whole.phase
        whole.step()
        sliced.step()
        torch.testing.assert_close(sliced.xk, whole.xk, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sliced.y, whole.y, rtol=1e-12, atol=1e-12)
        if accelerate:
            torch.testing.assert_close(sliced.z, whole.z, rtol=1e-12, atol=1e-12)
        rw, rs = t_whole.ledger.rounds[-1], t_sliced.ledger.rounds[-1]
        assert (rs.max_worker_bytes, rs.downlink_bytes) == (rw.max_worker_bytes, rw.downlink_bytes)
        assert t_sliced.ledger.summary() == t_whole.ledger.summary()
    assert {"anchor", "inner", "y"} <= phases or not accelerate
    assert sliced.G0 is None and whole.G0 is not None  # no (M, d) anchor block kept


def test_sim_run_worker_slices_same_history_on_separable_quadratic() -> None:
    problem = SeparableQuadratic(workers=9, dim=50, dtype=torch.float64)
    kw = {"compressor": ("randk", {"k": 3}), "rounds": 50, "preset": "similarity"}
    whole, sliced = sim.run(problem, "olga", **kw), sim.run(problem, "olga", worker_slices=4, **kw)
    assert [r["cc3"] for r in sliced.rows] == [r["cc3"] for r in whole.rows]
    assert [r["uplink_bytes"] for r in sliced.rows] == [r["uplink_bytes"] for r in whole.rows]
    for a, b in zip(sliced.rows, whole.rows, strict=True):
        assert a["rel_subopt"] == pytest.approx(b["rel_subopt"], rel=1e-9, abs=1e-15)


def test_worker_slices_rejects_what_it_does_not_stream() -> None:
    problem = _ridge()
    with pytest.raises(OptionError, match="worker_slices"):
        _olga(problem, 0, 0)
    with pytest.raises(OptionError, match="estimate_delta"):
        _olga(problem, 0, 3, gate=0.5)
    with pytest.raises(OptionError, match="diagnostics"):
        _olga(problem, 0, 3, diagnostics=True)


def test_separable_quadratic_half_storage() -> None:
    """float16 storage: gradients in float32, constants and x* of the stored (rounded) problem."""
    lean = SeparableQuadratic(workers=20, dim=30, storage_dtype=torch.float16)
    assert lean.h.dtype == torch.float16 and lean.c.dtype == torch.float16
    x = torch.randn(30)
    g = lean.worker_grads(x)
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, lean.h.float() * x - lean.c.float())
    torch.testing.assert_close(lean.worker_grads(x, torch.arange(5, 9)), g[5:9])  # contiguous slice, in place
    torch.testing.assert_close(lean.worker_grads(x, [7, 2]), g[[7, 2]])
    # x* minimises the stored problem: its full gradient vanishes there (up to float32 rounding)
    assert float(lean.grad(lean.x_star).abs().max()) < 1e-5
    assert lean.suboptimality(lean.x_star) < 1e-12
