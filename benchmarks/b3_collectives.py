"""B3 companion: the time of each collective a method uses, per netlab profile (needs root).

Why a step costs what it costs on a shaped link: 4 ranks, each in its own network namespace (the same lab
as ``b3_time_to_accuracy.py``), time ``--reps`` back-to-back calls of every collective the strategies use,
at the credit MLP's size (d = 5,857 fp32) by default:

- DDP: ``all_reduce`` of d floats;
- the hub's downlink: ``broadcast`` (gloo's tree) against ``scatter`` of one buffer (a star);
- the uplink: ``gather`` of d floats and of a compressed message;
- the non-finite guard: a ring ``all_reduce`` of the flags against ``gather`` + ``scatter``;
- Gated DANE's overlapped exchange (a message of d floats up, a reply of d floats down) after ``--gap`` ms of
  compute, as training calls it, timed on rank 1: ``gather`` + ``scatter`` against point-to-point
  ``isend``/``irecv`` with the hub's receives posted one exchange ahead (gloo's TCP transport sends only once
  the receiver has posted, so this tests whether posting first saves a half round trip).

``--congestion-control`` sets the ranks' TCP algorithm (default ``host``: inherit the host's). Session 26
found it decides what the exchange costs on ``wan``: 56 KB each way took 72 ms under ``bbr`` and 51 ms under
``cubic``.

    sudo python benchmarks/b3_collectives.py --profiles edge lan
    sudo python benchmarks/b3_collectives.py --profiles "up=10,down=100,rtt=20" --dim 100000
    sudo python benchmarks/b3_collectives.py --profiles wan edge --dim 14000 --congestion-control cubic

Times are medians over the ranks' view of rank 0 (the hub): milliseconds per call in steady state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _exchanges(dim: int, reps: int, gap: float) -> dict[str, float]:
    """Median ms of one exchange after ``gap`` s of idle compute, on this rank's clock."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    hub = rank == 0
    message, reply = torch.zeros(dim), torch.zeros(dim)
    rows = [torch.empty_like(message) for _ in range(world)]
    posted: list[Any] = []

    def collectives() -> None:
        dist.gather(message, rows if hub else None, dst=0)
        dist.scatter(reply, [reply] * world if hub else None, src=0)

    def preposted() -> None:
        if not hub:
            incoming = dist.irecv(reply, src=0, tag=2)  # posted before the message leaves
            dist.isend(message, dst=0, tag=1).wait()
            incoming.wait()
            return
        received = posted.pop() if posted else [dist.irecv(rows[w], src=w, tag=1) for w in range(1, world)]
        for work in received:
            work.wait()
        posted.append([dist.irecv(rows[w], src=w, tag=1) for w in range(1, world)])  # the next exchange's
        for work in [dist.isend(reply, dst=w, tag=2) for w in range(1, world)]:
            work.wait()

    cases = {
        f"exchange d up + d down after {gap * 1e3:g} ms: gather + scatter": collectives,
        f"exchange d up + d down after {gap * 1e3:g} ms: isend/irecv, receives preposted": preposted,
    }
    timings = {}
    for name, fn in cases.items():
        dist.barrier()
        samples = []
        for i in range(reps + 3):
            time.sleep(gap)
            start = time.perf_counter()
            fn()
            if i >= 3:
                samples.append((time.perf_counter() - start) * 1e3)
        timings[name] = statistics.median(samples)
    if hub:  # the receives posted for an exchange that never comes: let the ranks send it
        for work in posted.pop():
            work.wait()
    else:
        dist.isend(message, dst=0, tag=1).wait()
    return timings


def _worker(dim: int, message: int, reps: int, out: Path, gap: float) -> None:
    """One rank: time every collective, rank 0 writes the table."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    flag = torch.zeros(1, dtype=torch.int32)
    flags = torch.zeros(world, dtype=torch.int32)
    dense = torch.zeros(dim)
    pair = torch.zeros(2 * dim)
    small = torch.zeros(message, dtype=torch.uint8)
    hub = rank == 0

    def rows(t: torch.Tensor) -> list[torch.Tensor] | None:
        return [torch.empty_like(t) for _ in range(world)] if hub else None

    dense_rows, small_rows, flag_rows = rows(dense), rows(small), rows(flag)

    def scatter(t: torch.Tensor) -> None:
        dist.scatter(t, [t] * world if hub else None, src=0)

    cases: dict[str, Callable[[], None]] = {
        "all_reduce d (DDP)": lambda: dist.all_reduce(dense),
        "broadcast 2d (hub downlink, tree)": lambda: dist.broadcast(pair, 0),
        "scatter 2d (hub downlink, star)": lambda: scatter(pair),
        "broadcast d": lambda: dist.broadcast(dense, 0),
        "scatter d": lambda: scatter(dense),
        "gather d (dense uplink)": lambda: dist.gather(dense, dense_rows, dst=0),
        f"gather {message} B (compressed uplink)": lambda: dist.gather(small, small_rows, dst=0),
        "all_reduce world x int32 (guard, ring)": lambda: dist.all_reduce(flags),
        "gather int32 + scatter world x int32 (guard, star)": lambda: (
            dist.gather(flag, flag_rows, dst=0),
            scatter(flags),
        ),
    }
    timings = {}
    for name, fn in cases.items():
        dist.barrier()
        for _ in range(3):
            fn()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        timings[name] = (time.perf_counter() - start) / reps * 1e3
    exchanges = _exchanges(dim, reps, gap)
    views: list[Any] = [None] * world
    dist.all_gather_object(views, exchanges)
    timings.update(views[1])  # a worker's view: from its message leaving to the reply in hand
    if rank == 0:
        out.write_text(json.dumps(timings))
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["edge", "wan", "lan"], help="built-in names or custom specs")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--dim", type=int, default=5857, help="d: fp32 elements of a dense message")
    parser.add_argument("--message", type=int, default=600, help="bytes of a compressed message")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--gap", type=float, default=60.0, help="ms of idle compute before each exchange")
    parser.add_argument("--congestion-control", default="host", help="the ranks' TCP algorithm (host: inherit)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "b3" / "collectives.json")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _worker(args.dim, args.message, args.reps, args.worker, args.gap / 1e3)
        return 0

    from rich.console import Console
    from rich.table import Table

    from lit_commeff.netlab import NetLab, available, parse_profile

    status = available()
    if not status:
        raise SystemExit(f"b3_collectives: {status.reason}")
    results: dict[str, dict[str, float]] = {}
    tcp: dict[str, str | None] = {}
    for spec in args.profiles:
        profile = parse_profile(spec)
        tmp = args.out.with_suffix(f".{profile.name}.tmp")
        argv_worker = [sys.executable, __file__, "--worker", str(tmp), "--dim", str(args.dim),
                       "--message", str(args.message), "--reps", str(args.reps), "--gap", str(args.gap)]  # fmt: skip
        congestion = None if args.congestion_control == "host" else args.congestion_control
        with NetLab(args.ranks, profile, congestion_control=congestion) as lab:
            in_use = lab.congestion_control_in_use
            procs = [lab.popen(r, argv_worker, env={**os.environ, **lab.dist_env(r, 29650)}) for r in range(args.ranks)]
            codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"b3_collectives: ranks exited with {codes} on profile {profile.name}")
        results[profile.name] = json.loads(tmp.read_text())
        tmp.unlink()
        tcp[profile.name] = in_use
    title = f"ms per collective, {args.ranks} ranks, d = {args.dim:,} fp32, TCP {', '.join(set(tcp.values()))}"
    table = Table(title=f"{title} (rank 0's clock; the exchanges: rank 1's)")
    table.add_column("collective")
    for name in results:
        table.add_column(name, justify="right")
    for case in next(iter(results.values())):
        table.add_row(case, *(f"{results[p][case]:.2f}" for p in results))
    Console(width=160).print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"argv": sys.argv, "when": datetime.now(timezone.utc).isoformat(), "cpus": os.cpu_count()}
    record = {"meta": meta, "dim": args.dim, "ranks": args.ranks, "gap_ms": args.gap, "congestion_control": tcp}
    args.out.write_text(json.dumps({**record, "ms": results}, indent=1))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
