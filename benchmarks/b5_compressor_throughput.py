"""B5: compressor throughput next to ``torch.clone`` (the memory-bandwidth reference), same run.

For each compressor and vector size: time of ``compress`` and of ``decompress`` (median of
``torch.utils.benchmark`` blocked autorange, CUDA-synchronised), throughput in GB/s of fp32 input for
the pair, the ratio of that time to one ``torch.clone`` of the same vector, and the exact wire bytes.
Machines are noisy: read the ratio column, not the absolute times.

    python benchmarks/b5_compressor_throughput.py --quick          # 1M elements, a minute on 2 cores
    python benchmarks/b5_compressor_throughput.py                  # 1M and 10M (the documented run)
    python benchmarks/b5_compressor_throughput.py --sizes 1e6 1e8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch.utils.benchmark import Timer

from lit_commeff.compression import build

COMPRESSORS: list[tuple[str, str, dict]] = [
    ("identity", "identity", {}),
    ("randk 1%", "randk", {"ratio": 0.01}),
    ("randk 1% shared", "randk", {"ratio": 0.01, "shared_indices": True}),
    ("randk 10%", "randk", {"ratio": 0.1}),
    ("topk 1%", "topk", {"ratio": 0.01}),
    ("qsgd s=1 b=512", "qsgd", {"s": 1, "bucket_size": 512}),
    ("qsgd s=7", "qsgd", {"s": 7}),
    ("sign", "sign", {}),
    ("fp16", "fp16", {}),
    ("bf16", "bf16", {}),
    ("powersgd r=4", "powersgd", {"rank": 4, "reshape": "square"}),
]


def _median_seconds(stmt: str, env: dict, min_run_time: float) -> float:
    return (
        Timer(stmt=stmt, globals=env, num_threads=torch.get_num_threads())
        .blocked_autorange(min_run_time=min_run_time)
        .median
    )


def run(sizes: list[int], device: str, min_run_time: float) -> list[dict]:
    rows = []
    for n in sizes:
        x = torch.randn(n, device=device)
        clone_s = _median_seconds("x.clone()", {"x": x}, min_run_time)
        rows.append(
            {
                "compressor": "torch.clone",
                "elements": n,
                "compress_s": clone_s,
                "decompress_s": 0.0,
                "total_s": clone_s,
                "gb_per_s": 4 * n / clone_s / 1e9,
                "vs_clone": 1.0,
                "wire_bytes": 4 * n,
                "gamma": 1.0,
            }
        )
        for label, name, options in COMPRESSORS:
            c = build(name, **options)
            payload = c.compress(x, step=1, worker=1)  # warm-up (and PowerSGD's warm start)
            env = {"c": c, "x": x, "p": payload}
            compress_s = _median_seconds("c.compress(x, step=1, worker=1)", env, min_run_time)
            decompress_s = _median_seconds("c.decompress(p)", env, min_run_time)
            total = compress_s + decompress_s
            rows.append(
                {
                    "compressor": label,
                    "elements": n,
                    "compress_s": compress_s,
                    "decompress_s": decompress_s,
                    "total_s": total,
                    "gb_per_s": 4 * n / total / 1e9,
                    "vs_clone": total / clone_s,
                    "wire_bytes": payload.nbytes,
                    "gamma": 4 * n / payload.nbytes,
                }
            )
            print(f"  {label:>16} n={n:.0e}: {total * 1e3:8.2f} ms ({total / clone_s:6.1f}x clone)", file=sys.stderr)
    return rows


def table(rows: list[dict], device: str) -> Table:
    t = Table(title=f"B5 compressor throughput on {device} (fp32 input; compress + decompress)")
    for col in ("compressor", "elements", "compress ms", "decompress ms", "GB/s", "time / clone", "wire bytes", "γ"):
        t.add_column(col, justify="left" if col == "compressor" else "right")
    for r in rows:
        t.add_row(
            r["compressor"],
            f"{r['elements']:.0e}",
            f"{r['compress_s'] * 1e3:.2f}",
            f"{r['decompress_s'] * 1e3:.2f}",
            f"{r['gb_per_s']:.2f}",
            f"{r['vs_clone']:.1f}×",
            f"{r['wire_bytes']:,}",
            f"{r['gamma']:.1f}",
        )
    return t


def markdown(rows: list[dict], device: str) -> str:
    lines = [
        "| compressor | elements | compress ms | decompress ms | GB/s | time / clone | wire bytes | γ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['compressor']} | {r['elements']:.0e} | {r['compress_s'] * 1e3:.2f} | "
            f"{r['decompress_s'] * 1e3:.2f} | {r['gb_per_s']:.2f} | {r['vs_clone']:.1f}× | "
            f"{r['wire_bytes']:,} | {r['gamma']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M elements only, short timing windows")
    parser.add_argument("--sizes", nargs="+", type=float, help="vector sizes (default 1e6 1e7; quick: 1e6)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results",
        help="folder for the JSON result (default benchmarks/results)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.sizes or ([1e6] if args.quick else [1e6, 1e7]))]
    min_run_time = 0.2 if args.quick else 1.0
    rows = run(sizes, args.device, min_run_time)
    Console(width=140).print(table(rows, args.device))
    meta = {
        "benchmark": "B5",
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "quick": args.quick,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if args.device == "cuda":
        meta["gpu"] = torch.cuda.get_device_name()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"b5_{args.device}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {path}")
    if args.markdown:
        args.markdown.write_text(markdown(rows, args.device) + "\n")
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
