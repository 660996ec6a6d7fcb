"""B1 on any LibSVM file from the command line (``--libsvm``), with a tiny file the test writes."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

_SPEC = importlib.util.spec_from_file_location(
    "b1_paper_reproduction", Path(__file__).resolve().parents[1] / "benchmarks" / "b1_paper_reproduction.py"
)
b1 = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(b1)


@pytest.fixture
def tiny_libsvm(tmp_path: Path) -> Path:
    """48 rows, 6 sparse features, labels 0/1 (mapped to ±1 by the reader)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 6, generator=gen)
    labels = (x[:, 0] + 0.5 * x[:, 1] > 0).int()
    lines = []
    for row, label in zip(x.tolist(), labels.tolist(), strict=True):
        tokens = [f"{j + 1}:{v:.4f}" for j, v in enumerate(row) if abs(v) > 0.3 or j == 5]
        lines.append(f"{label} " + " ".join(tokens))
    path = tmp_path / "tiny.svm"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_b1_runs_every_method_on_a_libsvm_file_given_on_the_command_line(tiny_libsvm, tmp_path, capsys):
    out, plots = tmp_path / "out", tmp_path / "plots"
    argv = ["--libsvm", str(tiny_libsvm), "--problems", "ridge", "logistic", "--workers", "4", "--ks", "2"]
    assert b1.main([*argv, "--budget", "2", "--out", str(out), "--plots", str(plots)]) == 0
    saved = json.loads((out / "b1_libsvm_tiny.svm.json").read_text())
    assert saved["meta"]["libsvm"] == [str(tiny_libsvm)]
    assert saved["meta"]["complete"] is True
    assert [(r["problem"], r["dataset"], r["workers"], r["k"], r["dim"]) for r in saved["results"]] == [
        ("ridge", "tiny.svm", 4, 2, 6),
        ("logistic", "tiny.svm", 4, 2, 6),
    ]
    labels = [label for label, _, _ in b1.methods(2)]
    for result in saved["results"]:
        assert [m["method"] for m in result["methods"]] == labels
        for m in result["methods"]:  # every method ran within the budget and recorded a finite final point
            assert m["rounds"] >= 1 and math.isfinite(m["final_rel"]), m
        assert (plots / f"{result['problem']}_tiny.svm_M4_K2.png").is_file()
    assert "b1_libsvm_tiny.svm.json" in capsys.readouterr().out


def test_b1_libsvm_errors_name_the_option(tiny_libsvm, tmp_path, capsys):
    with pytest.raises(SystemExit):
        b1.main(["--libsvm", str(tmp_path / "missing.svm"), "--out", str(tmp_path)])
    assert "--libsvm: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        b1.main(["--libsvm", str(tiny_libsvm), "--quick", "--out", str(tmp_path)])
    assert "not with --libsvm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        b1.main(["--data", str(tmp_path), "--out", str(tmp_path)])  # no a9a there: the error points at --libsvm
    assert "--libsvm FILE" in capsys.readouterr().err


def test_b1_help_documents_libsvm(capsys):
    with pytest.raises(SystemExit):
        b1.main(["--help"])
    text = capsys.readouterr().out
    assert "--libsvm FILE" in text
    assert "--workers" in text and "--problems" in text
