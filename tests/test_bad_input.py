"""Bad input gets a clear error before training starts: one table of malformed configs and data files.

Every case is checked in this process, the way ``lit-commeff`` checks a job before it starts any rank:
config overrides are composed with Hydra and passed to :func:`lit_commeff.cli.validate.validate`, data
files are written to ``tmp_path`` and pointed at by ``recipe.data.path``, and LibSVM files are read with
:func:`lit_commeff.problems.load_libsvm`. A guard makes any attempt to start a process fail the case.
Each case asserts the error type, that the message names the field / file / line (and column) and that it
says how to fix the problem.

Also here: ranks running other code versions are caught at setup (a real 2-process gloo run, and the
comparison function itself).
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import torch
from _cli_utils import validate_overrides
from _strategy_utils import TinyRegressor, regression_data, trainer
from hydra.errors import HydraException
from torch.utils.data import DataLoader

import lit_commeff
from lit_commeff.cli import schema
from lit_commeff.cli.validate import ConfigError
from lit_commeff.problems import LibSVMFormatError, load_libsvm
from lit_commeff.recipes.finance_credit import synthetic_credit
from lit_commeff.recipes.telecom_churn import synthetic_churn
from lit_commeff.recipes.throughput import make_synthetic_traces
from lit_commeff.strategy import OLGAStrategy
from lit_commeff.strategy.base import _VERSION_BYTES, _fingerprint, code_versions, compare_fingerprints

schema.register()

#: The message says how to fix the problem: it holds one of these imperative verbs.
FIX = (
    r"\b(use|set|pass|fix|point|lower|raise|remove|install|choose|add|create|re-save|quote|map|fill|sort|write"
    r"|replace|start|download|leave|did you mean)\b"
)
#: Overrides that keep the recipes small (fast checks) without changing what a case tests.
CREDIT = ("recipe.data.path={path}", "recipe.data.batch_size=16")
CHURN = ("recipe=telecom_churn", "recipe.data.path={path}", "recipe.data.batch_size=16")
THROUGHPUT = (
    "recipe=telecom_throughput",
    "recipe.data.path={path}",
    "recipe.data.window=8",
    "recipe.data.batch_size=16",
    "recipe.model.hidden=8",
)
SMALL = ("recipe.data.synthetic_rows=1200", "recipe.data.batch_size=32")
ZIP_ROOT = "5G-production-dataset"
MEMBERS = tuple(f"{ZIP_ROOT}/Download/{m}/B_2019.12.16_13.4{k}.00.csv" for k, m in enumerate(["Static", "Driving"] * 3))


@dataclass(frozen=True)
class Case:
    """One malformed input.

    Attributes:
        id: Test id.
        overrides: Hydra overrides; ``{path}`` is replaced by the case's file (``{tmp}``: ``tmp_path``).
        file: Writes the bad file to the path it is given (``None``: no file, the path stays missing).
        suffix: File name suffix.
        names: Substrings the message must contain (the field, or ``file:line[:column]``; same placeholders).
        stage: ``"validate"`` (:class:`ConfigError`), ``"compose"`` (Hydra rejects the overrides) or
            ``"libsvm"`` (:class:`LibSVMFormatError` from :func:`load_libsvm`).
        fix: Regex the message must match to say how to fix it.
        libsvm: Keyword arguments of :func:`load_libsvm`.
    """

    id: str
    overrides: tuple[str, ...] = ()
    file: Callable[[Path], None] | None = None
    suffix: str = ".csv"
    names: tuple[str, ...] = ()
    stage: str = "validate"
    fix: str = FIX
    libsvm: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- file builders
@cache
def _credit() -> tuple[str, ...]:
    return tuple(synthetic_credit(240, 0).to_csv(index=False).splitlines())


@cache
def _churn() -> tuple[str, ...]:
    return tuple(synthetic_churn(240, 0).to_csv(index=False).splitlines())


def _csv(base: Callable[[], tuple[str, ...]], edit: Callable[[list[list[str]]], Any] | None = None, rows: int = 240):
    """A writer of ``base()`` (its first ``rows`` data rows), after ``edit`` changed the split lines in place."""

    def write(path: Path) -> None:
        lines = [line.split(",") for line in base()[: rows + 1]]
        if edit is not None:
            edit(lines)
        path.write_text("\n".join(",".join(cells) for cells in lines) + "\n")

    return write


def _cell(row: int, column: int, value: str) -> Callable[[list[list[str]]], None]:
    """Set data row ``row`` (0-based, header not counted: file line ``row + 2``), column ``column`` (1-based)."""

    def edit(lines: list[list[str]]) -> None:
        lines[row + 1][column - 1] = value

    return edit


def _labels(mapping: Callable[[int, str], str]) -> Callable[[list[list[str]]], None]:
    def edit(lines: list[list[str]]) -> None:
        for r, cells in enumerate(lines[1:]):
            cells[-1] = mapping(r, cells[-1])

    return edit


def _text(content: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return write


def _not_utf8(path: Path) -> None:
    lines = [line.encode() for line in _credit()]
    lines[4] = b"\xff" + lines[4][1:]  # data row 3, column 1: line 5, column 1
    path.write_bytes(b"\n".join(lines) + b"\n")


def _mkdir(path: Path) -> None:
    path.mkdir()


def _traces(edit: Callable[[int, list[str]], list[str]] | None = None, length: int = 80) -> Callable[[Path], None]:
    """A zip of 6 synthetic traces in the 5G dataset layout; ``edit(k, lines)`` may change member ``k``'s lines."""

    def write(path: Path) -> None:
        traces = make_synthetic_traces(len(MEMBERS), length, seed=0)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for k, (member, trace) in enumerate(zip(MEMBERS, traces, strict=True)):
                lines = trace.frame.to_csv(index=False).splitlines()
                archive.writestr(member, "\n".join(edit(k, lines) if edit else lines) + "\n")

    return write


def _set_trace_cell(member: int, row: int, column: str, value: str) -> Callable[[int, list[str]], list[str]]:
    def edit(k: int, lines: list[str]) -> list[str]:
        if k == member:
            header = lines[0].split(",")
            cells = lines[row + 1].split(",")
            cells[header.index(column)] = value
            lines[row + 1] = ",".join(cells)
        return lines

    return edit


def _drop_trace_column(member: int, column: str) -> Callable[[int, list[str]], list[str]]:
    def edit(k: int, lines: list[str]) -> list[str]:
        if k != member:
            return lines
        at = lines[0].split(",").index(column)
        return [",".join(c for j, c in enumerate(line.split(",")) if j != at) for line in lines]

    return edit


def _corrupt_zip(path: Path) -> None:
    _traces()(path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(MEMBERS[1])
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 20, start + 60):  # scramble the member's compressed data
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


# ----------------------------------------------------------------------------------- the table
CASES: list[Case] = [
    # --- configs rejected by Hydra and the schema while composing
    Case("compose-unknown-trainer-key", ("trainer.foo=1",), names=("trainer.foo",), stage="compose"),
    Case(
        "compose-unknown-strategy",
        ("strategy=olgaa",),
        names=("strategy/olgaa",),
        stage="compose",
        fix="Available options",
    ),
    Case("compose-unknown-logger", ("logger=nope",), names=("logger/nope",), stage="compose", fix="Available options"),
    Case(
        "compose-max-epochs-type",
        ("trainer.max_epochs=x",),
        names=("trainer.max_epochs",),
        stage="compose",
        fix="converted to Integer",
    ),
    Case("compose-seed-type", ("seed=abc",), names=("seed",), stage="compose", fix="converted to Integer"),
    # --- top-level keys
    Case("seed-negative", ("seed=-1",), names=("seed: seed=-1",)),
    Case(
        "ckpt-path-missing", ("ckpt_path={tmp}/nope.ckpt",), names=("ckpt_path:", "{tmp}/nope.ckpt", "does not exist")
    ),
    Case("ckpt-path-directory", ("ckpt_path={tmp}",), names=("ckpt_path:", "is a directory")),
    Case("checkpoint-dir-is-file", ("checkpoint_dir={path}",), file=_text("x"), names=("checkpoint_dir:", "{path}")),
    Case(
        "checkpoint-every-0",
        ("checkpoint_every_n_steps=0",),
        names=("checkpoint_every_n_steps: checkpoint_every_n_steps=0",),
    ),
    Case("timeout-zero", ("timeout_s=0",), names=("timeout_s: timeout_s=0",)),
    Case("timeout-negative", ("timeout_s=-5",), names=("timeout_s: timeout_s=-5",)),
    # --- trainer group
    Case("trainer-added-key", ("+trainer.foo=1",), names=("trainer.foo:", "the Trainer's arguments: ", "max_steps")),
    Case("trainer-reserved-key", ("+trainer.strategy=ddp",), names=("trainer.strategy:",)),
    Case("trainer-devices-1-hub", ("trainer.devices=1",), names=("trainer.devices:", "needs at least 2 processes")),
    Case("trainer-devices-type", ("trainer.devices=two",), names=("trainer.devices: trainer.devices='two'",)),
    Case("trainer-num-nodes-0", ("trainer.num_nodes=0",), names=("trainer.num_nodes:",)),
    Case(
        "trainer-gpu-without-cuda",
        ("trainer.accelerator=gpu",),
        names=("trainer.accelerator: trainer.accelerator='gpu'",),
    ),
    Case(
        "trainer-max-epochs-negative", ("trainer.max_epochs=-5",), names=("trainer.max_epochs: trainer.max_epochs=-5",)
    ),
    Case("trainer-grad-clip-negative", ("trainer.gradient_clip_val=-1",), names=("trainer.gradient_clip_val:",)),
    Case("trainer-val-check-0", ("trainer.val_check_interval=0",), names=("trainer.val_check_interval:",)),
    Case("trainer-log-every-0", ("trainer.log_every_n_steps=0",), names=("trainer.log_every_n_steps:",)),
    Case("trainer-precision-unknown", ("trainer.precision=17",), names=("trainer.precision:", "'17'")),
    Case(
        "trainer-limit-batches-negative", ("trainer.limit_train_batches=-1",), names=("trainer.limit_train_batches:",)
    ),
    # --- logger group
    Case("logger-uri-unknown-scheme", ("logger.tracking_uri=htp:/x",), names=("logger.tracking_uri:", "'htp'")),
    Case(
        "logger-uri-sqlite-two-slashes",
        ("logger.tracking_uri=sqlite:/x.db",),
        names=("logger.tracking_uri:", "three slashes"),
    ),
    Case("logger-uri-http-no-host", ("logger.tracking_uri=http://",), names=("logger.tracking_uri:", "no host")),
    Case("logger-added-key", ("+logger.foo=1",), names=("logger.foo:",)),
    Case("logger-experiment-empty", ("logger.experiment=",), names=("logger.experiment:",)),
    # --- strategy group
    Case("strategy-theta-negative", ("strategy.theta=-1",), names=("strategy (test): theta: theta=-1",)),
    Case("strategy-added-key-typo", ("+strategy.thetta=1",), names=("strategy.thetta:", "did you mean strategy.theta")),
    Case("strategy-diloco-inner-steps-0", ("strategy=diloco", "strategy.inner_steps=0"), names=("inner_steps",)),
    Case("strategy-powersgd-rank-0", ("strategy=powersgd", "strategy.rank=0"), names=("rank: rank=0",)),
    Case(
        "strategy-ef-olga-unbiased",
        ("strategy=ef_olga", "compressor=randk"),
        names=("compressor", "EF-OLGA needs a biased"),
    ),
    # --- compressor group
    Case(
        "compressor-ratio-above-1",
        ("compressor=randk", "compressor.ratio=1.5"),
        names=("compressor: randk.ratio: ratio=1.5",),
    ),
    Case("compressor-levels-type", ("compressor=qsgd", "compressor.s=zero"), names=("compressor: qsgd.s: s='zero'",)),
    Case("compressor-added-key", ("compressor=topk", "+compressor.foo=1"), names=("compressor.foo:", "TopK")),
    # --- recipe group (options)
    Case("recipe-batch-size-0", ("recipe.data.batch_size=0",), names=("recipe.data: batch_size: batch_size=0",)),
    Case(
        "recipe-val-fraction-1.5",
        ("recipe.data.val_fraction=1.5",),
        names=("recipe.data: val_fraction: val_fraction=1.5",),
    ),
    Case("recipe-partition-unknown", ("recipe.data.partition=shards",), names=("recipe.data:", "partition='shards'")),
    Case("recipe-lr-negative", ("recipe.model.lr=-1",), names=("recipe.model: lr: lr=-1",)),
    Case("recipe-optimizer-unknown", ("recipe.model.optimizer=rmsprop",), names=("recipe.model: optimizer:",)),
    Case("recipe-data-added-key", ("+recipe.data.foo=1",), names=("recipe.data.foo:", "CreditDataModule")),
    Case("recipe-added-top-key", ("+recipe.foo=1",), names=("recipe.foo:",)),
    Case(
        "recipe-window-0",
        ("recipe=telecom_throughput", "recipe.data.window=0"),
        names=("recipe.data: window: window=0",),
    ),
    Case(
        "recipe-synthetic-rows-too-few",
        ("recipe.data.synthetic_rows=100", "recipe.data.batch_size=64"),
        names=("recipe.data: batch_size:", "each rank gets"),
    ),
    Case(
        "recipe-by-group-more-ranks-than-groups",
        ("recipe=telecom_churn", "recipe.data.partition=by_group", "trainer.devices=4", *SMALL),
        names=("recipe.data: group_column:", "4 ranks"),
    ),
    # --- CSV data files (credit, churn)
    Case("csv-missing", CREDIT, names=("recipe.data: path: data file '{path}' does not exist",)),
    Case("csv-directory", CREDIT, file=_mkdir, names=("recipe.data: path: '{path}' is a directory",)),
    Case("csv-empty", CREDIT, file=_text(""), names=("recipe.data: path: data file '{path}' is empty",)),
    Case(
        "csv-header-only",
        CREDIT,
        file=_csv(_credit, rows=0),
        names=("'{path}' has a header (25 columns) but no data rows",),
    ),
    Case(
        "csv-semicolon-delimiter",
        (*CREDIT, "recipe.data.delimiter=comma"),  # delimiter=auto (the default) reads it
        file=lambda p: p.write_text("\n".join(x.replace(",", ";") for x in _credit())),
        names=("{path}:1:", "delimiter looks wrong", "';'", "'default.payment.next.month'"),
    ),
    Case(
        "csv-tab-delimiter",
        (*CHURN, "recipe.data.delimiter=comma"),  # delimiter=auto (the default) reads it
        file=lambda p: p.write_text("\n".join(x.replace(",", "\t") for x in _churn())),
        names=("{path}:1:", "tab-separated", "'Churn'"),
    ),
    Case(
        "csv-text-in-numeric-column",
        CREDIT,
        file=_csv(_credit, _cell(6, 2, "abc")),
        names=("numeric column 'LIMIT_BAL'", "{path}:8:2", "'abc'"),
    ),
    Case("csv-comma-decimal-splits-the-row", CHURN, file=_csv(_churn, _cell(4, 20, "12,5")), names=("{path}:6",)),
    Case(
        "csv-churn-text-in-tenure",
        CHURN,
        file=_csv(_churn, _cell(4, 6, "x12")),
        names=("numeric column 'tenure'", "{path}:6:6", "'x12'"),
    ),
    Case(
        "csv-ragged-row",
        CREDIT,
        file=_csv(_credit, lambda ls: ls[11].extend(["1", "2"])),
        names=("{path}:12:", "27 fields", "header has 25"),
    ),
    Case("csv-not-utf8", CREDIT, file=_not_utf8, names=("{path}:5:1", "not UTF-8", "0xff")),
    Case(
        "csv-target-missing",
        CREDIT,
        file=_csv(_credit, lambda ls: [c.pop() for c in ls]),
        names=("target_column: column 'default.payment.next.month' not found in '{path}'",),
    ),
    Case(
        "csv-all-one-class",
        CREDIT,
        file=_csv(_credit, _labels(lambda r, v: "0")),
        names=(
            "target_column 'default.payment.next.month': every one of the 240 rows of '{path}'",
            "single label value '0'",
        ),
    ),
    Case(
        "csv-label-outside-0-1",
        CREDIT,
        file=_csv(_credit, _labels(lambda r, v: {0: "0", 1: "1", 10: "2"}.get(r, v))),
        names=("target_column 'default.payment.next.month'", "'2'", "{path}:12:25"),
    ),
    Case(
        "csv-churn-positive-label-absent",
        CHURN,
        file=_csv(_churn, _labels(lambda r, v: v.lower())),
        names=("target_column 'Churn'", "positive_label='Yes' matches none", "'{path}'"),
    ),
    Case(
        "csv-label-blank",
        CREDIT,
        file=_csv(_credit, _cell(3, 25, "")),
        names=("target_column 'default.payment.next.month'", "{path}:5:25", "has no label"),
    ),
    Case(
        "csv-fewer-rows-than-ranks-x-batch",
        CREDIT,
        file=_csv(_credit, rows=30),
        names=("recipe.data: batch_size:", "2 ranks", "batch_size=16", "lower batch_size"),
    ),
    Case(
        "csv-fewer-val-rows-than-ranks",
        (*CREDIT, "recipe.data.val_fraction=0.1"),
        file=_csv(_credit, _labels(lambda r, v: str(r % 2)), rows=8),
        names=("recipe.data: val_fraction:", "holds 1 rows", "2 ranks"),
    ),
    # --- throughput zip
    Case("zip-missing", THROUGHPUT, suffix=".zip", names=("recipe.data: path: {path} does not exist",)),
    Case("zip-directory", THROUGHPUT, suffix=".zip", file=_mkdir, names=("recipe.data: path: {path} is a directory",)),
    Case(
        "zip-not-a-zip",
        THROUGHPUT,
        suffix=".zip",
        file=_text("Timestamp,SNR\n1,2\n"),
        names=("recipe.data: path: {path} is not a zip",),
    ),
    Case(
        "zip-corrupt-member",
        THROUGHPUT,
        suffix=".zip",
        file=_corrupt_zip,
        names=("recipe.data: path:", MEMBERS[1], "{path}", "cannot be read"),
    ),
    Case(
        "zip-missing-column",
        THROUGHPUT,
        suffix=".zip",
        file=_traces(_drop_trace_column(2, "RSSI")),
        names=("recipe.data: features:", MEMBERS[2], "['RSSI']", "line 1"),
    ),
    Case(
        "zip-non-numeric-value",
        THROUGHPUT,
        suffix=".zip",
        file=_traces(_set_trace_cell(3, 5, "SNR", "12.5dB")),
        names=("recipe.data: data:", MEMBERS[3], "'12.5dB'", "column 'SNR'", "line 7, column 6"),
    ),
    Case(
        "zip-traces-shorter-than-window",
        (*THROUGHPUT, "recipe.data.window=100"),
        suffix=".zip",
        file=_traces(),
        names=("recipe.data: window:", "none of the 6 trace(s)", "window + horizon = 101"),
    ),
    Case(
        "zip-fewer-windows-than-ranks-x-batch",
        (*THROUGHPUT, "recipe.data.batch_size=500"),
        suffix=".zip",
        file=_traces(),
        names=("recipe.data: batch_size:", "2 rank(s)", "batch_size=500"),
    ),
    # --- LibSVM files
    Case(
        "libsvm-bad-label",
        file=_text("1 1:1\nabc 2:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:2:1", "bad label 'abc'"),
    ),
    Case(
        "libsvm-label-missing",
        file=_text("1:1 2:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:1", "not a label"),
    ),
    Case(
        "libsvm-no-colon",
        file=_text("1 1:1\n-1 1:0.5 3\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:2:10", "no ':'"),
    ),
    Case(
        "libsvm-index-not-integer",
        file=_text("1 x:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:3", "not an integer"),
    ),
    Case(
        "libsvm-value-not-number",
        file=_text("1 1:abc\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:3", "'abc'", "not a number"),
    ),
    Case(
        "libsvm-value-nan", file=_text("1 1:nan\n"), suffix=".svm", stage="libsvm", names=("{path}:1:3", "not finite")
    ),
    Case(
        "libsvm-value-inf",
        file=_text("-1 1:1 2:-inf\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:8", "not finite"),
    ),
    Case(
        "libsvm-index-0", file=_text("1 1:1\n1 0:1\n"), suffix=".svm", stage="libsvm", names=("{path}:2:3", "1-based")
    ),
    Case(
        "libsvm-index-negative", file=_text("1 -2:1\n"), suffix=".svm", stage="libsvm", names=("{path}:1:3", "1-based")
    ),
    Case(
        "libsvm-index-decreasing",
        file=_text("1 3:1 2:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:7", "strictly increasing"),
    ),
    Case(
        "libsvm-index-duplicate",
        file=_text("1 2:1\t2:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:1:7", "strictly increasing"),
    ),
    Case(
        "libsvm-more-features-than-n-features",
        file=_text("1 1:1\n1 5:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:2:3", "n_features=4"),
        libsvm={"n_features": 4},
    ),
    Case("libsvm-empty", file=_text("# nothing\n\n"), suffix=".svm", stage="libsvm", names=("{path}: no data rows",)),
    Case(
        "libsvm-not-utf8",
        file=_text(b"1 1:1\n\xff 2:1\n"),
        suffix=".svm",
        stage="libsvm",
        names=("{path}:2:1", "UTF-8", "0xff"),
    ),
]


# ----------------------------------------------------------------------------------- running a case
def _validate(overrides: list[str]) -> None:
    """Compose the overrides as ``lit-commeff`` does and run its pre-launch validation."""
    validate_overrides(overrides)


def _chain(err: BaseException) -> str:
    """The message of an exception and its causes (what Hydra prints for a composition error)."""
    parts = []
    seen: BaseException | None = err
    while seen is not None:
        parts.append(str(seen))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if anything starts a process: every case must be caught before any rank exists."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a process was started while checking bad input")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(multiprocessing.Process, "start", refuse)


def test_the_table_covers_every_kind_of_input() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 30
    prefixes = {i.split("-")[0] for i in ids}
    assert {
        "compose",
        "seed",
        "ckpt",
        "checkpoint",
        "timeout",
        "trainer",
        "logger",
        "strategy",
        "compressor",
    } <= prefixes
    assert {"recipe", "csv", "zip", "libsvm"} <= prefixes


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_rejected_with_field_location_and_fix(case: Case, tmp_path: Path, no_processes: None) -> None:
    if case.id == "trainer-gpu-without-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: accelerator=gpu is valid here")
    path = tmp_path / f"input{case.suffix}"
    if case.file is not None:
        case.file(path)
    fill = {"path": str(path), "tmp": str(tmp_path)}
    overrides = [o.format(**fill) for o in case.overrides]
    if case.stage == "libsvm":
        with pytest.raises(LibSVMFormatError) as info:
            load_libsvm(path, **case.libsvm)
        message = str(info.value)
    elif case.stage == "compose":
        with pytest.raises(HydraException) as info:
            _validate(overrides)
        message = _chain(info.value)
    else:
        with pytest.raises(ConfigError) as info:
            _validate(overrides)
        message = str(info.value)
    for name in case.names:
        assert name.format(**fill) in message, f"{name.format(**fill)!r} not in:\n{message}"
    assert re.search(case.fix, message, re.IGNORECASE), f"no fix ({case.fix}) in:\n{message}"
    assert not torch.distributed.is_initialized()


def test_a_good_config_and_good_files_pass(tmp_path: Path, no_processes: None) -> None:
    """The builders make valid files: each case fails only for the one thing it breaks."""
    _csv(_credit)(tmp_path / "credit.csv")
    _validate([o.format(path=tmp_path / "credit.csv") for o in CREDIT])
    _csv(_churn)(tmp_path / "churn.csv")
    _validate([o.format(path=tmp_path / "churn.csv") for o in CHURN])
    _traces()(tmp_path / "traces.zip")
    _validate([o.format(path=tmp_path / "traces.zip") for o in THROUGHPUT])
    (tmp_path / "ok.svm").write_text("1 1:1 2:0.5\n-1 2:1\n")
    A, _ = load_libsvm(tmp_path / "ok.svm")
    assert A.shape == (2, 2)


# ----------------------------------------------------------------------------------- code versions across ranks
def _row(signature: str, lib: str, torch_version: str) -> list[int]:
    return _fingerprint(signature, (lib, torch_version))


def test_fingerprints_that_agree_pass() -> None:
    rows = [_row("w:(2,)", "0.3.0", "2.5.0")] * 3
    assert compare_fingerprints(rows, n_tensors=1) is None
    assert len(rows[0]) == 1 + 2 * _VERSION_BYTES


def test_other_code_version_names_the_ranks_and_versions() -> None:
    rows = [_row("w", "0.3.0", "2.5.0"), _row("w", "0.3.0", "2.5.0"), _row("w", "0.3.0", "2.6.0+cu124")]
    message = compare_fingerprints(rows, n_tensors=1)
    assert message is not None
    assert message.startswith("code: ranks [2] run other versions than rank 0")
    assert (
        "rank 0: lit_commeff 0.3.0, torch 2.5.0" in message
        and "rank 2: lit_commeff 0.3.0, torch 2.6.0+cu124" in message
    )
    assert "pip install lit_commeff==0.3.0 torch==2.5.0" in message
    rows = [_row("w", "0.3.0", "2.5.0"), _row("other model", "0.4.0", "2.5.0")]
    message = compare_fingerprints(rows, n_tensors=1)
    assert message is not None and "ranks [1]" in message and "lit_commeff 0.4.0" in message  # code is named first


def test_other_model_alone_keeps_the_model_message() -> None:
    rows = [_row("w:(2,)", "0.3.0", "2.5.0"), _row("w:(3,)", "0.3.0", "2.5.0")]
    message = compare_fingerprints(rows, n_tensors=4)
    assert message is not None
    assert message.startswith("model: ranks [1] hold trainable parameters") and "(4 tensors there)" in message


def test_this_process_reports_the_installed_versions() -> None:
    assert code_versions() == (lit_commeff.__version__, torch.__version__)


class _OtherCodeOnRank1(TinyRegressor):
    """Rank 1 pretends to run another lit_commeff release (set in the forked rank only)."""

    def setup(self, stage: str) -> None:
        if self.trainer.global_rank == 1:
            lit_commeff.__version__ = "9.9.9+other"


def test_ranks_running_other_code_versions_are_caught_at_setup() -> None:
    t = trainer(OLGAStrategy(start_method="fork"), max_steps=2)
    with pytest.raises(Exception, match=r"code: ranks \[1\] run other versions .*lit_commeff 9\.9\.9\+other"):
        t.fit(_OtherCodeOnRank1(), DataLoader(regression_data(), batch_size=32))
    assert lit_commeff.__version__ != "9.9.9+other"  # the test process itself was not changed
