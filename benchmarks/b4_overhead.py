"""B4: overhead where the network is not the bottleneck — step time of each method / DDP's, loopback, same run.

Every method trains B2's credit MLP (same data, batch 64 per rank, SGD lr 0.1) on CPU processes over
gloo on loopback, with no shaping. A callback on rank 0 takes ``time.perf_counter()`` at
``on_train_batch_start`` and ``on_train_batch_end``; after ``--warmup`` steps it keeps ``--steps``
step times. Per (ranks, hidden size): the median and mean step time of each method and their ratios
to plain Lightning ``"ddp"`` (the reference; ``--reference ddp_metered`` to compare with the metered
one) measured in the same run. Two model sizes (hidden 64: d = 5,761; hidden 512: d = 275,457) give
different compute/communication ratios. Methods that communicate only on some steps (DiLoCo, OLGA's
dense rounds) differ between median (a typical step) and mean (amortised): both are reported. Where
``ddp_metered`` ran, the median is also divided by its median (the cost of the method beyond metering).
A fit that hangs is killed after ``--fit-timeout`` seconds and reported as an error.

    python benchmarks/b4_overhead.py                         # quick: ranks 2 and 4, hidden 64 and 512
    python benchmarks/b4_overhead.py --ranks 4 --hidden 512 --methods ddp ddp_metered olga
    python benchmarks/b4_overhead.py --no-quick              # 50 warm-up + 300 timed steps
    python benchmarks/b4_overhead.py --methods ddp olga --set olga.nonfinite=off   # one strategy option

On a 2-core machine 4 ranks oversubscribe the CPU: the ratios are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import b2_bytes_to_accuracy as b2  # the model, data and strategy factory of B2

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ddp", *b2.METHODS)


class StepTimer(Callback):
    """Rank 0: wall time of each training batch (``on_train_batch_start`` to ``on_train_batch_end``).

    Args:
        path: JSON file written at the end of training (step times in seconds and the comm summary).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.start = 0.0
        self.times: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.times.append(time.perf_counter() - self.start)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        summary_fn = getattr(trainer.strategy, "comm_summary", None)
        summary = summary_fn() if summary_fn is not None else {}
        b2._write_json(self.path, {"times": self.times, "steps": trainer.global_step, "summary": summary})


def run_one(method: str, ranks: int, hidden: int, args: argparse.Namespace, table: dict, workdir: Path) -> dict:
    """One fit of ``warmup + steps`` steps; the timed steps' statistics (or the error)."""
    pl.seed_everything(args.seed, verbose=False)
    model = b2.CreditMLP(hidden=hidden, lr=args.lr, momentum=args.momentum)
    data = b2.CreditData(table, batch_size=args.batch_size)
    path = workdir / f"{method}_{ranks}_{hidden}.json"
    path.unlink(missing_ok=True)
    out: dict[str, Any] = {"method": method, "ranks": ranks, "hidden": hidden, "d": b2.parameter_count(hidden)}
    out["load1_before"] = os.getloadavg()[0]  # other work on the machine skews the times: keep a trace of it
    t0 = time.perf_counter()
    try:
        strategy, note = b2.build_strategy(
            method,
            start_method=args.start_method,
            seed=args.seed,
            options=b2.parse_overrides(args.set).get(method),
            timeout_s=args.fit_timeout,
        )
        if note:
            out["note"] = note
        trainer = b2.make_trainer(
            strategy, ranks=ranks, callbacks=[StepTimer(path)], max_steps=args.warmup + args.steps, limit_val_batches=0
        )
        b2.fresh_port()
        b2.fit_with_watchdog(trainer, model, data, args.fit_timeout)
    except Exception as exc:  # record any strategy failure and go on
        out["error"] = b2.error_summary(exc)
        out["traceback"] = traceback.format_exc()[-4000:]
        print(f"[b4] {method} ranks={ranks} hidden={hidden} FAILED: {out['error']}", file=sys.stderr)
    out["wall_s"] = time.perf_counter() - t0
    if path.is_file():
        rec = json.loads(path.read_text())
        timed = rec["times"][args.warmup :]
        if timed:
            out.update(
                median_s=statistics.median(timed),
                mean_s=statistics.fmean(timed),
                p90_s=sorted(timed)[int(0.9 * (len(timed) - 1))],
                timed_steps=len(timed),
                times=rec["times"],
            )
        s = rec.get("summary") or {}
        if s:
            out["uplink_bytes_per_step"] = s["worker_uplink_bytes"] / max(s["steps"], 1)
            out["downlink_bytes_per_step"] = s["worker_downlink_bytes"] / max(s["steps"], 1)
            out["comm_time_s"] = s.get("comm_time_s")
    if "error" not in out and "median_s" not in out:
        out["error"] = "no step times came back from rank 0"
    return out


def add_ratios(rows: list[dict], reference: str, second: str | None = "ddp_metered") -> None:
    """``median_ratio`` / ``mean_ratio``: step time over ``reference``'s in the same (ranks, hidden) group.

    ``median_ratio_2``: the same over ``second``'s (the metered DDP), where both were measured.
    """

    def find(method: str, row: dict) -> dict | None:
        return next(
            (r for r in rows if r["method"] == method and r["ranks"] == row["ranks"] and r["hidden"] == row["hidden"]),
            None,
        )

    for row in rows:
        if "median_s" not in row:
            continue
        ref = find(reference, row)
        if ref is not None and "median_s" in ref:
            row["median_ratio"] = row["median_s"] / ref["median_s"]
            row["mean_ratio"] = row["mean_s"] / ref["mean_s"]
        other = find(second, row) if second and second != reference else None
        if other is not None and "median_s" in other:
            row["median_ratio_2"] = row["median_s"] / other["median_s"]


def results_table(rows: list[dict], reference: str, title: str, second: str = "ddp_metered") -> Table:
    """The rich table of the rows."""
    t = Table(title=title)
    cols = (
        "ranks", "hidden", "d", "method", "median ms", "mean ms", "p90 ms",
        f"median / {reference}", f"mean / {reference}", f"median / {second}",
        "up KB/step", "down KB/step", "load1", "wall s",
    )  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in rows:
        head = (str(r["ranks"]), str(r["hidden"]), f"{r['d']:,}", r["method"])
        if "error" in r:
            t.add_row(*head, f"[red]{r['error'][:80]}[/red]", *[""] * 8, f"{r['wall_s']:.0f}")
            continue
        up, down = r.get("uplink_bytes_per_step"), r.get("downlink_bytes_per_step")
        t.add_row(
            *head,
            f"{r['median_s'] * 1e3:.2f}", f"{r['mean_s'] * 1e3:.2f}", f"{r['p90_s'] * 1e3:.2f}",
            f"{r['median_ratio']:.2f}×" if "median_ratio" in r else "-",
            f"{r['mean_ratio']:.2f}×" if "mean_ratio" in r else "-",
            f"{r['median_ratio_2']:.2f}×" if "median_ratio_2" in r else "-",
            f"{up / 1e3:,.2f}" if up is not None else "-", f"{down / 1e3:,.2f}" if down is not None else "-",
            f"{r['load1_before']:.1f}", f"{r['wall_s']:.0f}",
        )  # fmt: skip
    return t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=True, help="(default) quick run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"default: {' '.join(METHODS)}")
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.OPTION=VALUE", help="strategy options")
    parser.add_argument("--reference", default="ddp", help="denominator of the ratios (ddp or ddp_metered)")
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--hidden", nargs="+", type=int, default=[64, 512], help="MLP hidden widths")
    parser.add_argument("--warmup", type=int, help="untimed steps (default: quick 20, full 50)")
    parser.add_argument("--steps", type=int, help="timed steps (default: quick 100, full 300)")
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("auto", "credit", "synthetic"), default="auto")
    parser.add_argument("--csv", type=Path, default=b2.CSV)
    parser.add_argument("--fit-timeout", type=float, default=60, help="kill a fit (hang) after this many s")
    parser.add_argument("--start-method", choices=("fork", "spawn"), default="fork")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="JSON folder")
    args = parser.parse_args(argv)
    args.warmup = args.warmup if args.warmup is not None else (20 if args.quick else 50)
    args.steps = args.steps or (100 if args.quick else 300)
    torch.set_num_threads(1)
    b2.quiet_lightning()
    methods = list(dict.fromkeys([args.reference, *args.methods]))  # the reference first
    table = b2.load_table(args.data, args.csv, args.seed)
    print(f"[b4] data: {table['source']}; methods: {methods}", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="b4_") as tmp:
        for ranks in args.ranks:
            for hidden in args.hidden:
                for method in methods:
                    row = run_one(method, ranks, hidden, args, table, Path(tmp))
                    rows.append(row)
                    if "error" not in row:
                        print(
                            f"[b4] ranks={ranks} hidden={hidden} {method}: median {row['median_s'] * 1e3:.2f} ms, "
                            f"mean {row['mean_s'] * 1e3:.2f} ms ({row['wall_s']:.0f} s)",
                            file=sys.stderr,
                        )
    add_ratios(rows, args.reference)
    title = (
        f"B4{' quick' if args.quick else ''}: step time on loopback (gloo, CPU, {os.cpu_count()} cores), "
        f"batch {args.batch_size}/rank, {args.warmup} warm-up + {args.steps} timed steps, rank 0's clock"
    )
    Console(width=200).print(results_table(rows, args.reference, title))
    print(
        f"ratios: step time / {args.reference}'s in the same (ranks, hidden) group of this run; > 1 = slower. "
        "load1: the machine's 1-minute load average just before the fit."
    )
    for r in rows:
        if r.get("note"):
            print(f"note: {r['method']}: {r['note']}")
        if "error" in r:
            print(f"error: {r['method']} ranks={r['ranks']} hidden={r['hidden']}: {r['error']}")
    meta = {
        "benchmark": "B4",
        "quick": args.quick,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": table["source"],
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"b4_cpu{'' if args.quick else '_full'}.json"
    b2._write_json(path, {"meta": meta, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
