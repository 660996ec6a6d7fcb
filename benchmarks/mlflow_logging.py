"""How long a log step blocks training: MLflow's synchronous write against its background writer.

Lightning's ``MLFlowLogger`` hands each log step's metrics to MLflow; with ``synchronous=True`` (MLflow's default)
the call returns once the SQLite store has them. Every rank of a hub method waits for the hub at its next collective,
so on a busy machine that write stalls all of them (session 16: 17-75 ms, median 39, every tenth step on credit over
4 ranks on 2 cores, ``docs/gated-dane.md``). This script times ``log_metrics`` of ``--metrics`` metrics for ``--steps``
steps in each mode, and the ``finalize`` that flushes the background writer, on a fresh SQLite store each::

    python benchmarks/mlflow_logging.py --out benchmarks/results/mlflow_logging.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger


def measure(store: Path, *, synchronous: bool, steps: int, metrics: int) -> dict:
    logger = MLFlowLogger(experiment_name="timing", tracking_uri=f"sqlite:///{store}", synchronous=synchronous)
    logger.log_hyperparams({"synchronous": synchronous})
    calls = []
    for step in range(steps):
        started = time.perf_counter()
        logger.log_metrics({f"comm/m{i}": float(step * i) for i in range(metrics)}, step=step)
        calls.append(time.perf_counter() - started)
    started = time.perf_counter()
    logger.finalize("success")
    finalize = time.perf_counter() - started
    return {
        "synchronous": synchronous,
        "median_ms": 1000 * statistics.median(calls),
        "max_ms": 1000 * max(calls),
        "total_s": sum(calls),
        "finalize_s": finalize,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--metrics", type=int, default=25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous in (True, False):
            store = Path(tmp) / f"{synchronous}.db"
            row = measure(store, synchronous=synchronous, steps=args.steps, metrics=args.metrics)
            rows.append(row)
            print(
                f"synchronous={synchronous!s:5}: log call median {row['median_ms']:.2f} ms, "
                f"max {row['max_ms']:.1f} ms; {args.steps} calls {row['total_s']:.3f} s; "
                f"finalize {row['finalize_s']:.2f} s",
                file=sys.stderr,
            )
    when = datetime.now(timezone.utc).isoformat()
    meta = {"argv": sys.argv, "when": when, "steps": args.steps, "metrics": args.metrics}
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
