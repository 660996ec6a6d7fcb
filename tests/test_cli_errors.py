"""Every configuration error of ``lit-commeff`` is one line, exit code 2, names the key and the fix, writes nothing.

Each case runs the real command (``python -m lit_commeff``) in an empty directory: errors Hydra raises while
composing (an unknown group option, a key at the wrong path or under another option of its group, a value
of the wrong type, ``+`` on an existing key), keys added with ``+`` that are no option, ``k`` given while
the preset holds ``ratio``, and an error found by the pre-launch checks. The cases run concurrently (each
is a fresh interpreter that only composes and checks). The examples in docs/cli.md are run and compared too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
PREFIX = "lit-commeff: error: "


@dataclass(frozen=True)
class Case:
    """One rejected command line.

    Attributes:
        id: Test id.
        args: The overrides.
        key: What the message must start with (after ``lit-commeff: error:``).
        says: Substrings the message must contain (the suggested key, the fix).
    """

    id: str
    args: tuple[str, ...]
    key: str
    says: tuple[str, ...]


CASES = [
    Case(
        "unknown-group-option",
        ("compressor=topkk",),
        "compressor:",
        ("'topkk' is not an option", "did you mean compressor=topk?", "compressor=randk"),
    ),
    Case("key-under-another-path", ("recipe.batch_size=3",), "recipe.batch_size:", ("set recipe.data.batch_size=3",)),
    Case("misspelt-key", ("strategy.thetaa=0.5",), "strategy.thetaa:", ("did you mean strategy.theta?",)),
    Case(
        "unknown-key-lists-the-known",
        ("trainer.foo=1",),
        "trainer.foo:",
        ("no such key", "max_epochs", "precision"),
    ),
    Case(
        "key-of-another-group-option",
        ("compressor=qsgd", "compressor.ratio=0.1"),
        "compressor.ratio:",
        ("compressor=qsgd has no 'ratio' (it has s,", "compressor=randk has ratio", "compressor=topk has ratio"),
    ),
    Case(
        "option-key-without-the-option",
        ("compressor.k=5",),
        "compressor.k:",
        ("compressor=topk has k", "compressor.ratio=null"),
    ),
    Case(
        "k-while-the-preset-holds-ratio",
        ("compressor=topk", "compressor.k=5"),
        "compressor.k:",
        ("set compressor.ratio=null to use compressor.k=5",),
    ),
    Case("wrong-type", ("seed=abc",), "seed:", ("could not be converted to Integer", "set seed to an integer")),
    Case("plus-on-an-existing-key", ("+seed=1",), "seed:", ("set it without the +: seed=1",)),
    Case(
        "added-top-level-key",
        ("+anything=1",),
        "anything:",
        ("'anything' is not a lit-commeff key", "remove it", "'seed'", "'checkpoint_dir'"),
    ),
    Case("added-misspelt-top-level-key", ("+sed=1",), "sed:", ("did you mean seed?",)),
    Case("unparsable-override", ("seed=[",), "seed=[:", ("cannot parse this override", "KEY=VALUE")),
    Case(
        "interpolation-that-does-not-resolve",
        ("seed=${oops}",),
        "seed:",
        ("does not resolve", "Interpolation key 'oops' not found", "give a plain value"),
    ),
    Case("caught-by-the-checks", ("seed=-1",), "seed:", ("seed=-1 is out of range", "e.g. seed=0")),
    Case("sweep-caught-by-the-checks", ("-m", "seed=-1,-2"), "seed:", ("seed=-1 is out of range",)),
    Case(
        "sweep-unknown-group-option", ("-m", "compressor=topkk,topk"), "compressor:", ("did you mean compressor=topk?",)
    ),
]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _run(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True)
    cmd = [sys.executable, "-m", "lit_commeff", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _documented() -> list[tuple[tuple[str, ...], str]]:
    """The ``$ lit-commeff ...`` examples in docs/cli.md that show an error: (overrides, the line shown)."""
    lines = DOCS.read_text().splitlines()
    examples = []
    for command, shown in pairwise(lines):
        if command.startswith("$ lit-commeff ") and shown.startswith(PREFIX):
            examples.append((tuple(shlex.split(command)[2:]), shown))
    return examples


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every case and every documented example, each run once in its own empty directory, four at a time."""
    root = tmp_path_factory.mktemp("cli_errors")
    jobs = {c.id: c.args for c in CASES} | {f"docs-{i}": args for i, (args, _) in enumerate(_documented())}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_run, args, root / name) for name, args in jobs.items()}
        return {name: (future.result(), root / name) for name, future in futures.items()}


def _message(proc: subprocess.CompletedProcess) -> str:
    """The one ``lit-commeff: error:`` line of stderr (and that there is one only, and no traceback)."""
    assert proc.returncode == 2, f"exit code {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
    errors = [line for line in proc.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "HYDRA_FULL_ERROR" not in proc.stderr, proc.stderr[-3000:]
    return errors[0][len(PREFIX) :]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_rejected_config_is_one_line_with_the_fix_and_writes_nothing(case: Case, results) -> None:
    proc, cwd = results[case.id]
    message = _message(proc)
    assert message.startswith(case.key), message
    assert "+" not in message.split("; ")[-1] or "without the +" in message  # never Hydra's "use +key=..."
    for text in case.says:
        assert text in message, f"{text!r} not in: {message}"
    assert sorted(p.name for p in cwd.iterdir()) == []  # no outputs/ (multirun/), mlflow.db, mlartifacts/, checkpoints/


def test_the_documented_errors_are_what_the_command_prints(results) -> None:
    examples = _documented()
    assert len(examples) >= 6
    for i, (args, shown) in enumerate(examples):
        proc, cwd = results[f"docs-{i}"]
        assert PREFIX + _message(proc) == shown, f"docs/cli.md shows for {args}:\n{shown}"
        assert not (cwd / "outputs").exists() and not (cwd / "mlflow.db").exists()


def test_hydra_full_error_keeps_hydras_own_report(tmp_path: Path) -> None:
    env = _env() | {"HYDRA_FULL_ERROR": "1"}
    cmd = [sys.executable, "-m", "lit_commeff", "recipe.batch_size=3"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and PREFIX not in proc.stderr
    assert re.search(r"Key 'batch_size' is not in struct", proc.stderr)
