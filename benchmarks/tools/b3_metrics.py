r"""Summaries of logged metrics (e.g. ``gated_dane/correction_change``) for every run of a B3 output folder.

B3 (``benchmarks/b3_time_to_accuracy.py --out DIR``) keeps its runs' MLflow store in ``DIR/mlflow.db`` and each
run's id in ``DIR/<run>/mlflow_run_id``. This reads each named metric's series from there and writes, per run and
metric, the series and its median and quartiles (the first value, logged before any sync, left out). Example::

    python benchmarks/tools/b3_metrics.py /tmp/churn gated_dane/correction gated_dane/correction_change \
        --out benchmarks/results/b3/s18_churn_corrections.json
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
from pathlib import Path


def summarize(folder: Path, keys: list[str]) -> dict[str, dict[str, dict]]:
    """``{run name: {metric: {"steps", "values", "median", "quartiles"}}}`` for the runs under ``folder``."""
    db = sqlite3.connect(folder / "mlflow.db")
    out: dict[str, dict[str, dict]] = {}
    for run in sorted(p for p in folder.iterdir() if (p / "mlflow_run_id").is_file()):
        run_id = (run / "mlflow_run_id").read_text().strip()
        for key in keys:
            rows = db.execute(
                "select step, value from metrics where run_uuid = ? and key = ? order by step", (run_id, key)
            ).fetchall()
            values = [v for _, v in rows][1:]
            if len(values) < 2:
                continue
            out.setdefault(run.name, {})[key] = {
                "steps": [s for s, _ in rows],
                "values": [v for _, v in rows],
                "median": statistics.median(values),
                "quartiles": statistics.quantiles(values, n=4),
            }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a B3 --out folder (holds mlflow.db)")
    parser.add_argument("keys", nargs="+", help="metric names, e.g. gated_dane/correction_change")
    parser.add_argument("--out", type=Path, help="write the summary here as JSON")
    args = parser.parse_args(argv)
    result = summarize(args.folder, args.keys)
    for run, metrics in result.items():
        for key, s in metrics.items():
            q1, _, q3 = s["quartiles"]
            print(f"{run}  {key}: median {s['median']:.2f} (quartiles {q1:.2f}–{q3:.2f}, {len(s['values'])} logged)")
    if args.out:
        args.out.write_text(json.dumps({"folder": str(args.folder), "keys": args.keys, "runs": result}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
