"""The Python snippets in README.md and docs/ run as written (in order, one namespace per file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", ROOT / "docs" / "compression.md", ROOT / "docs" / "strategies.md"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_python_snippets_run(path):
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks, f"no python snippet in {path.name}"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(path), "exec"), namespace)
