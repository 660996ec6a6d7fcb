"""Compression demo: what each compressor costs on the wire and what the hub gets back.

M simulated workers hold gradients that are similar (the data-similarity setting of OLGA): worker m's
gradient is ``g + delta * n_m`` around a common ``g``. Every round each worker compresses its message
and the hub averages the decompressed messages; every transfer goes through a
:class:`~lit_commeff.ledger.CommLedger`. Two ways to send are compared:

* **raw**: each worker sends its compressed gradient;
* **difference**: each worker sends the compressed difference to the hub's own gradient and the hub
  adds its dense gradient back, the lever OLGA pulls: under similarity the difference is small, so
  the same compressor adds far less error.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from lit_commeff.compression import Compressor, build
from lit_commeff.ledger import CommLedger, Direction

#: (label, registry name, options) run by default.
DEFAULT_COMPRESSORS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("identity", "identity", {}),
    ("randk 1%", "randk", {"ratio": 0.01}),
    ("randk 10%", "randk", {"ratio": 0.1}),
    ("topk 1%", "topk", {"ratio": 0.01}),
    ("qsgd s=1 (bucket 512)", "qsgd", {"s": 1, "bucket_size": 512}),
    ("qsgd s=7", "qsgd", {"s": 7}),
    ("sign", "sign", {}),
    ("fp16", "fp16", {}),
    ("bf16", "bf16", {}),
    ("powersgd r=4", "powersgd", {"rank": 4, "reshape": "square"}),
)


def run_demo(
    *, workers: int = 8, dim: int = 10_000, rounds: int = 20, delta: float = 0.05, seed: int = 0
) -> list[dict[str, Any]]:
    """Run every default compressor and return one row of measurements per compressor.

    Args:
        workers: Number of simulated workers M (worker 0 is the hub and sends nothing).
        dim: Dimension d of each message.
        rounds: Rounds to average the errors over.
        delta: Dissimilarity: the relative size of each worker's deviation from the common gradient.
        seed: Seed of the gradients and of the compressors' randomness.
    """
    if workers < 2:
        raise ValueError(f"workers: workers={workers} is too small; the demo needs a hub and >= 1 worker (>= 2).")
    if dim < 1 or rounds < 1:
        raise ValueError(f"dim/rounds: got dim={dim}, rounds={rounds}; both must be >= 1.")
    if delta < 0:
        raise ValueError(f"delta: delta={delta} is negative; use a dissimilarity >= 0.")
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(rounds):
        common = torch.randn(dim, generator=gen)
        grads.append(common + delta * torch.randn(workers, dim, generator=gen))
    rows = []
    for label, name, options in DEFAULT_COMPRESSORS:
        extra = {"seed": seed} if name in ("randk", "qsgd", "powersgd") else {}
        rows.append(_measure(label, build(name, **options, **extra), grads, workers, dim))
    return rows


def _measure(label: str, compressor: Compressor, grads: list[torch.Tensor], workers: int, dim: int) -> dict[str, Any]:
    ledger = CommLedger(dim=dim, num_workers=workers)
    raw_err = diff_err = 0.0
    for step, g in enumerate(grads):
        mean = g.mean(dim=0)
        ledger.begin_round()
        raw_sum = g[0].clone()  # the hub's own gradient never travels
        diff_sum = g[0] * workers
        for w in range(1, workers):
            # Two alternatives of the same size; the ledger charges one message per worker.
            for message, total in ((g[w], raw_sum), (g[w] - g[0], diff_sum)):
                payload = compressor.compress(message, step=step, worker=w, key="raw" if total is raw_sum else "diff")
                total += compressor.decompress(payload)
            ledger.record(Direction.UPLINK, sender=w, nbytes=payload.nbytes, tag="compressed")
        ledger.record(Direction.DOWNLINK, nbytes=mean.numel() * mean.element_size())
        scale = float(mean.square().sum())
        raw_err += float((raw_sum / workers - mean).square().sum()) / scale
        diff_err += float((diff_sum / workers - mean).square().sum()) / scale
    if compressor.unbiased:
        constant = f"ω={compressor.omega(dim):.3g}"
    else:
        beta = compressor.beta(dim)
        constant = f"β={beta:.3g}" if beta > 1.01 else f"1−1/β={1 - 1 / beta:.1e}"
    return {
        "compressor": label,
        "unbiased": compressor.unbiased,
        "constant": constant,
        "bytes_per_message": ledger.uplink_bytes // ledger.cc2,
        "gamma": ledger.gamma(),
        "cc3": ledger.cc3,
        "uplink_bytes_per_worker": ledger.uplink_bytes_per_worker()[1],
        "downlink_bytes_per_worker": ledger.downlink_bytes_per_worker()[1],
        "rel_error_raw": raw_err / len(grads),
        "rel_error_difference": diff_err / len(grads),
    }


def render(rows: Sequence[dict[str, Any]], *, workers: int, dim: int, rounds: int, delta: float) -> Table:
    """A rich table of :func:`run_demo`'s rows."""
    table = Table(
        title=f"lit_commeff compression demo: M={workers} workers, d={dim}, {rounds} rounds, dissimilarity δ={delta}",
        caption="rel. error = ||hub's mean − true mean||² / ||true mean||², averaged over rounds; "
        "bytes are the wire tensors' bytes (Payload.nbytes)",
    )
    for col in (
        "compressor",
        "constant",
        "bytes/msg",
        "γ (measured)",
        "CC-3",
        "uplink B/worker",
        "rel. error raw",
        "rel. error diff.",
    ):
        table.add_column(col, justify="left" if col == "compressor" else "right")
    for r in rows:
        table.add_row(
            r["compressor"],
            r["constant"],
            f"{r['bytes_per_message']:,}",
            f"{r['gamma']:.1f}×",
            f"{r['cc3']:.3f}",
            f"{r['uplink_bytes_per_worker']:,}",
            f"{r['rel_error_raw']:.2e}",
            f"{r['rel_error_difference']:.2e}",
        )
    return table


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lit-commeff-demo`` and ``python -m lit_commeff``."""
    parser = argparse.ArgumentParser(prog="lit-commeff-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=8, help="simulated workers M, hub included (default 8)")
    parser.add_argument("--dim", type=int, default=10_000, help="message dimension d (default 10000)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds to average over (default 20)")
    parser.add_argument("--delta", type=float, default=0.05, help="dissimilarity between workers (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    try:
        rows = run_demo(workers=args.workers, dim=args.dim, rounds=args.rounds, delta=args.delta, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    console = Console()
    if not console.is_terminal:  # piped output: do not squeeze the table into 80 columns
        console = Console(width=150)
    console.print(render(rows, workers=args.workers, dim=args.dim, rounds=args.rounds, delta=args.delta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
