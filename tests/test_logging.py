"""Library logging: DEBUG at each round boundary with its kind and bytes, nothing at INFO in a normal run."""

from __future__ import annotations

import logging
import re

import pytest

from lit_commeff import sim
from lit_commeff.problems import synthetic_ridge

ROUND_END = re.compile(r"olga: round (\d+) ends \((\w+)\): uplink (\d+) B, downlink (\d+) B")


def _run() -> sim.History:
    problem = synthetic_ridge(workers=4, dim=6, similarity=0.3)
    return sim.run(problem, "olga", compressor=("randk", {"k": 2}), preset="similarity", cc3_budget=4, tol=1e-8)


def test_rounds_log_their_kind_and_bytes_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lit_commeff")
    history = _run()
    ends = [ROUND_END.fullmatch(r.getMessage()) for r in caplog.records if "ends" in r.getMessage()]
    assert ends and all(ends)
    assert [int(m[1]) for m in ends] == list(range(len(ends)))
    assert {m[2] for m in ends} >= {"anchor", "inner"}  # OLGA names its phases
    assert sum(int(m[3]) for m in ends) == history.final["uplink_bytes"]
    assert sum(int(m[4]) for m in ends) == history.final["downlink_bytes"]


def test_a_run_logs_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="lit_commeff")
    _run()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("lit_commeff")] == []
