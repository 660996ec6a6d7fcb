"""``lit-commeff-compare``: the runs of an MLflow experiment side by side, like with like, and metric vs bytes.

    lit-commeff-compare                                   # ./mlflow.db, experiment lit_commeff
    lit-commeff-compare --experiment credit --metric val/auroc --tolerance 0.005 --out compare.png

Runs are grouped by recipe and data set (tags ``lit_commeff.recipe`` and ``lit_commeff.dataset``): each
group has its own table, its own target and its own plot, since a metric on one data set says nothing
about another. For every finished run of a group: the final value of the monitored metric (default
``val/mae`` for the throughput recipe, ``val/auroc`` otherwise); uplink, downlink and total MB per worker
on the wire (ring all-reduce, star gather/broadcast), each with its ratio to dense DDP's; uplink MB to reach
the target (the group's reference run's final metric minus/plus ``--tolerance``; the reference is the run
whose algorithm is ``--reference``, default ``ddp``), and wall time. DDP's bytes are the group's reference
run's, measured, when it has one; otherwise each run's own dense-DDP figure computed from its model size
and steps (the table says which). A line under the table names every run that moves more bytes than DDP
in some direction. The plot has two panels, the metric against uplink MB and against total MB per
worker; points at 0 MB (a method whose first sync comes after its first validation, such as DiLoCo) stay
on it. Curves come from each run's ``history.jsonl`` artifact (exact bytes at every validation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from rich.console import Console
from rich.table import Table

from lit_commeff.strategy.metering import times
from lit_commeff.tracking.history import HISTORY_FILE, plot_metric_vs_bytes, read_history

#: MLflow's switch for its artifact download progress bars (noise in a table-printing command).
_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    before = os.environ.get(_PROGRESS_BAR_ENV)
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_PROGRESS_BAR_ENV, None)
        else:
            os.environ[_PROGRESS_BAR_ENV] = before


def _dataset(tags: dict[str, str], params: dict[str, str]) -> str:
    """The run's data set: its tag, or (runs from before the tag) the data file's name or ``synthetic``."""
    if tags.get("lit_commeff.dataset"):
        return tags["lit_commeff.dataset"]
    path = params.get("recipe.data.path")
    return Path(path).name if path and path != "None" else "synthetic"


def load_runs(tracking_uri: str, experiment: str) -> list[dict[str, Any]]:
    """Finished runs of an experiment with their tags, history and final metrics (oldest first)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SystemExit(f"lit-commeff-compare: no experiment {experiment!r} in {tracking_uri}.")
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'")
    out = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        with tempfile.TemporaryDirectory() as tmp, _no_progress_bars():
            try:
                path = client.download_artifacts(run.info.run_id, HISTORY_FILE, tmp)
                history = read_history(path)
            except Exception:  # a run without the artifact (e.g. logged by another tool)
                history = []
        tags, params = dict(run.data.tags), dict(run.data.params)
        out.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "algorithm": tags.get("lit_commeff.algorithm", "?"),
                "recipe": tags.get("lit_commeff.recipe", "?"),
                "dataset": _dataset(tags, params),
                "metrics": dict(run.data.metrics),
                "history": history,
                "wall_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
            }
        )
    return out


def group_runs(runs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Runs by ``(recipe, data set)``, in order of each group's first run; runs keep their order."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((str(run.get("recipe", "?")), str(run.get("dataset", "?"))), []).append(run)
    return groups


def default_metric(recipe: str) -> str:
    """The metric a recipe's runs are compared on: ``val/mae`` for throughput, ``val/auroc`` otherwise."""
    return "val/mae" if recipe == "telecom_throughput" else "val/auroc"


def group_plot_path(out: str | Path, group: tuple[str, str], several: bool) -> Path:
    """``out`` for a single group; ``<stem>-<recipe>-<data set><suffix>`` when there are several."""
    out = Path(out)
    if not several:
        return out
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(group)).strip("_")
    return out.with_name(f"{out.stem}-{slug}{out.suffix or '.png'}")


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


def _table(title: str, metric: str, rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=title)
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
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="lit-commeff-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    parser.add_argument("--experiment", default="lit_commeff")
    parser.add_argument(
        "--metric", default=None, help="validation metric (default: val/mae for telecom_throughput, else val/auroc)"
    )
    parser.add_argument("--mode", choices=["max", "min"], default=None)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--reference", default="ddp", help="algorithm whose final value sets each group's target")
    parser.add_argument(
        "--out",
        default="compare.png",
        help="PNG of the metric against uplink and total bytes (one per recipe and data set: -<recipe>-<data> added)",
    )
    parser.add_argument("--json", default=None, help="also write the tables as JSON here")
    args = parser.parse_args(argv)
    runs = load_runs(args.tracking_uri, args.experiment)
    if not runs:
        raise SystemExit(f"lit-commeff-compare: no finished runs in experiment {args.experiment!r}.")
    groups = group_runs(runs)
    console = Console(width=max(160, Console().width))  # no cell wraps: each row stays one line
    report: list[dict[str, Any]] = []
    for group, members in groups.items():
        recipe, dataset = group
        metric = args.metric or default_metric(recipe)
        mode = args.mode or ("min" if metric.endswith(("mae", "smape", "loss")) else "max")
        rows, target = compare(members, metric=metric, mode=mode, tolerance=args.tolerance, reference=args.reference)
        title = (
            f"{args.experiment}: {recipe} on {dataset}: {metric} ({mode}); "
            f"target {'none (no ' + args.reference + ' run)' if target is None else f'{target:.4f}'}"
        )
        console.print(_table(title, metric, rows))
        for line in more_than_ddp_lines(rows):
            console.print(line, highlight=False)
        curves = {str(r["name"]): r["history"] for r in members}
        plot = plot_metric_vs_bytes(
            curves,
            metric=metric,
            out=group_plot_path(args.out, group, len(groups) > 1),
            title=f"{args.experiment}: {recipe} on {dataset}: {metric} vs MB per worker",
        )
        print(f"wrote {plot}")
        report.append(
            {"recipe": recipe, "dataset": dataset, "metric": metric, "target": target, "rows": rows, "plot": str(plot)}
        )
    if args.json:
        payload: dict[str, Any] = {"groups": report}
        if len(report) == 1:  # one group: its table at the top level too
            payload.update({k: report[0][k] for k in ("metric", "target", "rows")})
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
