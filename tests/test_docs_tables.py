"""The result tables in README.md and docs/ are the ones ``benchmarks/render_tables.py`` renders from the JSON.

Only files of this repository are read (``benchmarks/results/``, README.md, docs/): no datasets, no network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("render_tables", ROOT / "benchmarks" / "render_tables.py")
render_tables = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(render_tables)


def test_every_marked_table_matches_its_json(capsys):
    code = render_tables.main(["--check"])
    assert code == 0, capsys.readouterr().err


def test_every_table_is_shown_and_names_its_data_and_command():
    text = "\n".join(path.read_text() for path in render_tables.DOCS)
    for name, spec in render_tables.TABLES.items():
        assert f"<!-- table:{name} -->" in text, f"{name} is rendered but shown nowhere"
        block = render_tables.render(name)
        assert "Command: " in block
        for path in spec.data:
            assert (render_tables.RESULTS / path).is_file()
            assert f"`benchmarks/results/{path}`" in block


def test_the_benchmark_tables_of_the_issue_are_covered():
    names = set(render_tables.TABLES)
    assert {"b1-ridge", "b1-logistic", "b2-quick", "b3-credit-edge", "b3-tput-edge", "b7"} <= names


def test_a_number_that_drifts_from_its_json_fails_the_check(tmp_path, capsys):
    doc = tmp_path / "benchmarks.md"
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = render_tables.render("b3-credit-edge")
    assert "| 3.92 |" in block  # EF-OLGA's training-time speed-up over DDP on edge
    doc.write_text(text.replace(block, block.replace("| 3.92 |", "| 3.95 |")))
    assert render_tables.main(["--check", str(doc)]) == 1
    assert "b3-credit-edge" in capsys.readouterr().err
    assert render_tables.main([str(doc)]) == 0  # rewriting restores the rendered table
    assert doc.read_text() == text


def test_unknown_or_unclosed_markers_name_the_fix(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("<!-- table:no-such-table -->\n<!-- /table:no-such-table -->\n")
    with pytest.raises(SystemExit, match="has no entry in TABLES"):
        render_tables.main(["--check", str(doc)])
    doc.write_text("<!-- table:b7 -->\n| a |\n")
    with pytest.raises(SystemExit, match="is not closed"):
        render_tables.main(["--check", str(doc)])
