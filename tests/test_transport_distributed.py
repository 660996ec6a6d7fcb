"""The same algorithm code over real gloo processes and in the simulator: same iterates, same ledger."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from _cli_utils import spawn_reports

from lit_commeff.algorithms import ALGORITHMS, ProblemOracle
from lit_commeff.compression import build
from lit_commeff.problems import synthetic_ridge
from lit_commeff.transport import DistributedTransport, SimulatorTransport
from lit_commeff.transport.distributed import DOWNLINKS

WORLD = 3
ROUNDS = 40
CASES = {
    "olga": {"compressor": ("randk", {"k": 3}), "preset": "similarity", "p": 0.3},
    "ef_olga": {"compressor": ("topk", {"k": 3}), "preset": "similarity", "p": 0.3},
    "accsvrs": {},
    "acc_extragradient": {},
    "diana": {"compressor": ("randk", {"k": 2})},
    "ef21": {"compressor": ("topk", {"k": 2})},
    # the anchor/y gradient gathers compressed too (EF21-style estimates), with and without momentum
    "olga+dense_topk": {
        "algorithm": "olga", "compressor": ("randk", {"k": 3}), "dense_compressor": ("topk", {"k": 4}),
        "preset": "similarity", "p": 0.3, "accelerate": False,
    },
    "ef_olga+dense_topk": {
        "algorithm": "ef_olga", "compressor": ("topk", {"k": 3}), "dense_compressor": ("topk", {"k": 4}),
        "preset": "similarity", "p": 0.3,
    },
    # the inner rounds' broadcast compressed (EF21-P-style): every rank must hold the same point
    "olga+down_topk": {
        "algorithm": "olga", "compressor": ("randk", {"k": 3}), "downlink_compressor": ("topk", {"k": 3}),
        "preset": "similarity", "p": 0.3, "output": "last",
    },
    "ef_olga+down_topk": {
        "algorithm": "ef_olga", "compressor": ("topk", {"k": 3}), "downlink_compressor": ("topk", {"k": 3}),
        "preset": "similarity", "p": 0.3, "output": "last",
    },
    # local steps: no process may communicate in them, or the ranks fall out of step
    "olga+local3": {
        "algorithm": "olga", "compressor": ("randk", {"k": 3}), "preset": "similarity", "p": 0.3, "local_steps": 3,
    },
    # averaged anchors: silent steps between the anchor's first and last step, the y round's too without momentum
    "ef_olga+anchor3": {
        "algorithm": "ef_olga", "compressor": ("topk", {"k": 3}), "preset": "similarity", "p": 0.3,
        "anchor_batches": 3,
    },
    "olga+anchor3": {
        "algorithm": "olga", "compressor": ("randk", {"k": 3}), "preset": "similarity", "p": 0.3,
        "accelerate": False, "anchor_batches": 3,
    },
    # every rank trains: silent local steps, a gated round length agreed at each sync, δ̂ estimated on each rank
    "gated_dane": {"compressor": ("topk", {"k": 3}), "delta": None, "mu": 0.05, "theta": 0.5, "min_inner_steps": 2,
                   "inner_steps": 6, "outer": "extrapolate"},
    "gated_dane+compressed": {
        "algorithm": "gated_dane", "compressor": ("randk", {"k": 4}), "grad_compressor": ("topk", {"k": 4}),
        "downlink_compressor": ("topk", {"k": 5}), "sync": "fixed", "inner_steps": 3, "outer": "nesterov",
    },
    "gated_dane+lagged": {
        "algorithm": "gated_dane", "compressor": ("identity", {}), "correction": "lagged", "delta": None, "mu": 0.05,
        "theta": 0.5, "min_inner_steps": 2, "inner_steps": 6, "outer": "extrapolate",
    },
    "gated_dane+lagged_compressed": {
        "algorithm": "gated_dane", "compressor": ("topk", {"k": 3}), "grad_compressor": ("topk", {"k": 4}),
        "downlink_compressor": ("topk", {"k": 5}), "correction": "lagged", "min_inner_steps": 2, "inner_steps": 5,
        "outer": "nesterov",
    },
}  # fmt: skip


def _problem():
    return synthetic_ridge(workers=WORLD, n=30, dim=8, similarity=0.3, lam=0.1, seed=1)


def _shared_output(name: str) -> bool:
    """Whether every rank holds the output iterate (OLGA's ``output='last'``; Gated DANE's anchor)."""
    return CASES[name].get("output") == "last" or CASES[name].get("algorithm", name) == "gated_dane"


def _run(name: str, transport) -> torch.Tensor | None:
    problem = _problem()
    options = dict(CASES[name])
    algorithm = ALGORITHMS[options.pop("algorithm", name)]
    for field in ("compressor", "dense_compressor", "downlink_compressor", "grad_compressor"):
        if field in options:
            cname, copts = options[field]
            options[field] = build(cname, **copts)
    constants = {"mu": problem.mu, "delta": problem.delta, "L": problem.L}
    accepted = (
        algorithm.__init__.__code__.co_varnames + getattr(getattr(algorithm, "options_cls", None), "names", tuple)()
    )
    options.update({k: v for k, v in constants.items() if k in accepted and k not in CASES[name]})
    alg = algorithm(
        transport=transport,
        oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(problem.dim, dtype=torch.float64),
        seed=3,
        **options,
    )
    for _ in range(ROUNDS):
        alg.step()
    if transport.is_hub or _shared_output(name):
        return alg.output()
    return None  # the output iterate lives on the hub (Algorithm.output raises in a worker process)


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        report = {}
        for name, downlink in ((n, d) for n in CASES for d in DOWNLINKS):
            transport = DistributedTransport(dim=_problem().dim, dtype=torch.float64, downlink=downlink)
            y = _run(name, transport)
            summary = transport.ledger.summary()
            summary.pop("comm_time_s")
            report[f"{name}/{downlink}"] = {
                "y": None if y is None else y.tolist(),
                "ledger": summary,
                "comm_time_s": transport.ledger.comm_time_s,
            }
        Path(f"{out}.{rank}").write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_reports(tmp_path_factory):
    return spawn_reports(_worker, tmp_path_factory.mktemp("dist"), WORLD)


@pytest.mark.parametrize("downlink", DOWNLINKS)
@pytest.mark.parametrize("name", list(CASES))
def test_distributed_matches_simulator(distributed_reports, name, downlink):
    """Either downlink collective (gloo's broadcast tree or the star scatter) gives the simulator's run."""
    transport = SimulatorTransport(num_workers=WORLD, dim=_problem().dim)
    y_sim = _run(name, transport)
    expected = transport.ledger.summary()
    expected.pop("comm_time_s")
    hub = distributed_reports[0][f"{name}/{downlink}"]
    assert torch.allclose(torch.tensor(hub["y"], dtype=torch.float64), y_sim, rtol=1e-9, atol=1e-12), name
    for rank in range(WORLD):  # every rank holds the same ledger, equal to the simulator's
        assert distributed_reports[rank][f"{name}/{downlink}"]["ledger"] == expected, (name, rank)
    assert hub["comm_time_s"] > 0
    if _shared_output(name):  # what the model holds is the same on every rank
        for rank in range(1, WORLD):
            assert distributed_reports[rank][f"{name}/{downlink}"]["y"] == hub["y"], (name, rank)


def test_distributed_transport_needs_a_process_group():
    with pytest.raises(RuntimeError, match=r"needs an initialised process group"):
        DistributedTransport(dim=3)


def test_downlink_option_is_validated_with_the_fix():
    from lit_commeff.strategy import OLGAStrategy

    with pytest.raises(ValueError, match=r"downlink: downlink='tree' is unknown; use 'auto'"):
        OLGAStrategy(downlink="tree")
