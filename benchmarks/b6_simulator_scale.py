"""B6: simulator scale — time and memory per OLGA round for many virtual workers.

For each (M, d): one process builds a :class:`~lit_commeff.problems.SeparableQuadratic` (float32) and
runs OLGA (RandK 1 %, similarity preset) round by round; we report the mean wall time per round by
round kind (dense anchor / compressed inner / dense y), the process's peak resident memory, and the
projected wall time per round of a real deployment computed from the ledger's bytes on the network
profiles of BENCHMARKS.md (uplink time of the busiest worker + downlink time + one RTT).

    python benchmarks/b6_simulator_scale.py --quick      # M in {100, 1000}, d in {1e3, 1e5}
    python benchmarks/b6_simulator_scale.py              # adds M = 10000 (d = 1e3 and 1e5)
    python benchmarks/b6_simulator_scale.py --configs 10000x20000 --chunk-workers 0 1000 --rounds 6

``--chunk-workers C`` compresses the workers' messages in slices of C rows
(``SimulatorTransport(chunk_workers=C)``, same results bit for bit; 0 = whole blocks); each listed value is
one run per configuration. ``--configs MxD ...`` replaces the grid. ``--stream`` also runs OLGA's rounds over
slices of C workers (``OLGA(worker_slices=C)``: no (M, d) block but the problem's, the same messages and
ledger, iterates equal up to the order of the sums), and ``--storage float16`` stores the problem's (M, d)
curvatures and linear terms in half precision (``SeparableQuadratic(storage_dtype=...)``). Together they run
M = 10,000 × d = 100,000 in about 5 GB:

    python benchmarks/b6_simulator_scale.py --configs 10000x100000 --chunk-workers 500 --stream \
        --storage float16 --rounds 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
# (uplink bit/s, downlink bit/s, RTT s) of the workers' links.
PROFILES = {"edge": (10e6, 100e6, 0.020), "wan": (100e6, 100e6, 0.040), "lan": (1e9, 1e9, 0.0005)}


def measure(
    workers: int, dim: int, rounds: int, device: str, chunk: int = 0, stream: bool = False, storage: str = "float32"
) -> dict:
    """Run in a fresh process: build the problem, run ``rounds`` OLGA rounds, time each kind of round."""
    from lit_commeff.algorithms import OLGA, ProblemOracle
    from lit_commeff.compression import build
    from lit_commeff.problems import SeparableQuadratic
    from lit_commeff.transport import SimulatorTransport

    t0 = time.perf_counter()
    storage_dtype = getattr(torch, storage)
    problem = SeparableQuadratic(workers=workers, dim=dim, device=device, storage_dtype=storage_dtype)
    setup_s = time.perf_counter() - t0
    transport = SimulatorTransport(num_workers=workers, dim=dim, dtype=torch.float32, chunk_workers=chunk or None)
    alg = OLGA(
        transport=transport, oracle=ProblemOracle(problem, transport.workers),
        x0=torch.zeros(dim, device=device), compressor=build("randk", ratio=0.01), mu=problem.mu,
        delta=problem.delta, preset="similarity", p=0.2, seed=0, worker_slices=(chunk or None) if stream else None,
    )  # fmt: skip
    times: dict[str, list[float]] = {"anchor": [], "inner": [], "y": []}
    log = []  # (phase, seconds) of each round, in order
    for _ in range(rounds):
        phase = alg.phase
        start = time.perf_counter()
        alg.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times[phase].append(time.perf_counter() - start)
        log.append((phase, times[phase][-1]))
    ledger = transport.ledger
    per_round = ledger.rounds
    projected = {}
    for name, (up, down, rtt) in PROFILES.items():
        seconds = [
            r.max_worker_bytes * 8 / up + (r.downlink_bytes / max(workers - 1, 1)) * 8 / down + rtt for r in per_round
        ]
        projected[name] = sum(seconds) / len(seconds)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "workers": workers, "dim": dim, "chunk_workers": chunk, "stream": stream, "storage": storage,
        "rounds": rounds, "setup_s": setup_s, "round_log": log,
        "round_s": {k: (sum(v) / len(v) if v else None) for k, v in times.items()},
        "mean_round_s": sum(sum(v) for v in times.values()) / rounds,
        "peak_rss_mib": peak_kib / 1024, "projected_round_s": projected,
        "uplink_bytes_per_round": ledger.uplink_bytes / rounds, "cc3_per_round": ledger.cc3 / rounds,
    }  # fmt: skip


def chunk_label(row: dict) -> str:
    """The chunk column: ``-`` (whole blocks), ``C`` (messages in slices), ``C stream`` (rounds in slices too)."""
    return f"{row.get('chunk_workers', 0) or '-'}{' stream' if row.get('stream') else ''}"


def _available_bytes() -> int:
    """MemAvailable from /proc/meminfo (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default 20; quick 10)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--configs", nargs="+", help="MxD pairs replacing the grid, e.g. 10000x20000")
    parser.add_argument("--chunk-workers", nargs="+", type=int, default=[0], help="slices of the workers (0: none)")
    parser.add_argument(
        "--stream", action="store_true", help="with --chunk-workers C: OLGA's rounds over slices of C workers too"
    )
    parser.add_argument(
        "--storage", choices=("float32", "float16"), default="float32", help="dtype of the problem's (M, d) blocks"
    )
    parser.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)  # internal: one config
    args = parser.parse_args(argv)
    rounds = args.rounds or (10 if args.quick else 20)
    if args.stream and not args.worker and 0 in args.chunk_workers:
        parser.error("--stream: needs --chunk-workers C with every C >= 1 (the slice size), e.g. --chunk-workers 500.")
    if args.worker:
        m, d, c = args.worker
        print(json.dumps(measure(m, d, rounds, args.device, c, stream=args.stream, storage=args.storage)))
        return 0
    grid = [(m, d) for m in (100, 1000) for d in (1_000, 100_000)]
    if not args.quick:
        grid += [(10_000, 1_000), (10_000, 100_000)]
    if args.configs:
        grid = [(int(m), int(d)) for m, d in (c.lower().split("x") for c in args.configs)]
    rows = []
    available = _available_bytes()
    for (m, d), chunk in ((g, c) for g in grid for c in args.chunk_workers):
        # At the peak of an inner round: the problem's curvatures and linear terms, OLGA's anchor gradients,
        # the fresh gradients and the decoded messages (five (M, d) float32 blocks), plus the compressor's
        # temporaries, about two blocks of the rows it compresses at once.
        # Streamed (--stream): the problem's two blocks at their storage size, and about eight (C, d) slices.
        if args.stream:
            need = (2 * m * (2 if args.storage == "float16" else 4) + 8 * 4 * chunk) * d
        else:
            need = (5 * m + 2 * (chunk or m)) * d * 4
        if available and need > 0.7 * available:
            rows.append(
                {
                    "workers": m,
                    "dim": d,
                    "error": f"skipped: needs ~{need / 2**30:.0f} GiB, {available / 2**30:.0f} free",
                }
            )
            print(f"M={m} d={d}: skipped, {rows[-1]['error']}", file=sys.stderr)
            continue
        cmd = [sys.executable, __file__, "--worker", str(m), str(d), str(chunk), "--rounds", str(rounds)]
        cmd += ["--device", args.device, "--storage", args.storage] + (["--stream"] if args.stream else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
            rows.append({"workers": m, "dim": d, "error": f"failed: {tail[0]}"})
            print(f"M={m} d={d}: failed: {tail[0]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(
            f"M={m} d={d}: {rows[-1]['mean_round_s']:.3f} s/round, {rows[-1]['peak_rss_mib']:.0f} MiB", file=sys.stderr
        )
    table = Table(title=f"B6: OLGA round cost in the simulator ({args.device}, float32, RandK 1%)")
    for col in (
        "M",
        "d",
        "chunk",
        "s/round (mean)",
        "anchor s",
        "inner s",
        "y s",
        "peak RSS MiB",
        "edge s",
        "wan s",
        "lan s",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        if "error" in r:
            table.add_row(f"{r['workers']:,}", f"{r['dim']:,}", "", r["error"][:60], *[""] * 7)
            continue
        rs, pr = r["round_s"], r["projected_round_s"]
        table.add_row(
            f"{r['workers']:,}", f"{r['dim']:,}", chunk_label(r), f"{r['mean_round_s']:.4f}",
            *[f"{rs[k]:.4f}" if rs[k] is not None else "-" for k in ("anchor", "inner", "y")],
            f"{r['peak_rss_mib']:.0f}", f"{pr['edge']:.3f}", f"{pr['wan']:.3f}", f"{pr['lan']:.4f}",
        )  # fmt: skip
    Console(width=160).print(table)
    print("edge/wan/lan: projected seconds per round of a real deployment with these bytes on the profile's links")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "B6",
        "device": args.device,
        "quick": args.quick,
        "command": "python benchmarks/b6_simulator_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    suffix = "_quick" if args.quick else ("_" + "_".join(args.configs) if args.configs else "")
    suffix += ("_stream" if args.stream else "") + ("_float16" if args.storage == "float16" else "")
    path = args.out / f"b6_{args.device}{suffix}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
