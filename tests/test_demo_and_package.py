"""The Quickstart's main job and the package's public surface."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

import lit_commeff
from lit_commeff.cli.demo import DEFAULT_COMPRESSORS, main, run_demo


def test_demo_rows_measure_bytes_and_similarity_gain():
    rows = run_demo(workers=4, dim=2000, rounds=3, delta=0.05, seed=1)
    assert [r["compressor"] for r in rows] == [label for label, _, _ in DEFAULT_COMPRESSORS]
    by_name = {r["compressor"]: r for r in rows}
    assert by_name["identity"]["bytes_per_message"] == 2000 * 4
    assert by_name["identity"]["rel_error_raw"] == 0.0
    assert by_name["randk 1%"]["bytes_per_message"] == 20 * 4
    assert by_name["randk 1%"]["gamma"] == pytest.approx(100.0)
    assert by_name["randk 1%"]["cc3"] == pytest.approx(3 * 0.01)
    assert by_name["randk 1%"]["uplink_bytes_per_worker"] == 3 * 80
    assert by_name["randk 1%"]["downlink_bytes_per_worker"] == 3 * 2000 * 4
    # Under similarity, compressing differences to the hub's gradient is far more accurate.
    for label in ("randk 1%", "randk 10%", "topk 1%", "sign"):
        assert by_name[label]["rel_error_difference"] < 0.05 * by_name[label]["rel_error_raw"], label


def test_demo_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["--workers", "1"])
    assert "workers: workers=1 is too small" in capsys.readouterr().err


def test_demo_entry_point_prints_table():
    out = subprocess.run(
        [sys.executable, "-m", "lit_commeff.cli.demo", "--dim", "500", "--rounds", "2", "--workers", "3"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert "lit_commeff compression demo" in out
    assert "randk 1%" in out and "powersgd r=4" in out


def test_package_ships_type_marker_and_version():
    assert resources.files("lit_commeff").joinpath("py.typed").is_file()
    assert isinstance(lit_commeff.__version__, str)


def test_python_m_lit_commeff_is_the_hydra_main_job():
    out = subprocess.run(
        [sys.executable, "-m", "lit_commeff", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "strategy: compressed, ddp, diloco, ef_olga, gated_dane, olga, powersgd" in out
    assert "recipe: finance_credit, telecom_churn, telecom_throughput" in out
