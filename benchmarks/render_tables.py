"""Render the docs' result tables from the committed JSON in ``benchmarks/results/``.

Every table that quotes a benchmark result sits in README.md or docs/ between two marker comments::

    <!-- table:b3-credit-edge -->
    | method | ... |
    ...
    Command: ...; data: `benchmarks/results/b3/s6_credit_edge_results.json`.
    <!-- /table:b3-credit-edge -->

This script rewrites what lies between the markers from the JSON named in :data:`TABLES`, so the text
cannot drift from the data. The block ends with the command that produced the data and the files it was
rendered from.

    python benchmarks/render_tables.py           # rewrite every marked table in README.md and docs/
    python benchmarks/render_tables.py --check   # rewrite nothing; exit 1 naming each table that differs
    python benchmarks/render_tables.py --list    # the table names, their data and the files that show them

It reads only files in this repository (no datasets, no network) and runs in about a second.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import re
import statistics
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- table:(?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->", re.S)
OPEN = re.compile(r"<!-- (/?)table:([\w.-]+) -->")


class Spec(NamedTuple):
    """One rendered table: how it is built, from which files, by which command."""

    render: Callable[[list[Any]], list[str]]
    data: tuple[str, ...]
    command: str


def _load(relative: str) -> Any:
    return json.loads((RESULTS / relative).read_text())


@cache
def _script(name: str) -> ModuleType:
    """A benchmark script as a module: the docs' numbers are computed the way the script computes them."""
    spec = importlib.util.spec_from_file_location(f"_{name}", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _b3() -> ModuleType:
    return _script("b3_time_to_accuracy")


def _num(value: Any, fmt: str, missing: str = "—") -> str:
    value = float(value) if value is not None else math.nan
    return format(value, fmt) if math.isfinite(value) else missing


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _header(columns: list[str], left: int = 1) -> list[str]:
    return [_row(columns), "|" + "---|" * left + "---:|" * (len(columns) - left)]


# ---------------------------------------------------------------------------------------------------- B1


B1_METHODS = (
    "OLGA theory", "OLGA similarity", "OLGA auto", "EF-OLGA similarity", "EF-OLGA theory", "AccExtraGradient",
    "AccSVRS", "ADIANA", "LoCoDL", "DIANA", "EF21",
)  # fmt: skip
B1_RATIOS = (
    ("OLGA / best paper baseline", "ratio_1e6"),
    ("OLGA / DIANA", "ratio_vs_diana_1e6"),
    ("EF-OLGA / EF21", "ratio_efolga_vs_ef21_1e6"),
)


def _b1_ratio(value: Any) -> str:
    value = float(value)
    if value == 0:
        return "0 (baseline never)"
    if math.isinf(value):
        return "inf (ours never)"
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def render_b1(data: list[Any]) -> list[str]:
    """CC-3 units to 1e-6 / 1e-8 per method and configuration (the B1 script's ``--markdown`` table)."""
    lines = _header(["config", *B1_METHODS, *(title for title, _ in B1_RATIOS)])
    for res in data[0]["results"]:
        by_method = {r["method"]: r for r in res["methods"]}
        cells = [f"{float(by_method[m]['cc3_1e6']):.1f} / {float(by_method[m]['cc3_1e8']):.1f}" for m in B1_METHODS]
        name = f"{res['problem']} {res['dataset']} M={res['workers']} K={res['k']}"
        lines.append(_row([name, *cells, *(_b1_ratio(res[key]) for _, key in B1_RATIOS)]))
    return lines


# ---------------------------------------------------------------------------------------------------- B2


def _b2_ratio(value: Any) -> str:
    value = float(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.3f}×"


def _mb(value: Any) -> str:
    return "never" if value is None else f"{float(value) / 1e6:,.3f}"


def render_b2(data: list[Any]) -> list[str]:
    """Bytes per worker to the target AUROC; ``wall s`` is the whole ``Trainer.fit`` of that run."""
    lines = _header(
        ["method", "final AUROC", "up MB", "down MB", "up MB→tgt", "down MB→tgt", "step→tgt", "up/DDP", "up/best",
         "(up+down)/DDP", "(up+down)/best", "steps", "wall s"]
    )  # fmt: skip
    for r in data[0]["methods"]:
        hit, ratios = r.get("to_target"), r["ratios"]
        lines.append(
            _row([
                r["method"], f"{r['final_auroc']:.4f}", _mb(r["final_uplink_bytes"]), _mb(r["final_downlink_bytes"]),
                _mb(hit["uplink_bytes"]) if hit else "never", _mb(hit["downlink_bytes"]) if hit else "never",
                str(hit["step"]) if hit else "never",
                _b2_ratio(ratios["uplink_bytes"]["vs_ddp"]), _b2_ratio(ratios["uplink_bytes"]["vs_best_baseline"]),
                _b2_ratio(ratios["total_bytes"]["vs_ddp"]), _b2_ratio(ratios["total_bytes"]["vs_best_baseline"]),
                str(r["final_step"]), f"{r['wall_s']:.0f}",
            ])
        )  # fmt: skip
    return lines


# ---------------------------------------------------------------------------------------------------- B3


B3_NAMES = {
    "ddp": "DDP",
    "powersgd": "PowerSGD",
    "diloco": "DiLoCo (H = 50)",
    "compressed": "EF21 (`compressed`)",
    "olga": "OLGA",
    "ef_olga": "EF-OLGA",
    "ef_olga+h2": "EF-OLGA, `local_steps=2`",
    "ef_olga+h10": "EF-OLGA, `local_steps=10`, θ = 10",
    "ef_olga+h10s1": "EF-OLGA, `local_steps=10`, θ = 10, S = 1",
    "ef_olga+h20": "EF-OLGA, `local_steps=20`, θ = 20",
    "ef_olga+down10": "EF-OLGA, `downlink_compressor` TopK 10 %",
    "diloco+h10": "DiLoCo (H = 10)",
    "diloco+h25": "DiLoCo (H = 25)",
    "diloco+h100": "DiLoCo (H = 100)",
    "diloco+h50": "DiLoCo (H = 50)",
    "gated_dane+topk": "Gated DANE, TopK 1 % on every message",
    "gated_dane+topk+avg": "Gated DANE, TopK 1 % on every message, `correction=averaged`",
    "gated_dane+lagged": "Gated DANE, `correction=lagged` (the defaults until session 11)",
    "gated_dane+avg": "Gated DANE, `correction=averaged`",
    "gated_dane+avg+min10": "Gated DANE, `correction=averaged`, `min_inner_steps=10`",
    "gated_dane+shared": "Gated DANE, `preconditioner=shared`",
    "gated_dane+shared+avg": "Gated DANE, `preconditioner=shared`, `correction=averaged`",
    "gated_dane+shared+avg+h25": "Gated DANE, `preconditioner=shared`, `correction=averaged`, fixed H = 25",
    "gated_dane+shared+avg+gate2": "Gated DANE, `preconditioner=shared`, `correction=averaged`, `gate=2`",
    "gated_dane": "Gated DANE (defaults)",
    "gated_dane+s11": "Gated DANE, session 11's defaults (the drift gate alone)",
    "gated_dane+plain": "Gated DANE, plain averaging (`outer_lr=1`, `outer_momentum=0`)",
    "gated_dane+nesterov": "Gated DANE, DiLoCo's Nesterov step (`outer_lr=0.7`, `outer_momentum=0.9`)",
    "gated_dane+mom05": "Gated DANE, `outer_momentum=0.5` (`outer_lr=0.7`)",
    "gated_dane+update": "Gated DANE, `correction=update`, Nesterov (0.7, 0.9)",
    "gated_dane+h25nest": "Gated DANE, fixed H = 25, Nesterov (0.7, 0.9) (700 steps, traced)",
    "gated_dane+s11trace": "Gated DANE, session 11's defaults (700 steps, traced)",
    "gated_dane+plain700": "Gated DANE, plain averaging (the traced 700-step run)",
    "gated_dane+plain+h10": "Gated DANE, plain averaging, fixed H = 10",
    "gated_dane+plain+h25": "Gated DANE, plain averaging, fixed H = 25",
    "gated_dane+lag": "Gated DANE v2, `correction=lagged`",
    "gated_dane+fresh": "Gated DANE v2, `correction=fresh`",
    "gated_dane+h10": "Gated DANE, fixed H = 10",
    "gated_dane+h25": "Gated DANE, fixed H = 25",
    "gated_dane+h50": "Gated DANE, fixed H = 50",
    "gated_dane+lag_h10": "Gated DANE, `correction=lagged`, fixed H = 10",
    "gated_dane+deb": "Gated DANE, `delta_estimate=debiased`",
    "gated_dane+s12": "Gated DANE, session 12's defaults (H_drift unbounded below)",
    "gated_dane+topk+deb": "Gated DANE, TopK 1 % on every message, `delta_estimate=debiased`",
    "gated_dane+topk+h25": "Gated DANE, TopK 1 % on every message, fixed H = 25",
    "gated_dane+s13": "Gated DANE, session 13's round rules (first sync timed, doubling before δ̂)",
    "gated_dane+topk+s13": "Gated DANE, TopK 1 % on every message, session 13's round rules",
    "gated_dane+overlap": "Gated DANE, `overlap=true` (eager start, √(H_drift·a) rounds)",
    "gated_dane+ov_merge_Ha": "overlap, start at the anchor + own progress, rounds of a (b55bd03)",
    "gated_dane+ov_merge_Ha_m08": "overlap, start at the anchor + own progress, rounds of a, `outer_momentum=0.8`",
    "gated_dane+ov_eager_Ha": "overlap, eager start, rounds of a (951d156)",
    "gated_dane+ov_eager": "overlap, eager start, √(H_drift·a) rounds (9aa4a16, the design above)",
    "gated_dane+s14": "Gated DANE (defaults), session 14's runs",
    "gated_dane+overlap+m08": "Gated DANE, `overlap=true`, `outer_momentum=0.8`",
    "gated_dane+overlap+bf16": "Gated DANE, `overlap=true`, `message_dtype=bf16`",
    "gated_dane+fixed10": "Gated DANE (defaults), fixed H = 10",
    "gated_dane+fixed25": "Gated DANE (defaults), fixed H = 25",
    "gated_dane+sync": "Gated DANE, `overlap=false` (the synchronous sync: the defaults until session 16)",
    "gated_dane+ov_blend": "overlap, eager start from Δ_m/M + (1 − 1/M)·Δ̄_prev (uncommitted switch)",
    "gated_dane+share": "Gated DANE, `eager=share`",
    "gated_dane+om08": "Gated DANE, `outer_momentum=0.8`",
    "gated_dane+om06": "Gated DANE, `outer_momentum=0.6`",
    "gated_dane+min25": "Gated DANE, `min_inner_steps=25`",
    "gated_dane+min10": "Gated DANE, `min_inner_steps=10`",
    "gated_dane+model": "Gated DANE, `message_dtype=model` (overlap at full precision)",
    "gated_dane+overlap+share": "Gated DANE, `overlap=true`, `eager=share`",
    "gated_dane+full": "Gated DANE, `eager=full`, no correction memory (the defaults of sessions 17–18)",
    "gated_dane+once2": "Gated DANE, `eager=once`, `correction_memory=0.2` (the defaults from session 19)",
    "gated_dane+once5": "Gated DANE, `eager=once`, `correction_memory=0.5`",
    "gated_dane+once": "Gated DANE, `eager=once`, `correction_memory=0`",
    "gated_dane+prox0.1": "Gated DANE, `prox_rho=0.1`",
    "gated_dane+prox0.25": "Gated DANE, `prox_rho=0.25`",
    "gated_dane+prox0.5": "Gated DANE, `prox_rho=0.5`",
    "gated_dane+prox0.5+solved": "Gated DANE, `prox_rho=0.5`, gate without its drift clause (first build)",
    "gated_dane+prox1+solved": "Gated DANE, `prox_rho=1`, gate without its drift clause (first build)",
    "gated_dane+h100": "Gated DANE, fixed H = 100",
    "gated_dane+debiased": "Gated DANE, `delta_estimate=debiased` (under overlap since session 22)",
    "gated_dane+debiased+prox0.25": "Gated DANE, `delta_estimate=debiased`, `prox_rho=0.25`",
    "gated_dane+debiased+prox0.5": "Gated DANE, `delta_estimate=debiased`, `prox_rho=0.5`",
    "gated_dane+ov19": "Gated DANE, `overlap=true` (session 19's start: `eager=once`, memory 0.2, bf16 messages)",
    "gated_dane+bf16": "Gated DANE, `message_dtype=bf16` (the synchronous sync's gather in bf16)",
    "gated_dane+off": "Gated DANE, `nonfinite=off` (no guard, no agreement)",
    "gated_dane+shared+h10": "Gated DANE, `preconditioner=shared`, fixed H = 10",
    "gated_dane+shared+h25": "Gated DANE, `preconditioner=shared`, fixed H = 25",
    "gated_dane+update+h25": "Gated DANE, `correction=update`, fixed H = 25",
    "gated_dane+ov5": "Gated DANE, `overlap=true`, fixed rounds of 5",
    "gated_dane+ov3": "Gated DANE, `overlap=true`, fixed rounds of 3",
    "gated_dane+ov2": "Gated DANE, `overlap=true`, fixed rounds of 2",
    "gated_dane+ov25": "Gated DANE, overlap under Adam (session 25: rounds from a floor of 2, the link not weighed)",
    "gated_dane+v2": "Gated DANE, overlapped rounds as long as the exchange (the defaults from session 28)",
    "gated_dane+s27": "Gated DANE, session 27's defaults (overlapped rounds of √(H_drift·a))",
    "gated_dane+v4": "Gated DANE, rounds of the smoothed a plus its mean deviation (patch, not kept)",
    "gated_dane+v5": "Gated DANE, a round held while a stays within a third of it (patch, not kept)",
    "gated_dane+log_all": "Gated DANE (defaults), rank-0-only metrics logged on every rank (before session 29)",
    "gated_dane+log0": "Gated DANE (defaults), rank-0-only metrics logged by rank 0 alone (from session 29)",
    "diloco+h100+log_all": "DiLoCo (H = 100), rank-0-only metrics logged on every rank (before session 29)",
    "diloco+h100+log0": "DiLoCo (H = 100), rank-0-only metrics logged by rank 0 alone (from session 29)",
    "gated_dane+v7": "Gated DANE, first rounds of 2 × the floor until the exchange is timed (patch)",
    "gated_dane+f10": "Gated DANE, `min_inner_steps=10` (overlapped rounds of a, at least 10)",
    "gated_dane+h9": "Gated DANE, fixed H = 9",
    "gated_dane+h11": "Gated DANE, fixed H = 11",
}
B3_COLUMNS = [
    "method", "train s to target", "× vs DDP", "× vs best baseline", "wall s to target", "× vs DDP (wall)",
    "up MB to target", "final", "up / down MB per worker", "train / wall s",
]  # fmt: skip


def _b3_rows(results: list[dict], mae_factor: float) -> list[dict]:
    """The B3 script's analysis of merged ``*_results.json`` runs (one recipe and profile)."""
    b3 = _b3()
    present = list(dict.fromkeys(r["method"] for r in results))
    methods = [m for m in b3.METHODS if m in present] + [m for m in present if m not in b3.METHODS]
    args = argparse.Namespace(
        recipes=list(dict.fromkeys(r["recipe"] for r in results)),
        profiles=list(dict.fromkeys(r["profile"] for r in results)),
        methods=methods,
        auroc_tolerance=0.005,
        mae_factor=mae_factor,
    )
    return b3.analyse(results, args)


def _b3_table(rows: list[dict]) -> list[str]:
    lines = _header(B3_COLUMNS)
    for r in rows:
        lines.append(
            _row([
                B3_NAMES.get(r["method"], r["method"]), r["time_to_target"], _num(r["speedup_vs_ddp"], ".2f"),
                _num(r["speedup_vs_best_baseline"], ".2f"), r.get("wall_to_target", "—"),
                _num(r.get("wall_speedup_vs_ddp"), ".2f"), _num(r["uplink_MB_to_target"], ".3f"), f"{r['final']:.4f}",
                f"{r['final_uplink_MB']:.2f} / {r['final_downlink_MB']:.2f}",
                f"{r['train_s']:.1f} / {r['wall_s']:.1f}",
            ])
        )  # fmt: skip
    return lines


def b3_from_runs(mae_factor: float = 1.02) -> Callable[[list[Any]], list[str]]:
    """A B3 table computed from raw runs (``*_results.json``), merged over the given files."""

    def render(data: list[Any]) -> list[str]:
        return _b3_table(_b3_rows([r for d in data for r in d["results"]], mae_factor))

    return render


def b3_from_table(profile: str | None = None, recipe: str | None = None) -> Callable[[list[Any]], list[str]]:
    """A B3 table from the script's own ``b3_table.json`` output (runs whose raw histories were not kept)."""

    def render(data: list[Any]) -> list[str]:
        rows = [r for d in data for r in d]
        rows = [r for r in rows if (profile is None or r["profile"] == profile) and (recipe in (None, r["recipe"]))]
        return _b3_table(rows)

    return render


def b3_protocol_table(profile: str) -> Callable[[list[Any]], list[str]]:
    """Issue 19's B3 protocol (session 10): runs that reached the target, steps and up+down bytes to it."""

    def render(data: list[Any]) -> list[str]:
        rows = [r for d in data for r in d if r["profile"] == profile]
        lines = _header(
            ["method", "reached", "train s to target (median, min–max)", "× vs DDP", "× vs tuned baseline",
             "steps to target", "s / step", "up+down MB per worker to target", "final", "best (3-val. mean)"]
        )  # fmt: skip
        for r in rows:
            method, _, how = r["method"].partition(" (")  # "ddp (lan steps × edge step time)"
            lines.append(
                _row([
                    B3_NAMES.get(method, method) + (f" ({how}" if how else ""),
                    f"{r['reached']}/{r['repeats']}", r["time_to_target"], _num(r["speedup_vs_ddp"], ".2f"),
                    _num(r["speedup_vs_best_baseline"], ".2f"), _num(r["steps_to_target"], ".0f"),
                    f"{r['step_time_s']:.3f}", _num(r["wire_total_MB_to_target"], ".3f"), f"{r['final']:.4f}",
                    f"{r['best_ma3']:.4f}",
                ])
            )  # fmt: skip
        target = rows[0]["target"] if rows else float("nan")
        plateau = rows[0].get("ddp_plateau") if rows else None
        lines.append("")
        baseline = rows[0].get("best_baseline", "") if rows else ""
        lines.append(
            f"Target {target:.4f} ({rows[0].get('target_how', '') if rows else ''}; DDP plateaued: {plateau}); "
            + (f"the tuned baseline is {baseline}." if baseline else "no baseline ran beside these.")
        )
        return lines

    return render


def b3_reach_table(profile: str) -> Callable[[list[Any]], list[str]]:
    """Whether and when runs reach the target, without times (runs on ``lan``: their histories are the link's)."""

    def render(data: list[Any]) -> list[str]:
        rows = [r for d in data for r in d if r["profile"] == profile]
        lines = _header(["method", "reached", "steps to target (median)", "final", "best (3-val. mean)"])
        for r in rows:
            method = r["method"].partition(" (")[0]
            lines.append(
                _row([
                    B3_NAMES.get(method, method), f"{r['reached']}/{r['repeats']}",
                    _num(r["steps_to_target"], ".0f", missing="never"), f"{r['final']:.4f}", f"{r['best_ma3']:.4f}",
                ])
            )  # fmt: skip
        lines.append("")
        lines.append(f"Target {rows[0]['target']:.4f} ({rows[0].get('target_how', '')})." if rows else "")
        return lines

    return render


def render_collectives(data: list[Any]) -> list[str]:
    """Milliseconds per collective call on the hub, per netlab profile (``b3_collectives.py``)."""
    ms = data[0]["ms"]
    profiles = list(ms)
    lines = _header(["collective", *(f"`{p}`" for p in profiles)])
    for name in ms[profiles[0]]:
        lines.append(
            _row([name, *(f"{ms[p][name]:.2f}" if ms[p][name] < 10 else f"{ms[p][name]:.1f}" for p in profiles)])
        )
    return lines


def render_exchange_by_congestion(data: list[Any]) -> list[str]:
    """The overlapped exchange and a small gather per profile × TCP congestion control (session 26's two runs)."""
    columns = [(p, run["congestion_control"][p], run["ms"][p]) for run in data for p in run["ms"]]
    columns.sort(key=lambda c: (c[0] != "wan", c[1]))
    lines = _header(["collective (ms, median)", *(f"`{p}`, {cc}" for p, cc, _ in columns)])
    for name in columns[0][2]:
        if name.startswith("exchange") or name.startswith("gather 600"):
            lines.append(_row([name, *(f"{ms[name]:.1f}" for _, _, ms in columns)]))
    return lines


# ------------------------------------------------------------------------------------------------ B4-B7


def render_b4_quick(data: list[Any]) -> list[str]:
    """Every (ranks, hidden, method) row of a B4 run: step times and their ratios."""
    lines = _header(
        ["ranks", "hidden", "d", "method", "median ms", "mean ms", "p90 ms", "median / ddp", "mean / ddp",
         "median / ddp_metered"], left=0,
    )  # fmt: skip
    lines[1] = "|---:|---:|---:|---|" + "---:|" * 6
    for r in data[0]["rows"]:
        lines.append(
            _row([
                str(r["ranks"]), str(r["hidden"]), f"{r['d']:,}", r["method"], f"{r['median_s'] * 1e3:.2f}",
                f"{r['mean_s'] * 1e3:.2f}", f"{r['p90_s'] * 1e3:.2f}", _num(r.get("median_ratio"), ".2f", "-") + "×",
                _num(r.get("mean_ratio"), ".2f", "-") + "×", _num(r.get("median_ratio_2"), ".2f", "-") + "×",
            ])
        )  # fmt: skip
    return lines


def render_b4_full(data: list[Any]) -> list[str]:
    """Median step time per method (ratio to plain DDP), with the guard-off run beside it."""
    full, off = data[0]["rows"], data[1]["rows"]
    methods = ("ddp", "powersgd", "diloco", "compressed", "olga", "ef_olga")
    lines = [
        _row(["ranks", "hidden (d)", "DDP", "PowerSGD", "DiLoCo", "EF21 (`compressed`)", "OLGA", "EF-OLGA",
              "OLGA, guard off", "EF-OLGA, guard off"]),
        "|---:|---|" + "---:|" * 8,
    ]  # fmt: skip
    for ranks, hidden in dict.fromkeys((r["ranks"], r["hidden"]) for r in full):
        group = {r["method"]: r for r in full if (r["ranks"], r["hidden"]) == (ranks, hidden)}
        cells = [str(ranks), f"{hidden} ({group['ddp']['d']:,})", f"{group['ddp']['median_s'] * 1e3:.2f}"]
        cells += [f"{group[m]['median_s'] * 1e3:.2f} ({group[m]['median_ratio']:.2f}×)" for m in methods[1:]]
        guard = {r["method"]: r for r in off if (r["ranks"], r["hidden"]) == (ranks, hidden)}
        for m in ("olga", "ef_olga"):
            cells.append(
                f"{guard[m]['median_s'] * 1e3:.2f} ({guard[m]['median_ratio']:.2f}× of "
                f"{guard['ddp']['median_s'] * 1e3:.2f})"
                if m in guard
                else "—"
            )
        lines.append(_row(cells))
    return lines


def render_b5(data: list[Any]) -> list[str]:
    """Every compressor at every size (the B5 script's ``--markdown`` table)."""
    lines = _header(
        ["compressor", "elements", "compress ms", "decompress ms", "GB/s", "time / clone", "wire bytes", "γ"]
    )
    for r in data[0]["rows"]:
        lines.append(
            _row([
                r["compressor"], f"{r['elements']:.0e}", f"{r['compress_s'] * 1e3:.2f}",
                f"{r['decompress_s'] * 1e3:.2f}", f"{r['gb_per_s']:.2f}", f"{r['vs_clone']:.1f}×",
                f"{r['wire_bytes']:,}", f"{r['gamma']:.1f}",
            ])
        )  # fmt: skip
    return lines


def render_b5_readme(data: list[Any]) -> list[str]:
    """The 10M-element rows of B5, for the README."""
    lines = _header(["compressor (10M fp32)", "time / clone", "GB/s", "wire bytes", "γ"])
    for r in data[0]["rows"]:
        if r["elements"] == 10_000_000:
            lines.append(
                _row([r["compressor"], f"{r['vs_clone']:.1f}×", f"{r['gb_per_s']:.2f}", f"{r['wire_bytes']:,}",
                      f"{r['gamma']:.1f}"])
            )  # fmt: skip
    return lines


def render_b6(data: list[Any]) -> list[str]:
    """Seconds per OLGA round, memory, and the projected deployment time per round."""
    lines = _header(
        ["M", "d", "s/round (mean)", "anchor (dense) s", "inner (compressed) s", "y (dense) s", "peak RSS MiB",
         "edge s", "wan s", "lan s"], left=0,
    )  # fmt: skip
    for r in data[0]["rows"]:
        if "error" in r:
            lines.append(_row([f"{r['workers']:,}", f"{r['dim']:,}", r["error"], *[""] * 7]))
            continue
        s, p = r["round_s"], r["projected_round_s"]
        lines.append(
            _row([
                f"{r['workers']:,}", f"{r['dim']:,}", f"{r['mean_round_s']:.3g}", f"{s['anchor']:.3g}",
                f"{s['inner']:.3g}", f"{s['y']:.3g}", f"{r['peak_rss_mib']:,.0f}", f"{p['edge']:.3g}",
                f"{p['wan']:.3g}", f"{p['lan']:.3g}",
            ])
        )  # fmt: skip
    return lines


def render_b6_slices(data: list[Any]) -> list[str]:
    """B6 with sliced workers: every row of every file given, with its slicing and the problem's storage."""
    lines = _header(
        ["M", "d", "chunk_workers", "OLGA rounds", "problem storage", "s/round (mean)", "anchor s", "inner s", "y s",
         "peak RSS MiB", "setup s"], left=0,
    )  # fmt: skip
    for r in (row for file in data for row in file["rows"]):
        if "error" in r:
            lines.append(_row([f"{r['workers']:,}", f"{r['dim']:,}", r["error"], *[""] * 8]))
            continue
        s = r["round_s"]
        lines.append(
            _row([
                f"{r['workers']:,}", f"{r['dim']:,}", f"{r['chunk_workers']:,}" if r.get("chunk_workers") else "–",
                "worker slices" if r.get("stream") else "whole blocks",
                r.get("storage", "float32"), f"{r['mean_round_s']:.3g}",
                *(_num(s[k], ".3g") for k in ("anchor", "inner", "y")), f"{r['peak_rss_mib']:,.0f}",
                f"{r['setup_s']:.0f}",
            ])
        )  # fmt: skip
    return lines


def render_b7(data: list[Any]) -> list[str]:
    """Final AUROC over seeds per strategy, partition and rank count; DDP ran seed 0 once per cell."""
    results = data[0]
    lines = _header(["strategy", "partition", "ranks", "runs", "diverged", "min", "median", "max", "DDP (seed 0)",
                     "median − DDP"], left=2)  # fmt: skip
    strategies = [s for s in dict.fromkeys(r["strategy"] for r in results) if s != "ddp"]
    partitions = dict.fromkeys(r["partition"] for r in results)
    for cell in _script("b7_robustness").summarize(
        results, strategies, partitions, dict.fromkeys(r["ranks"] for r in results)
    ):
        lines.append(
            _row([
                cell["strategy"], cell["partition"], str(cell["ranks"]), str(cell["runs"]), str(cell["diverged"]),
                f"{cell['min']:.4f}", f"{cell['median']:.4f}", f"{cell['max']:.4f}", f"{cell['ddp']:.4f}",
                f"{cell['median'] - cell['ddp']:+.4f}".replace("-", "−"),
            ])
        )  # fmt: skip
    return lines


def _b8_cell(value: Any, fmt: str = ".0f") -> str:
    return "never" if value is None or (isinstance(value, float) and math.isinf(value)) else format(value, fmt)


def render_b8_shards(data: list[Any]) -> list[str]:
    """Rounds (collectives) and CC-3 units to 1e-6 / 1e-8 and the floor, IID and label-sorted a9a shards."""
    lines = _header(["shards (δ/μ)", "method", "CC-1 to 1e-6", "CC-3 to 1e-6", "CC-1 to 1e-8", "CC-3 to 1e-8",
                     "best rel. subopt."], left=2)  # fmt: skip
    for part in data[0]["shards"]:
        label = f"{part['split']} ({part['delta'] / part['mu']:.1f})"
        for r in part["rows"]:
            lines.append(
                _row([
                    label, r["method"], _b8_cell(r["to_1e6"]["cc1"]), _b8_cell(r["to_1e6"]["cc3"], ".1f"),
                    _b8_cell(r["to_1e8"]["cc1"]), _b8_cell(r["to_1e8"]["cc3"], ".1f"), f"{r['floor']:.1e}",
                ])
            )  # fmt: skip
    return lines


def render_b8_overlap(data: list[Any]) -> list[str]:
    """Rounds to 1e-6 / 1e-8 per outer step, and overlap's bytes per round in bf16 against full precision.

    Columns: synchronous; overlap with the eager start, full and bf16 messages; with ``eager=share`` (where the
    results have it); overlap's first version's start.
    """
    current, first = (
        {
            # before session 18 full precision was written as None (it meant the model's dtype then)
            (
                r["outer_lr"],
                r["outer_momentum"],
                r["overlap"],
                r.get("message_dtype") or "model",
                r.get("eager", "full"),
            ): r
            for r in d["overlap"]
        }
        for d in data
    )
    share = any(key[4] == "share" for key in current)
    lines = _header(
        [
            "outer step (lr, momentum)",
            "synchronous",
            "overlap, eager start",
            "overlap, bf16 messages",
            *(["overlap, `eager=share`"] if share else []),
            "overlap, anchor + own progress",
            "bf16 bytes / round vs full",
        ]
    )
    for lr, momentum, late, wire, eager in current:
        if late or wire != "model" or eager != "full":
            continue
        full, bf16 = current[lr, momentum, True, "model", "full"], current[lr, momentum, True, "bf16", "full"]
        cells = [current[lr, momentum, False, "model", "full"], full, bf16]
        if share:
            cells.append(current[lr, momentum, True, "model", "share"])
        cells.append(first[lr, momentum, True, "model", "full"])
        per_round = [r["uplink_bytes"] / r["final_cc1"] for r in (bf16, full)]
        lines.append(
            _row(
                [
                    f"({lr}, {momentum})",
                    *(f"{_b8_cell(r['to_1e6']['cc1'])} / {_b8_cell(r['to_1e8']['cc1'])}" for r in cells),
                    f"{per_round[0]:.0f} / {per_round[1]:.0f} B ({per_round[0] / per_round[1]:.2f}×)",
                ]
            )
        )
    return lines


def render_b8_overlap_noprox(data: list[Any], key: str = "overlap_noprox") -> list[str]:
    """Rounds to 1e-8, one column per variant: without a prox term (B8 part 2d) or with ``prox_rho`` (part 2e).

    A run that never reached it shows its best and last values (``diverged``: it stopped at a non-finite one).
    """
    rows = data[0][key]
    variants = list(dict.fromkeys(r["method"] for r in rows))
    cases = list(dict.fromkeys((r["problem"], r["step"], r["outer_lr"], r["outer_momentum"]) for r in rows))
    by = {(r["problem"], r["step"], r["outer_lr"], r["outer_momentum"], r["method"]): r for r in rows}
    lines = _header(["problem", "local step", "outer step (lr, momentum)", *variants], left=3)
    for problem, step, lr, momentum in cases:
        cells = []
        for variant in variants:
            r = by[problem, step, lr, momentum, variant]
            reached = r["to_1e8"]["cc1"]
            if not (isinstance(reached, float) and math.isinf(reached)):
                cells.append(_b8_cell(reached))
            else:
                cells.append("diverged" if r["diverged"] else f"never (best {r['floor']:.0e}, last {r['last']:.0e})")
        lines.append(_row([problem, f"{step:g}/L", f"({lr}, {momentum})", *cells]))
    return lines


def render_b8_sweep(data: list[Any], key: str = "sweep") -> list[str]:
    """Rounds to 1e-6 over the δ sweep (``key``: ``sweep`` or ``sweep_fixed_mu``), with the fitted slopes."""
    sweep = data[0][key]
    lines = _header(["δ/μ", "rounds, extrapolated (β from μ, θ)", "rounds, β = 0"], left=0)
    for r in sweep["rows"]:
        lines.append(_row([f"{r['delta_over_mu']:.2f}", f"{r['extrapolated']:.0f}", f"{r['beta0']:.0f}"]))
    lines.append(
        _row(["slope of log rounds vs log δ/μ", f"{sweep['slope_extrapolated']:.2f}", f"{sweep['slope_beta0']:.2f}"])
    )
    return lines


def render_b8_b1(data: list[Any]) -> list[str]:
    """CC-3 units to 1e-6 / 1e-8 on the B1 ridge configurations: Gated DANE variants beside the committed B1 run."""
    configs = data[0]["b1"]
    columns = [f"{c['dataset']} M={c['workers']}: 1e-6 / 1e-8" for c in configs]
    lines = _header(["method", *columns])
    methods = [r["method"] for r in configs[0]["rows"]] + [f"(B1) {r['method']}" for r in configs[0]["b1_committed"]]
    for method in methods:
        cells = [method]
        for c in configs:
            if method.startswith("(B1) "):
                r = next(x for x in c["b1_committed"] if x["method"] == method[5:])
                pair = (r["cc3_1e6"], r["cc3_1e8"])
            else:
                r = next(x for x in c["rows"] if x["method"] == method)
                pair = (r["to_1e6"]["cc3"], r["to_1e8"]["cc3"])
            cells.append(f"{_b8_cell(pair[0], '.2f')} / {_b8_cell(pair[1], '.2f')}")
        lines.append(_row(cells))
    return lines


def _per_seed(results: list[dict]) -> dict[str, dict[int, dict]]:
    """``{method: {seed: run}}``, the first run of each (method, seed) in file order."""
    out: dict[str, dict[int, dict]] = {}
    for run in results:
        if run["history"]:
            out.setdefault(run["method"], {}).setdefault(run["seed"], run)
    return out


def finals(methods: tuple[str, ...], digits: int) -> Callable[[list[Any]], list[str]]:
    """Final metric per seed of B3 runs, the mean, the gap to DDP's mean and the uplink per worker.

    A shaped link changes time, not numerics (docs/benchmarks.md), so these are also the finals of the
    same job on loopback.
    """

    def render(data: list[Any]) -> list[str]:
        runs = _per_seed([r for d in data for r in d["results"]])
        seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
        columns = ["run", *(f"seed {s}" for s in seeds), "mean", "gap to DDP", "up MB per worker (median)"]
        lines = _header(columns)
        reference = statistics.mean(run["history"][-1]["value"] for run in runs["ddp"].values())
        for method in methods:
            by_seed = runs[method]
            values = [by_seed[s]["history"][-1]["value"] if s in by_seed else None for s in seeds]
            mean = statistics.mean(v for v in values if v is not None)
            gap = "—" if method == "ddp" else f"{mean - reference:+.{digits}f}".replace("-", "−")
            up = statistics.median(run["history"][-1]["uplink_bytes"] for run in by_seed.values()) / 1e6
            lines.append(
                _row([
                    B3_NAMES.get(method, method), *(_num(v, f".{digits}f") for v in values), f"{mean:.{digits}f}", gap,
                    f"{up:.2f}",
                ])
            )  # fmt: skip
        return lines

    return render


def curve(methods: tuple[str, ...]) -> Callable[[list[Any]], list[str]]:
    """Every validation of one seed's B3 runs: the metric at each validated step."""

    def render(data: list[Any]) -> list[str]:
        runs = {r["method"]: r for d in data for r in d["results"] if r["history"]}
        steps = [h["step"] for h in runs["ddp"]["history"]]
        lines = _header(["run", *(f"step {s}" for s in steps), "up MB per worker"])
        for method in methods:
            history = runs[method]["history"]
            lines.append(
                _row([B3_NAMES.get(method, method), *(f"{h['value']:.2f}" for h in history),
                      f"{history[-1]['uplink_bytes'] / 1e6:.2f}"])
            )  # fmt: skip
        return lines

    return render


# --------------------------------------------------------------------------------------------- registry

_B3_CREDIT = '`b3_time_to_accuracy.py` runs listed under "How it was run" in docs/benchmarks.md'
_TPUT_EDGE = (
    "b3/s6_tput_edge_s0_results.json", "b3/s6_tput_edge_s1_results.json", "b3/s6_tput_edge_s2_results.json",
    "b3/s7_tput_edge_powersgd_s12_results.json",
)  # fmt: skip
_TPUT_WAN = ("b3/s7_tput_wan_s0_results.json", "b3/s7_tput_wan_s1_results.json", "b3/s7_tput_wan_s2_results.json")
_CREDIT_WAN = (
    "b3/s7_credit_wan_s0a_results.json", "b3/s7_credit_wan_s0b_results.json", "b3/s7_credit_wan_s12_results.json",
)  # fmt: skip
_PERSIST = (
    f"{_B3_CREDIT}, read with `python benchmarks/b3_time_to_accuracy.py --reuse --merge FILES --mae-factor 1.0609`"
)


def render_recipes(data: list[Any]) -> list[str]:
    """Single-process runs of each recipe's defaults: final validation metrics, mean over seeds (range)."""
    runs = data[0]["results"]
    lines = _header(["recipe", "data", "steps", "seeds", "validation (mean, min–max over seeds)"], left=2)
    for recipe in dict.fromkeys(r["recipe"] for r in runs):
        mine = [r for r in runs if r["recipe"] == recipe]
        keys = [
            k for k in ("val/auroc", "val/ap", "val/f1", "val/mae", "val/mae_persistence") if k in mine[0]["metrics"]
        ]
        shown = []
        for key in keys:
            values = [r["metrics"][key] for r in mine]
            spread = f" ({min(values):.3f}–{max(values):.3f})" if len(values) > 1 else ""
            shown.append(f"{key.removeprefix('val/')} {statistics.fmean(values):.3f}{spread}")
        seeds = ", ".join(str(r["seed"]) for r in mine)
        lines.append(_row([recipe, f"`{mine[0]['data']}`", str(mine[0]["steps"]), seeds, "; ".join(shown)]))
    return lines


_B3_BYGROUP = (
    "`python benchmarks/b3_time_to_accuracy.py --recipes finance_credit --profiles edge --methods ... --seeds ... "
    "--variant ... --common trainer.val_check_interval=15 recipe.data.partition=by_group` (the JSON's `meta.runs` "
    "hold each run's argv)"
)


def _b1_locodl(name: str) -> str:
    """How the LoCoDL rows of a B1 file were re-run after its constants changed (issue 20)."""
    return (
        f"; LoCoDL's rows re-run with its issue-20 constants by `python benchmarks/b1_paper_reproduction.py "
        f"--update benchmarks/results/{name} --methods LoCoDL` (`meta.updates`)"
    )


def _b3_session_spec(session: int, key: str, recipe: str, profiles: str) -> Spec:
    """A session's B3 protocol table: runs merged into ``b3/s{session}_{key}.json``, rendered into its tables folder."""
    out = f"benchmarks/results/b3/s{session}_tables/{key}"
    return Spec(
        b3_protocol_table(profiles.split()[0]),
        (f"b3/s{session}_tables/{key}/b3_table.json",),
        f"`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s{session}_{key}.json "
        f"--recipes {recipe} --profiles {profiles} --methods ddp gated_dane --out {out} --plot {out}/b3.png` (the "
        "runs' own commands are in the JSON's `meta.runs`; `meta.note` says which session ran which)",
    )


TABLES: dict[str, Spec] = {
    "b1-quick": Spec(
        render_b1,
        ("b1_quick.json",),
        "`python benchmarks/b1_paper_reproduction.py --quick`" + _b1_locodl("b1_quick.json"),
    ),
    "b1-ridge": Spec(
        render_b1,
        ("b1_ridge.json",),
        "`python benchmarks/b1_paper_reproduction.py --only ridge/a9a ridge/mushrooms`" + _b1_locodl("b1_ridge.json"),
    ),
    "b1-logistic": Spec(
        render_b1,
        ("b1_logistic.json",),
        "`python benchmarks/b1_paper_reproduction.py --only logistic/a9a logistic/mushrooms --budget 100`, assembled "
        "from several partial runs of one session (`meta.note`; `meta.complete` is false, see above); LoCoDL's rows "
        "re-run with its issue-20 constants for every configuration (`meta.locodl_rerun`; the `--update` commands "
        "are in `meta.updates`)",
    ),
    "b2-quick": Spec(render_b2, ("b2_quick.json",), "`python benchmarks/b2_bytes_to_accuracy.py`"),
    "b4-quick": Spec(render_b4_quick, ("b4_cpu.json",), "`python benchmarks/b4_overhead.py`"),
    "b4-full": Spec(
        render_b4_full,
        ("b4_cpu_full.json", "b4_cpu_full_guard_off.json"),
        "`python benchmarks/b4_overhead.py --no-quick`, then `--no-quick --ranks 4 --methods ddp olga ef_olga "
        "--set olga.nonfinite=off ef_olga.nonfinite=off`",
    ),
    "b5": Spec(render_b5, ("b5_cpu.json",), "`python benchmarks/b5_compressor_throughput.py`"),
    "b5-readme": Spec(render_b5_readme, ("b5_cpu.json",), "`python benchmarks/b5_compressor_throughput.py`"),
    "b6": Spec(render_b6, ("b6_cpu.json",), "`python benchmarks/b6_simulator_scale.py`"),
    "b6-slices": Spec(
        render_b6_slices,
        ("b6_cpu_10000x20000.json", "b6_cpu_10000x100000_stream_float16.json"),
        "`python benchmarks/b6_simulator_scale.py --configs 10000x20000 --chunk-workers 0 1000 --rounds 6` and "
        "`python benchmarks/b6_simulator_scale.py --configs 10000x100000 --chunk-workers 250 --stream --storage "
        "float16 --rounds 8`",
    ),
    "b7": Spec(render_b7, ("b7/b7_results.json",), "`python benchmarks/b7_robustness.py`"),
    "b8-shards": Spec(render_b8_shards, ("b8_gated_dane.json",), "`python benchmarks/b8_gated_dane.py --b1`"),
    "b8-sweep": Spec(render_b8_sweep, ("b8_gated_dane.json",), "`python benchmarks/b8_gated_dane.py --b1`"),
    "b3-s10-credit-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s10_tables/credit_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s10_credit_bygroup_edge.json "
        "--recipes finance_credit --profiles edge lan --methods ddp powersgd gated_dane --out "
        "benchmarks/results/b3/s10_tables/credit_bygroup_edge` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    "b3-s10-tput-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s10_tables/tput_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s10_tput_bygroup_edge.json "
        "--recipes telecom_throughput --profiles edge lan --methods ddp powersgd gated_dane --out "
        "benchmarks/results/b3/s10_tables/tput_bygroup_edge` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    "b3-s10-bw-tput-bygroup-wan": Spec(
        b3_protocol_table("wan"),
        ("b3/s10_tables/bw_tput_bygroup_wan/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s10_bw_tput_bygroup_wan.json "
        "--recipes telecom_throughput --profiles wan lan --methods ddp powersgd gated_dane --out "
        "benchmarks/results/b3/s10_tables/bw_tput_bygroup_wan` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    "b3-s11-tput-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s11_tables/tput_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s11_tput_bygroup_edge.json "
        "--recipes telecom_throughput --profiles edge lan --methods ddp powersgd gated_dane --out "
        "benchmarks/results/b3/s11_tables/tput_bygroup_edge --plot benchmarks/results/b3/s11_tables/tput_bygroup_edge/"
        "b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which session ran which)",
    ),
    "b3-s11-credit-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s11_tables/credit_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s11_credit_bygroup_edge.json "
        "--recipes finance_credit --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s11_tables/credit_bygroup_edge --plot benchmarks/results/b3/s11_tables/"
        "credit_bygroup_edge/b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which "
        "session ran which)",
    ),
    "b3-s11-bw-tput-bygroup-wan": Spec(
        b3_protocol_table("wan"),
        ("b3/s11_tables/bw_tput_bygroup_wan/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s11_bw_tput_bygroup_wan.json "
        "--recipes telecom_throughput --profiles wan lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s11_tables/bw_tput_bygroup_wan --plot benchmarks/results/b3/s11_tables/"
        "bw_tput_bygroup_wan/b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which "
        "session ran which)",
    ),
    "b3-s11-credit-iid-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s11_tables/credit_iid_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s11_credit_iid_edge.json "
        "--recipes finance_credit --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s11_tables/credit_iid_edge --plot benchmarks/results/b3/s11_tables/"
        "credit_iid_edge/b3.png` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    "b3-s12-credit-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s12_tables/credit_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s12_credit_bygroup_edge.json "
        "--recipes finance_credit --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/credit_bygroup_edge --plot benchmarks/results/b3/s12_tables/"
        "credit_bygroup_edge/b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which "
        "session ran which)",
    ),
    "b3-s12-tput-bygroup-lan-outer": Spec(
        b3_reach_table("lan"),
        ("b3/s12_tables/tput_bygroup_lan_outer/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge "
        "benchmarks/results/b3/s12_tput_bygroup_lan_outer.json --recipes telecom_throughput --profiles lan "
        "--methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/tput_bygroup_lan_outer --plot benchmarks/results/b3/s12_tables/"
        "tput_bygroup_lan_outer/b3.png` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    "b3-s24-tput-bygroup-lan-fixed-h": Spec(
        b3_reach_table("lan"),
        ("b3/s24_tables/tput_bygroup_lan_fixed_h/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge "
        "benchmarks/results/b3/s24_tput_bygroup_lan_fixed_h.json --recipes telecom_throughput --profiles lan "
        "--methods ddp gated_dane --out benchmarks/results/b3/s24_tables/tput_bygroup_lan_fixed_h --plot "
        "benchmarks/results/b3/s24_tables/tput_bygroup_lan_fixed_h/b3.png` (the runs' own commands are in the JSON's "
        "`meta.runs`; `meta.note` says which session ran which)",
    ),
    "b3-s25-tput-bygroup-lan-overlap-rounds": Spec(
        b3_reach_table("lan"),
        ("b3/s25_tables/tput_bygroup_lan_overlap_rounds/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge "
        "benchmarks/results/b3/s25_tput_bygroup_lan_overlap_rounds.json --recipes telecom_throughput --profiles lan "
        "--methods ddp gated_dane --out benchmarks/results/b3/s25_tables/tput_bygroup_lan_overlap_rounds --plot "
        "benchmarks/results/b3/s25_tables/tput_bygroup_lan_overlap_rounds/b3.png` (the runs' own commands are in the "
        "JSON's `meta.runs`; `meta.note` says which session ran which)",
    ),
    "b3-s12-tput-bygroup-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s12_tables/tput_bygroup_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s12_tput_bygroup_edge.json "
        "--recipes telecom_throughput --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/tput_bygroup_edge --plot benchmarks/results/b3/s12_tables/tput_bygroup_edge/"
        "b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which session ran which)",
    ),
    "b3-s12-credit-iid-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s12_tables/credit_iid_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s12_credit_iid_edge.json "
        "--recipes finance_credit --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/credit_iid_edge --plot benchmarks/results/b3/s12_tables/"
        "credit_iid_edge/b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which "
        "session ran which)",
    ),
    "b3-s12-bw-tput-bygroup-wan": Spec(
        b3_protocol_table("wan"),
        ("b3/s12_tables/bw_tput_bygroup_wan/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s12_bw_tput_bygroup_wan.json "
        "--recipes telecom_throughput --profiles wan lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/bw_tput_bygroup_wan --plot benchmarks/results/b3/s12_tables/"
        "bw_tput_bygroup_wan/b3.png` (the runs' own commands are in the JSON's `meta.runs`; `meta.note` says which "
        "session ran which)",
    ),
    "b3-s12-tput-iid-edge": Spec(
        b3_protocol_table("edge"),
        ("b3/s12_tables/tput_iid_edge/b3_table.json",),
        "`python benchmarks/b3_time_to_accuracy.py --reuse --merge benchmarks/results/b3/s12_tput_iid_edge.json "
        "--recipes telecom_throughput --profiles edge lan --methods ddp gated_dane --out "
        "benchmarks/results/b3/s12_tables/tput_iid_edge --plot benchmarks/results/b3/s12_tables/tput_iid_edge/"
        "b3.png` (the runs' own commands are in the JSON's `meta.runs`)",
    ),
    **{
        f"b3-s{session}-{key.replace('_', '-')}": _b3_session_spec(session, key, recipe, profiles)
        for session, key, recipe, profiles in (
            (13, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (13, "credit_iid_edge", "finance_credit", "edge lan"),
            (13, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (13, "bw_tput_bygroup_wan", "telecom_throughput", "wan lan"),
            (13, "credit_bygroup_wan", "finance_credit", "wan lan"),
            (14, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (14, "bw_tput_bygroup_wan", "telecom_throughput", "wan lan"),
            (14, "credit_iid_wan", "finance_credit", "wan lan"),
            (14, "tput_iid_edge", "telecom_throughput", "edge lan"),
            (14, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (15, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (15, "credit_bygroup_edge_overlap_pilots", "finance_credit", "edge lan"),
            (15, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (15, "credit_iid_edge", "finance_credit", "edge lan"),
            (15, "credit_bygroup_wan", "finance_credit", "wan lan"),
            (15, "credit_iid_wan", "finance_credit", "wan lan"),
            (16, "credit_bygroup_edge_synclog", "finance_credit", "edge lan"),
            (16, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (16, "credit_bygroup_edge_5seeds", "finance_credit", "edge lan"),
            (16, "credit_bygroup_edge_diloco_h", "finance_credit", "edge lan"),
            (16, "credit_iid_edge", "finance_credit", "edge lan"),
            (16, "credit_bygroup_wan", "finance_credit", "wan lan"),
            (16, "credit_iid_edge_synclog", "finance_credit", "edge lan"),
            (17, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (17, "churn_bygroup_edge_diloco_h", "telecom_churn", "edge lan"),
            (17, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (17, "churn_bygroup_edge", "telecom_churn", "edge lan"),
            (18, "churn_bygroup_edge", "telecom_churn", "edge lan"),
            (18, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (18, "churn_bygroup_edge_corrections", "telecom_churn", "edge lan"),
            (19, "churn_bygroup_edge", "telecom_churn", "edge lan"),
            (19, "churn_bygroup_edge_starts", "telecom_churn", "edge lan"),
            (19, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (19, "credit_iid_edge", "finance_credit", "edge lan"),
            (20, "churn_iid_edge", "telecom_churn", "edge lan"),
            (20, "churn_iid_edge_diloco_h", "telecom_churn", "edge lan"),
            (20, "credit_bygroup_wan", "finance_credit", "wan lan"),
            (20, "credit_iid_wan", "finance_credit", "wan lan"),
            (21, "credit_bygroup_edge_prox_first", "finance_credit", "edge lan"),
            (21, "credit_bygroup_edge_prox", "finance_credit", "edge lan"),
            (21, "churn_bygroup_edge_prox", "telecom_churn", "edge lan"),
            (21, "churn_iid_edge_fixed_h", "telecom_churn", "edge lan"),
            (21, "churn_iid_edge_gated_vs_h10", "telecom_churn", "edge lan"),
            (21, "churn_iid_edge_min10", "telecom_churn", "edge lan"),
            (22, "churn_iid_edge_debiased", "telecom_churn", "edge lan"),
            (22, "credit_bygroup_edge_debiased", "finance_credit", "edge lan"),
            (22, "credit_bygroup_edge_debiased_prox", "finance_credit", "edge lan"),
            (22, "churn_bygroup_edge_debiased", "telecom_churn", "edge lan"),
            (22, "credit_iid_edge_debiased", "finance_credit", "edge lan"),
            (22, "churn_iid_edge_gated_vs_h10", "telecom_churn", "edge lan"),
            (23, "tput_bygroup_wan", "telecom_throughput", "wan lan"),
            (23, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (23, "tput_iid_wan", "telecom_throughput", "wan lan"),
            (23, "tput_iid_edge", "telecom_throughput", "edge lan"),
            (24, "tput_bygroup_wan", "telecom_throughput", "wan lan"),
            (25, "tput_bygroup_wan", "telecom_throughput", "wan lan"),
            (25, "tput_bygroup_edge", "telecom_throughput", "edge lan"),
            (26, "tput_bygroup_wan_cubic", "telecom_throughput", "wan lan"),
            (26, "tput_bygroup_wan_cubic_grid", "telecom_throughput", "wan lan"),
            (26, "tput_bygroup_wan_bbr_seed0", "telecom_throughput", "wan lan"),
            (26, "tput_iid_wan_cubic", "telecom_throughput", "wan lan"),
            (27, "credit_iid_edge_fixed_h", "finance_credit", "edge lan"),
            (27, "churn_bygroup_edge_fixed_h", "telecom_churn", "edge lan"),
            (28, "churn_bygroup_edge", "telecom_churn", "edge lan"),
            (28, "credit_bygroup_edge", "finance_credit", "edge lan"),
            (28, "credit_iid_edge", "finance_credit", "edge lan"),
            (29, "churn_bygroup_edge_rounds", "telecom_churn", "edge lan"),
            (29, "churn_bygroup_edge_seeds345", "telecom_churn", "edge lan"),
            (29, "churn_bygroup_edge_logging", "telecom_churn", "edge lan"),
            (30, "churn_bygroup_edge_first_rounds", "telecom_churn", "edge lan"),
            (30, "churn_bygroup_edge_floor10", "telecom_churn", "edge lan"),
            (30, "churn_bygroup_edge_seeds345", "telecom_churn", "edge lan"),
            (30, "credit_bygroup_edge_first_rounds", "finance_credit", "edge lan"),
            (31, "churn_bygroup_edge_fixed_9_10_11", "telecom_churn", "edge lan"),
            (31, "churn_bygroup_edge_ten_seeds", "telecom_churn", "edge lan"),
        )
    },
    "b8-sweep-fixed-mu": Spec(
        functools.partial(render_b8_sweep, key="sweep_fixed_mu"),
        ("b8_sweep_fixed_mu.json",),
        "`python benchmarks/b8_gated_dane.py --parts sweep_fixed_mu --out benchmarks/results/b8_sweep_fixed_mu.json`",
    ),
    "b8-b1": Spec(render_b8_b1, ("b8_gated_dane.json",), "`python benchmarks/b8_gated_dane.py --b1`"),
    "b8-overlap": Spec(
        render_b8_overlap,
        ("b8_overlap.json", "b8_overlap_b55bd03.json"),
        "`python benchmarks/b8_gated_dane.py --parts overlap --out benchmarks/results/b8_overlap.json`; the column "
        "'anchor + own progress' is the same command run with the package at commit b55bd03 (overlap's first "
        "version), `benchmarks/results/b8_overlap_b55bd03.json`. Bytes: all workers' uplink per round in the "
        "simulator's float64 (bf16 values are a quarter of float64's, half of a float32 model's)",
    ),
    "b8-overlap-noprox": Spec(
        render_b8_overlap_noprox,
        ("b8_overlap_noprox.json",),
        "`python benchmarks/b8_gated_dane.py --parts overlap_noprox --out benchmarks/results/b8_overlap_noprox.json`; "
        "rounds (syncs) to relative suboptimality 1e-8 within 6000 local steps, full-precision messages",
    ),
    "b8-overlap-prox": Spec(
        functools.partial(render_b8_overlap_noprox, key="overlap_prox"),
        ("b8_overlap_prox.json",),
        "`python benchmarks/b8_gated_dane.py --parts overlap_prox --out benchmarks/results/b8_overlap_prox.json`; "
        "rounds (syncs) to relative suboptimality 1e-8 within 6000 local steps, full-precision messages",
    ),
    "b3-credit-edge": Spec(b3_from_runs(), ("b3/s6_credit_edge_results.json",), _B3_CREDIT),
    "b3-credit-bygroup-edge-h": Spec(b3_from_runs(), ("b3/s9_credit_bygroup_edge_h.json",), _B3_BYGROUP),
    "b3-credit-bygroup-edge-s0": Spec(b3_from_runs(), ("b3/s9_credit_bygroup_edge_s0.json",), _B3_BYGROUP),
    "b3-credit-bygroup-edge": Spec(b3_from_runs(), ("b3/s9_credit_bygroup_edge_3seeds.json",), _B3_BYGROUP),
    "b3-credit-lan": Spec(b3_from_runs(), ("b3/s6_credit_lan_results.json",), _B3_CREDIT),
    "b3-credit-wan": Spec(b3_from_runs(), _CREDIT_WAN, _B3_CREDIT),
    "b3-tput-edge": Spec(b3_from_runs(), _TPUT_EDGE, _B3_CREDIT),
    "b3-tput-lan": Spec(b3_from_runs(), ("b3/s6_tput_lan_results.json",), _B3_CREDIT),
    "b3-tput-wan": Spec(b3_from_runs(), _TPUT_WAN, _B3_CREDIT),
    "b3-tput-edge-persistence": Spec(b3_from_runs(1.0609), _TPUT_EDGE, _PERSIST),
    "b3-tput-lan-persistence": Spec(b3_from_runs(1.0609), ("b3/s6_tput_lan_results.json",), _PERSIST),
    "b3-tput-wan-persistence": Spec(b3_from_runs(1.0609), _TPUT_WAN, _PERSIST),
    "b3-credit-sym10": Spec(
        b3_from_runs(),
        ("b3/s6_credit_sym10_results.json",),
        'the `sudo python benchmarks/b3_time_to_accuracy.py --profiles "edge,down=10,name=sym10" ...` command above',
    ),
    "b3-s26-exchange": Spec(
        render_exchange_by_congestion,
        ("b3/s26_collectives_bbr.json", "b3/s26_collectives_cubic.json"),
        "`sudo python benchmarks/b3_collectives.py --profiles wan edge --dim 14000 --reps 20 --congestion-control bbr "
        "--out benchmarks/results/b3/s26_collectives_bbr.json`, and the same with `cubic` "
        "(`s26_collectives_cubic.json`); the exchanges on rank 1's clock after 60 ms of idle compute, the gather on "
        "rank 0's, back to back",
    ),
    "b3-collectives": Spec(
        render_collectives,
        ("b3/collectives.json",),
        "`sudo python benchmarks/b3_collectives.py --profiles edge wan lan`",
    ),
    "b3-sigterm-fix": Spec(
        b3_from_runs(),
        ("b3/b3_credit_edge_sigterm_fix_results.json",),
        'the `--variant` command under "Local steps" below, rerun after the SIGTERM change',
    ),
    "b3-local-steps-edge": Spec(
        b3_from_table(), ("b3/b3_credit_edge_local_steps_table.json",), "the `--variant` command above (edge)"
    ),
    "b3-local-steps-lan": Spec(
        b3_from_table(), ("b3/b3_credit_lan_local_steps_table.json",), "the same command with `--profiles lan`"
    ),
    "b3-first-credit-edge": Spec(
        b3_from_table("edge", "finance_credit"),
        ("b3/b3_table.json",),
        "`sudo python benchmarks/b3_time_to_accuracy.py --recipes finance_credit --profiles edge --repeats 1 --common "
        "trainer.val_check_interval=31`, then `--seeds 1 2 --methods ddp diloco olga ef_olga` (runs: "
        "`benchmarks/results/b3/b3_credit_results.json`)",
    ),
    "b3-first-credit-wan": Spec(
        b3_from_table("wan", "finance_credit"),
        ("b3/b3_table.json",),
        "`sudo python benchmarks/b3_time_to_accuracy.py --recipes finance_credit --profiles wan lan --repeats 1 "
        "--common trainer.val_check_interval=31` (runs: `benchmarks/results/b3/b3_credit_results.json`)",
    ),
    "b3-first-credit-lan": Spec(
        b3_from_table("lan", "finance_credit"),
        ("b3/b3_table.json",),
        "the same command as for `wan` (runs: `benchmarks/results/b3/b3_credit_results.json`)",
    ),
    "b3-first-tput-edge": Spec(
        b3_from_runs(), ("b3/b3_throughput_results.json",), "the command in this file's `meta.argv`"
    ),
    "b3-first-tput-edge-persistence": Spec(
        b3_from_runs(1.0609),
        ("b3/b3_throughput_results.json",),
        "the same runs, read with `--reuse --mae-factor 1.0609`",
    ),
    "recipes-single-process": Spec(
        render_recipes,
        ("recipes_single_process.json",),
        "`python benchmarks/recipes_single_process.py --data ../shared/datasets --seeds 0 1 2`",
    ),
    "na-credit-finals": Spec(
        finals(("ddp", "powersgd", "diloco", "compressed", "olga", "ef_olga"), 4),
        ("b3/s6_credit_edge_results.json",),
        _B3_CREDIT + " (credit on `edge`)",
    ),
    "na-local-steps-finals": Spec(
        finals(("ddp", "diloco", "ef_olga", "ef_olga+h2", "ef_olga+h10"), 4),
        ("b3/b3_credit_edge_sigterm_fix_results.json",),
        'the `--variant` command in docs/benchmarks.md, "Local steps"',
    ),
    "na-tput-finals": Spec(
        finals(("ddp", "powersgd", "diloco", "compressed", "olga", "ef_olga"), 3),
        _TPUT_EDGE,
        _B3_CREDIT + " (throughput on `edge`)",
    ),
    "na-tput-seed0": Spec(
        curve(("ddp", "powersgd", "diloco", "compressed", "ef_olga", "olga")),
        ("b3/s6_tput_edge_s0_results.json",),
        _B3_CREDIT + " (throughput on `edge`, seed 0)",
    ),
}


def render(name: str) -> str:
    """The text between the markers of table ``name``: the table, then its command and data files."""
    spec = TABLES[name]
    lines = spec.render([_load(path) for path in spec.data])
    files = ", ".join(f"`benchmarks/results/{path}`" for path in spec.data)
    return "\n".join(lines) + f"\n\nCommand: {spec.command}; data: {files}.\n"


def rewrite(text: str, origin: str) -> tuple[str, list[str]]:
    """``text`` with every marked table re-rendered, and the names of the tables that changed."""
    for _closing, name in OPEN.findall(text):
        if name not in TABLES:
            raise SystemExit(f"{origin}: table marker {name!r} has no entry in TABLES; known: {', '.join(TABLES)}.")
    opened = [name for closing, name in OPEN.findall(text) if not closing]
    if len(opened) != len(MARKER.findall(text)):
        raise SystemExit(f"{origin}: a table marker is not closed; write <!-- /table:NAME --> after each table.")
    changed: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match["name"]
        body = render(name)
        if body != match["body"]:
            changed.append(name)
        return f"<!-- table:{name} -->\n{body}<!-- /table:{name} -->"

    return MARKER.sub(substitute, text), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 if a table differs from its data")
    parser.add_argument("--list", action="store_true", help="print each table, its data and where it is shown")
    parser.add_argument("files", nargs="*", type=Path, help="markdown files (default: README.md and docs/**/*.md)")
    args = parser.parse_args(argv)
    files = [f.resolve() for f in args.files] or DOCS
    shown: dict[str, list[str]] = {name: [] for name in TABLES}
    stale: list[str] = []
    for path in files:
        text = path.read_text()
        origin = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        new, changed = rewrite(text, origin)
        for _, name in OPEN.findall(text):
            if origin not in shown[name]:
                shown[name].append(origin)
        stale += [f"{origin}: {name}" for name in changed]
        if changed and not args.check:
            path.write_text(new)
    if args.list:
        for name, spec in TABLES.items():
            print(f"{name}: {', '.join(spec.data)} -> {', '.join(shown[name]) or '(not shown)'}")
    if args.check and stale:
        print(
            "These tables differ from their JSON; run `python benchmarks/render_tables.py` and commit the result:\n  "
            + "\n  ".join(stale),
            file=sys.stderr,
        )
        return 1
    if not args.check:
        print("\n".join(f"rewrote {item}" for item in stale) or "every table matches its data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
