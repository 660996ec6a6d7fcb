"""``lit-commeff-compare``: the runs of an MLflow experiment side by side, and validation metric vs uplink bytes.

    lit-commeff-compare                                   # ./mlflow.db, experiment lit_commeff
    lit-commeff-compare --experiment credit --metric val/auroc --tolerance 0.005 --out compare.png

For every finished run: the final value of the monitored metric; uplink, downlink and total MB per
worker on the wire (ring all-reduce, star gather/broadcast), each with its ratio to dense DDP's; uplink MB
to reach the target (the reference run's final metric minus/plus ``--tolerance``; the reference is the
run whose algorithm is ``--reference``, default ``ddp``), and wall time. DDP's bytes are the reference
run's, measured, when the experiment has one; otherwise each run's own dense-DDP figure computed from its
model size and steps (the table says which). A line under the table names every run that moves more bytes
than DDP in some direction. Curves come from each run's ``history.jsonl`` artifact (exact bytes at every
validation).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from lit_commeff.strategy.metering import times
from lit_commeff.tracking.history import HISTORY_FILE, plot_metric_vs_bytes, read_history


def load_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Finished runs of an experiment with their tags, history and final metrics (oldest first)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"lit-commeff-compare: no experiment {experiment!r} in {tracking_uri}.")
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'")
    out = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = client.download_artifacts(run.info.run_id, HISTORY_FILE, tmp)
                history = read_history(path)
            except Exception:  # a run without the artifact (e.g. logged by another tool)
                history = []
        out.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "algorithm": run.data.tags.get("lit_commeff.algorithm", "?"),
                "recipe": run.data.tags.get("lit_commeff.recipe", "?"),
                "metrics": dict(run.data.metrics),
                "history": history,
                "wall_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
            }
        )
    return out


def bytes_to_target(history: Sequence[dict[str, Any]], target: float, mode: str) -> float | None:
    """Uplink bytes at the first validation whose value reaches the target (None if never).

    Bytes on the wire (``wire_up_bytes``); handed bytes in histories written before the wire view.
    """
    for record in history:
        value = record.get("value")
        if value is None:
            continue
        if (mode == "max" and value >= target) or (mode == "min" and value <= target):
            wire = record.get("wire_up_bytes")
            return wire if wire is not None else record.get("uplink_bytes")
    return None


#: Directions compared with DDP: name -> (final metric of the run, final metric of DDP's figure from model size).
DIRECTIONS = {
    "up": ("final/worker_wire_up_bytes", "final/ddp_wire_up_bytes"),
    "down": ("final/worker_wire_down_bytes", "final/ddp_wire_down_bytes"),
    "total": ("final/worker_wire_total_bytes", "final/ddp_wire_total_bytes"),
}


def wire_bytes(run: dict[str, Any]) -> dict[str, float | None]:
    """A run's final wire bytes per worker by direction (None where the run predates the wire view)."""
    metrics = run.get("metrics", {})
    last = run["history"][-1] if run.get("history") else {}
    out: dict[str, float | None] = {}
    for direction, (key, _) in DIRECTIONS.items():
        value = metrics.get(key)
        out[direction] = value if value is not None else last.get(f"wire_{direction}_bytes")
    return out


def ddp_reference(runs: Sequence[dict[str, Any]], reference: str) -> dict[str, Any] | None:
    """The newest run of the ``reference`` algorithm with wire bytes in every direction: ``{"name", "up", ...}``."""
    for run in reversed(runs):
        if run["algorithm"] != reference:
            continue
        wire = wire_bytes(run)
        if all(v is not None for v in wire.values()):
            return {"name": run["name"], **wire}
    return None


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    if reference:
        return value / reference
    return math.inf if value else math.nan


def compare(
    runs: list[dict[str, Any]], *, metric: str, mode: str, tolerance: float, reference: str
) -> tuple[list[dict[str, Any]], float | None]:
    """One row per run; the target is the reference run's final value minus (max) / plus (min) tolerance."""
    ref = [r for r in runs if r["algorithm"] == reference and r["history"]]
    target = None
    if ref:
        final = ref[-1]["history"][-1]["value"]
        target = final - tolerance if mode == "max" else final + tolerance
    measured = ddp_reference(runs, reference)
    rows = []
    for run in runs:
        hist = run["history"]
        last = hist[-1] if hist else {}
        wire = wire_bytes(run)
        if measured is not None:
            ddp: dict[str, Any] = measured
            source = f"run {measured['name']} (measured)"
        else:
            ddp = {d: run.get("metrics", {}).get(key) for d, (_, key) in DIRECTIONS.items()}
            source = "model size (ring all-reduce of the gradient per step)"
        ratios = {d: _ratio(wire[d], ddp[d]) for d in DIRECTIONS}
        rows.append(
            {
                "name": run["name"],
                "algorithm": run["algorithm"],
                "final": last.get("value"),
                "uplink_mb": (last.get("uplink_bytes") or 0) / 1e6 if last else math.nan,
                "downlink_mb": (last.get("downlink_bytes") or 0) / 1e6 if last else math.nan,
                **{f"wire_{d}_mb": None if (b := wire[d]) is None else b / 1e6 for d in DIRECTIONS},
                **{f"{d}_vs_ddp": ratios[d] for d in DIRECTIONS},
                "ddp_reference": source if any(r is not None for r in ratios.values()) else None,
                "more_than_ddp": [d for d, r in ratios.items() if r is not None and r > 1],
                "to_target_mb": None
                if target is None or (b := bytes_to_target(hist, target, mode)) is None
                else b / 1e6,
                "wall_s": run["wall_s"],
            }
        )
    return rows, target


def more_than_ddp_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One plain line per run that moves more bytes than DDP in some direction."""
    lines = []
    for row in rows:
        if row["more_than_ddp"]:
            over = ", ".join(f"{d} {times(row[f'{d}_vs_ddp'])}" for d in row["more_than_ddp"])
            lines.append(f"{row['name']} ({row['algorithm']}) moves MORE bytes per worker than DDP: {over}.")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="lit-commeff-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    parser.add_argument("--experiment", default="lit_commeff")
    parser.add_argument("--metric", default=None, help="validation metric (default: val/auroc, or val/mae)")
    parser.add_argument("--mode", choices=["max", "min"], default=None)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--reference", default="ddp", help="algorithm whose final value sets the target")
    parser.add_argument("--out", default="compare.png", help="PNG of the metric against uplink bytes")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    runs = load_runs(args.tracking_uri, args.experiment)
    if not runs:
        raise SystemExit(f"lit-commeff-compare: no finished runs in experiment {args.experiment!r}.")
    metric = args.metric or ("val/mae" if any(r["recipe"] == "telecom_throughput" for r in runs) else "val/auroc")
    mode = args.mode or ("min" if metric.endswith(("mae", "smape", "loss")) else "max")
    rows, target = compare(runs, metric=metric, mode=mode, tolerance=args.tolerance, reference=args.reference)
    table = Table(title=f"{args.experiment}: {metric} ({mode}); target {target if target is None else f'{target:.4f}'}")
    sources = sorted({row["ddp_reference"] for row in rows if row["ddp_reference"]})
    table.caption = (
        "MB per worker on the wire (ring all-reduce, star gather/broadcast); (xDDP) against dense DDP from "
        + ("; ".join(sources) if sources else "nothing: no run has wire bytes")
    )
    for column in (
        "run",
        "algorithm",
        f"final {metric}",
        "up MB (xDDP)",
        "down MB (xDDP)",
        "total MB (xDDP)",
        "up MB to target",
        "wall s",
    ):
        table.add_column(column, justify="left" if column in ("run", "algorithm") else "right", no_wrap=True)

    def fmt(value: float | None, digits: int = 3) -> str:
        return "never" if value is None else f"{value:,.{digits}f}"

    def with_ratio(row: dict[str, Any], direction: str) -> str:
        value, r = row[f"wire_{direction}_mb"], row[f"{direction}_vs_ddp"]
        if value is None:
            return "-"
        return f"{value:,.3f}" + ("" if r is None else f" ({times(r)})")  # the lines below the table say MORE

    for row in rows:
        table.add_row(
            str(row["name"]),
            row["algorithm"],
            fmt(row["final"], 4),
            *(with_ratio(row, d) for d in DIRECTIONS),
            fmt(row["to_target_mb"]),
            f"{row['wall_s']:.0f}",
        )
    console = Console(width=max(160, Console().width))  # no cell wraps: each row stays one line
    console.print(table)
    for line in more_than_ddp_lines(rows):
        console.print(line, highlight=False)
    curves = {f"{r['name']}": [(h["uplink_bytes"], h["value"]) for h in r["history"]] for r in runs}
    plot = plot_metric_vs_bytes(curves, metric=metric, out=args.out, title=f"{args.experiment}: {metric} vs uplink")
    print(f"wrote {plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"metric": metric, "target": target, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
