"""The transport's all-reduce, flag agreement and setup broadcast: values and ledger bytes, simulator and gloo.

One script of collectives runs in the simulator (a block of two workers) and on two gloo ranks (one
worker each); both must produce the same values and the same ledger, and the ledger must hold exactly the
bytes handed to each collective. The uncounted helpers of ``transport/objects.py`` must leave it alone.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _cli_utils import spawn_reports

from lit_commeff.algorithms import DiLoCo, ProblemOracle
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import DistributedTransport, SimulatorTransport
from lit_commeff.transport.distributed import DOWNLINKS
from lit_commeff.transport.objects import all_gather, gather_to_hub

WORLD = 2
DIM = 4  # ledger dense unit: 4 float64 = 32 bytes


def _rows(workers: torch.Tensor) -> torch.Tensor:
    """Worker w's row: exact binary fractions, so sums and means are exact on every transport."""
    w = workers.to(torch.float64).unsqueeze(1)
    return torch.cat([w + 1, 2 * (w + 1), -w, torch.full_like(w, 0.5)], dim=1)


def _script(transport) -> dict:
    """The collectives under test, in one fixed order; returns what every process sees."""
    x = _rows(transport.workers)
    before = x.clone()
    transport.begin_round()
    mean = transport.all_reduce(x, op="mean", tag="params")
    total = transport.all_reduce(x, op="sum", tag="sum")
    untouched = torch.equal(x, before)
    transport.begin_round()
    flags = transport.agree((transport.workers == 1).to(torch.int32))
    none_raised = transport.any_flag(False)
    one_raised = transport.any_flag(transport.workers == 1)
    transport.begin_round()
    param = torch.full((3,), 7.0) if transport.is_hub else torch.zeros(3)
    buffer = torch.full((2,), 9, dtype=torch.int64) if transport.is_hub else torch.zeros(2, dtype=torch.int64)
    transport.broadcast_parameters([param, buffer], tag="setup")
    ledger = transport.ledger
    rounds = [{k: v for k, v in vars(r).items() if k != "seconds"} for r in ledger.rounds]
    summary = ledger.summary()
    summary.pop("comm_time_s")
    return {
        "mean": mean.tolist(),
        "sum": total.tolist(),
        "untouched": untouched,
        "flags": flags.tolist(),
        "none_raised": none_raised,
        "one_raised": one_raised,
        "param": param.tolist(),
        "buffer": buffer.tolist(),
        "rounds": rounds,
        "summary": summary,
    }


def _ridge():
    return synthetic_ridge(workers=WORLD, n=20, dim=DIM, similarity=1.0, lam=0.1, seed=2)


def _diloco(transport, steps: int = 9) -> tuple[list[float], dict]:
    problem = _ridge()
    alg = DiLoCo(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(DIM, dtype=torch.float64),
        inner_steps=3,
        L=problem.L,
    )
    for _ in range(steps):
        alg.step()
    summary = transport.ledger.summary()
    summary.pop("comm_time_s")
    return alg.output().tolist(), summary


def _worker(rank: int, port: int, out: str) -> None:
    from lit_commeff.strategy.numeric import GuardedTransport, NonFiniteGuard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        report: dict = {}
        for downlink in DOWNLINKS:
            report[downlink] = _script(DistributedTransport(dim=DIM, dtype=torch.float64, downlink=downlink))
        # the uncounted helpers: values only, nothing in a ledger
        transport = DistributedTransport(dim=DIM, dtype=torch.float64)
        transport.begin_round()
        blobs = gather_to_hub(torch.arange(rank + 3, dtype=torch.uint8))
        gathered = all_gather(torch.tensor([10 * rank + 1], dtype=torch.int64))
        report["objects"] = {
            "blobs": None if blobs is None else [b.tolist() for b in blobs],
            "all_gather": [int(g) for g in gathered],
            "ledger_bytes": transport.ledger.uplink_bytes + transport.ledger.downlink_bytes,
        }
        # the guard: a poisoned all-reduce row is replaced by zeros, and every rank learns who saw it
        guard = NonFiniteGuard(names=["w"], numels=[DIM], rank=rank, world_size=WORLD)
        guarded = GuardedTransport(guard=guard, dim=DIM, dtype=torch.float64)
        guarded.begin_round()
        guard.begin(0)
        x = _rows(torch.tensor([rank]))
        if rank == 1:
            x[0, 2] = float("nan")
        mean = guarded.all_reduce(x)
        report["guard"] = {"mean": mean.tolist(), "faulty": guard.agree(guarded)}
        report["diloco"] = _diloco(DistributedTransport(dim=DIM, dtype=torch.float64))
        Path(f"{out}.{rank}").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def gloo_reports(tmp_path_factory):
    return spawn_reports(_worker, tmp_path_factory.mktemp("collectives"), WORLD)


@pytest.fixture(scope="module")
def simulated():
    return _script(SimulatorTransport(num_workers=WORLD, dim=DIM))


def test_all_reduce_flags_and_setup_broadcast_in_the_simulator(simulated):
    row = DIM * 8
    assert simulated["mean"] == [1.5, 3.0, -0.5, 0.5]
    assert simulated["sum"] == [3.0, 6.0, -1.0, 1.0]
    assert simulated["untouched"]
    assert simulated["flags"] == [0, 1]
    assert simulated["none_raised"] is False and simulated["one_raised"] is True
    all_reduces, agreements, setup = simulated["rounds"]
    # all-reduce: every worker, the hub too, hands its dense row: M contributions per call, one dense unit each
    assert all_reduces["allreduce_bytes"] == 2 * WORLD * row
    assert all_reduces["uplink_bytes"] == 2 * WORLD * row
    assert all_reduces["uplink_messages"] == 2 * WORLD
    assert all_reduces["max_worker_bytes"] == 2 * row and all_reduces["cc3"] == 2.0
    assert all_reduces["downlink_bytes"] == 0
    # three agreements: one int32 up from each non-hub worker, the M flags down to each; control traffic
    assert agreements["uplink_bytes"] == 3 * 4 * (WORLD - 1)
    assert agreements["downlink_bytes"] == 3 * 4 * WORLD * (WORLD - 1)
    assert agreements["uplink_messages"] == 0 and agreements["cc3"] == 0.0
    # the setup broadcast: every tensor at its own dtype's size, to each non-hub worker
    assert setup["downlink_bytes"] == (3 * 4 + 2 * 8) * (WORLD - 1)
    assert setup["uplink_bytes"] == 0
    summary = simulated["summary"]
    assert summary["control_bytes"] == agreements["uplink_bytes"] + agreements["downlink_bytes"]
    assert summary["cc2"] == 2 * WORLD
    assert summary["uplink_bytes_per_worker"] == [2 * row + 0, 2 * row + 3 * 4]  # worker 1 also sent its flags


@pytest.mark.parametrize("downlink", DOWNLINKS)
def test_gloo_gives_the_simulators_values_and_ledger(gloo_reports, simulated, downlink):
    for rank, report in enumerate(gloo_reports):
        seen = report[downlink]
        for key in ("mean", "sum", "untouched", "flags", "none_raised", "one_raised", "rounds", "summary"):
            assert seen[key] == simulated[key], (rank, key)
        assert seen["param"] == [7.0] * 3 and seen["buffer"] == [9, 9], rank  # every rank holds the hub's


def test_uncounted_helpers_gather_any_length_and_leave_the_ledger_alone(gloo_reports):
    hub, other = (r["objects"] for r in gloo_reports)
    assert hub["blobs"] == [[0, 1, 2], [0, 1, 2, 3]]
    assert other["blobs"] is None
    assert hub["all_gather"] == other["all_gather"] == [1, 11]
    assert hub["ledger_bytes"] == other["ledger_bytes"] == 0


def test_uncounted_helpers_without_a_process_group():
    blob = torch.arange(5, dtype=torch.uint8)
    assert [b.tolist() for b in gather_to_hub(blob)] == [blob.tolist()]
    assert [t.tolist() for t in all_gather(torch.tensor([3]))] == [[3]]
    with pytest.raises(ValueError, match=r"blob: expected a 1-D uint8 tensor"):
        gather_to_hub(torch.zeros(3))


def test_guarded_all_reduce_sends_zeros_for_a_poisoned_row_and_every_rank_learns_it(gloo_reports):
    for report in gloo_reports:
        assert report["guard"]["mean"] == [0.5, 1.0, 0.0, 0.25]  # rank 0's row over 2: rank 1 sent zeros
        assert report["guard"]["faulty"] == [1]


def test_diloco_over_gloo_matches_the_simulator(gloo_reports):
    x, ledger = _diloco(SimulatorTransport(num_workers=WORLD, dim=DIM))
    for report in gloo_reports:
        x_gloo, ledger_gloo = report["diloco"]
        torch.testing.assert_close(torch.tensor(x_gloo), torch.tensor(x), rtol=1e-12, atol=1e-14)
        assert ledger_gloo == ledger
    assert ledger["cc1"] == 3 and ledger["allreduce_bytes"] == 3 * WORLD * DIM * 8


def test_collective_arguments_are_validated_with_the_fix():
    transport = SimulatorTransport(num_workers=WORLD, dim=DIM)
    transport.begin_round()
    with pytest.raises(ValueError, match=r"op: op='max' is unknown; use one of \['mean', 'sum'\]"):
        transport.all_reduce(torch.zeros(WORLD, DIM), op="max")
    with pytest.raises(ValueError, match=r"expected a block of shape \(2, d\)"):
        transport.all_reduce(torch.zeros(DIM))
    with pytest.raises(ValueError, match=r"one integer flag per worker of this process, shape \(2,\)"):
        transport.agree(torch.zeros(WORLD, dtype=torch.float32))
    assert transport.ledger.uplink_bytes == transport.ledger.downlink_bytes == 0  # nothing half-recorded
