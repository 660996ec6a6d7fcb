"""The B3 script's own logic (no network lab): variants and the time-to-target analysis."""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "b3_time_to_accuracy", Path(__file__).resolve().parents[1] / "benchmarks" / "b3_time_to_accuracy.py"
)
b3 = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(b3)


def test_variants_are_parsed_and_bad_ones_name_the_fix():
    assert b3.parse_variants(["ef_olga+h2=ef_olga strategy.local_steps=2 strategy.theta=2"]) == {
        "ef_olga+h2": ("ef_olga", ["strategy.local_steps=2", "strategy.theta=2"])
    }
    for bad in ("ef_olga=ef_olga strategy.theta=2", "x=nosuch", "x=olga theta", "olga strategy.theta=2"):
        with pytest.raises(SystemExit, match=r"--variant: .* is invalid"):
            b3.parse_variants([bad])


def _run(method: str, seed: int, values: list[float], seconds: list[float], profile: str = "edge") -> dict:
    history = [
        {
            "step": 10 * (i + 1),
            "value": v,
            "seconds": s + 1.0,
            "train_seconds": s,
            "uplink_bytes": 1000 * (i + 1),
            "downlink_bytes": 0,
        }
        for i, (v, s) in enumerate(zip(values, seconds, strict=True))
    ]
    return {"recipe": "finance_credit", "profile": profile, "method": method, "seed": seed, "history": history}


def test_a_variant_gets_its_own_row_and_ratios():
    results = [
        _run("ddp", 0, [0.70, 0.76, 0.77], [10.0, 20.0, 30.0]),
        _run("diloco", 0, [0.766, 0.77, 0.77], [4.0, 8.0, 12.0]),
        _run("ef_olga", 0, [0.74, 0.766, 0.768], [5.0, 10.0, 15.0]),
        _run("ef_olga+h2", 0, [0.75, 0.76, 0.764], [2.0, 4.0, 6.0]),
    ]
    args = argparse.Namespace(
        recipes=["finance_credit"], profiles=["edge"], methods=["ddp", "diloco", "ef_olga", "ef_olga+h2"],
        auroc_tolerance=0.005, mae_factor=1.02, target="final",
    )  # fmt: skip
    rows = {r["method"]: r for r in b3.analyse(results, args)}
    assert rows["ddp"]["target"] == pytest.approx(0.765)
    assert rows["ef_olga"]["median_time"] == 10.0
    assert rows["ef_olga"]["speedup_vs_ddp"] == pytest.approx(3.0)  # DDP reached 0.765 first at 30 s
    assert rows["ef_olga"]["speedup_vs_best_baseline"] == pytest.approx(0.4)  # DiLoCo: 4 s
    assert rows["ef_olga+h2"]["time_to_target"] == "never"
    assert math.isnan(rows["ef_olga+h2"]["speedup_vs_ddp"])


def test_plateau_target_and_times_derived_from_lan_steps():
    # DDP's full run on lan: it plateaus at 0.78 (moving average of three), reached first at step 40.
    lan = _run("ddp", 0, [0.70, 0.74, 0.76, 0.776, 0.78, 0.782, 0.778, 0.78], [1.0 * i for i in range(1, 9)], "lan")
    # On edge DDP only ran 60 steps to time a step there: 0.5 s per step.
    timing = _run("ddp", 0, [0.5], [30.0])
    timing["history"][0]["step"] = 60
    timing["timing_only"] = True
    diloco = _run("diloco", 0, [0.70, 0.776, 0.78], [2.0, 4.0, 6.0])
    args = argparse.Namespace(
        recipes=["finance_credit"], profiles=["edge", "lan"], methods=["ddp", "diloco"],
        auroc_tolerance=0.005, mae_factor=1.02, target="plateau",
    )  # fmt: skip
    rows = {(r["profile"], r["method"].split()[0]): r for r in b3.analyse([lan, timing, diloco], args)}
    edge_ddp = rows[("edge", "ddp")]
    assert edge_ddp["target"] == pytest.approx((0.78 + 0.782 + 0.778) / 3 - 0.005)
    assert edge_ddp["ddp_plateau"] == [True]
    assert edge_ddp["steps_to_target"] == 40  # the first lan validation at or above 0.775
    assert edge_ddp["median_time"] == pytest.approx(40 * 0.5)  # lan steps × edge step time
    assert "lan steps × edge step time" in edge_ddp["method"]
    assert rows[("edge", "diloco")]["median_time"] == 4.0
    assert rows[("edge", "diloco")]["speedup_vs_ddp"] == pytest.approx(20 / 4)
    assert rows[("lan", "ddp")]["median_time"] == 4.0  # a full run is read directly


def test_partitions_are_analysed_apart():
    iid = _run("ddp", 0, [0.76, 0.77, 0.77], [1.0, 2.0, 3.0])
    grouped = _run("ddp", 0, [0.70, 0.72, 0.72], [1.0, 2.0, 3.0])
    iid["partition"], grouped["partition"] = "iid", "by_group"
    args = argparse.Namespace(
        recipes=["finance_credit"], profiles=["edge"], methods=["ddp"], auroc_tolerance=0.0, mae_factor=1.02,
        target="final",
    )  # fmt: skip
    rows = {r["recipe"]: r for r in b3.analyse([iid, grouped], args)}
    assert rows["finance_credit[iid]"]["target"] == pytest.approx(0.77)
    assert rows["finance_credit[by_group]"]["target"] == pytest.approx(0.72)
