"""B7: do the defaults diverge? Seeds × partitions × rank counts, the real ``lit-commeff`` job each time.

For every strategy (default options unless ``--set``), partition (``iid``, ``by_group``), rank count and
seed, this script runs one short ``lit-commeff`` job and reads its validation history. A run **diverges**
if any of these holds:
- it fails (for example a ``NonFiniteError`` from the guard);
- its final validation metric is missing or not finite;
- its final AUROC is below ``--min-auroc``. Chance is 0.5.

DDP runs once per partition and rank count, at seed 0, as the reference.

    python benchmarks/b7_robustness.py                                  # credit, olga + ef_olga, 5 seeds
    python benchmarks/b7_robustness.py --ranks 2 4 --seeds 2 --epochs 1 --strategies olga
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
DATA = {
    "finance_credit": ["recipe=finance_credit", f"recipe.data.path={SHARED / 'UCI_Credit_Card.csv'}"],
    "telecom_churn": ["recipe=telecom_churn", f"recipe.data.path={SHARED / 'Telco-Customer-Churn.csv'}"],
}


def run(args: argparse.Namespace, strategy: str, partition: str, ranks: int, seed: int) -> dict[str, Any]:
    name = f"{args.recipe}-{strategy}-{partition}-r{ranks}-s{seed}"
    run_dir = args.out / name
    (run_dir / "history.jsonl").unlink(missing_ok=True)
    overrides = [
        *DATA[args.recipe],
        f"strategy={strategy}",
        f"seed={seed}",
        f"trainer.devices={ranks}",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",
        f"recipe.data.partition={partition}",
        *([f"recipe.data.group_column={args.group_column}"] if partition == "by_group" and args.group_column else []),
        f"logger.tracking_uri=sqlite:///{args.out / 'mlflow.db'}",
        "logger.experiment=b7",
        f"logger.run_name={name}",
        f"checkpoint_dir={run_dir / 'checkpoints'}",
        f"hydra.run.dir={run_dir}",
        *args.set.get(strategy, []),
    ]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lit_commeff.cli.main", *overrides], capture_output=True, text=True, check=False
    )
    history_file = run_dir / "history.jsonl"
    history = (
        [json.loads(x) for x in history_file.read_text().splitlines() if x.strip()] if history_file.exists() else []
    )
    final = history[-1]["value"] if history and history[-1]["value"] is not None else math.nan
    diverged = proc.returncode != 0 or not math.isfinite(final) or final < args.min_auroc
    return {
        "strategy": strategy,
        "partition": partition,
        "ranks": ranks,
        "seed": seed,
        "returncode": proc.returncode,
        "final": final,
        "uplink_bytes": history[-1]["uplink_bytes"] if history else None,
        "diverged": diverged,
        "error": proc.stderr[-1500:] if proc.returncode != 0 else "",
        "seconds": time.monotonic() - start,
    }


def _key(result: dict[str, Any]) -> tuple[str, str, int]:
    return result["strategy"], result["partition"], result["ranks"]


def summarize(results: list[dict], strategies: Any, partitions: Any, ranks_list: Any) -> list[dict]:
    """One row per (strategy, partition, ranks) cell: runs, diverged, min/median/max final and DDP's (seed 0).

    Also used by ``benchmarks/render_tables.py`` for the docs' B7 table, so the table cannot drift from this.
    """
    cells = []
    for strategy in strategies:
        for partition in partitions:
            for ranks in ranks_list:
                rows = [
                    r for r in results if (r["strategy"], r["partition"], r["ranks"]) == (strategy, partition, ranks)
                ]
                ddp = [
                    r["final"]
                    for r in results
                    if (r["strategy"], r["partition"], r["ranks"]) == ("ddp", partition, ranks)
                ]
                finals = [r["final"] for r in rows if math.isfinite(r["final"])]
                cells.append({
                    "strategy": strategy, "partition": partition, "ranks": ranks, "runs": len(rows),
                    "diverged": sum(r["diverged"] for r in rows),
                    "min": min(finals) if finals else None, "median": statistics.median(finals) if finals else None,
                    "max": max(finals) if finals else None, "ddp": ddp[0] if ddp else None,
                })  # fmt: skip
    return cells


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=list(DATA), default="finance_credit")
    parser.add_argument("--strategies", nargs="+", default=["olga", "ef_olga"])
    parser.add_argument("--partitions", nargs="+", default=["iid", "by_group"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--min-auroc", type=float, default=0.6)
    parser.add_argument(
        "--group-column", default="AGE", help="by_group key (credit's EDUCATION has 7 values: too few for 8 ranks)"
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="STRATEGY:KEY=VALUE")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "b7")
    args = parser.parse_args(argv)
    sets: dict[str, list[str]] = {}
    for item in args.set:
        strategy, _, override = item.partition(":")
        sets.setdefault(strategy, []).append(override)
    args.set = sets
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for partition in args.partitions:
        for ranks in args.ranks:
            jobs = [("ddp", 0)] + [(s, seed) for s in args.strategies for seed in range(args.seeds)]
            for strategy, seed in jobs:
                result = run(args, strategy, partition, ranks, seed)
                results.append(result)
                print(
                    f"{strategy} {partition} r{ranks} s{seed}: rc {result['returncode']} final {result['final']:.4f} "
                    f"{'DIVERGED' if result['diverged'] else 'ok'} ({result['seconds']:.0f} s)",
                    flush=True,
                )
                (args.out / "b7_results.json").write_text(json.dumps(results, indent=1))
    table = Table(title=f"B7 {args.recipe}: final val AUROC over seeds ({args.epochs} epochs); diverged = failed, "
                  f"non-finite or < {args.min_auroc}")  # fmt: skip
    for column in ("strategy", "partition", "ranks", "runs", "diverged", "min", "median", "max", "DDP (seed 0)"):
        table.add_column(column, justify="left" if column in ("strategy", "partition") else "right")
    for cell in summarize(results, args.strategies, args.partitions, args.ranks):
        table.add_row(
            cell["strategy"], cell["partition"], str(cell["ranks"]), str(cell["runs"]), str(cell["diverged"]),
            *(_fmt(cell[k]) for k in ("min", "median", "max", "ddp")),
        )  # fmt: skip
    Console(width=160).print(table)
    return 1 if any(r["diverged"] for r in results if r["strategy"] != "ddp") else 0


if __name__ == "__main__":
    raise SystemExit(main())
