"""What a logged step's metrics cost rank 0: ``self.log`` per metric against one call to the loggers.

Every lit_commeff strategy logs ``comm/*`` (17 values and 2 progress-bar values) on rank 0 at each step Lightning
hands to its loggers, and Gated DANE 10-13 diagnostics more. Through ``LightningModule.log`` each value costs
Lightning's bookkeeping (session 29 measured 8-10 ms for ``comm/*`` per logged step on a 4-rank run on 2 cores);
since session 30 they go to the loggers in one call (``lit_commeff.strategy.metering.log_rank_zero``). This script
fits a tiny model in one process with Lightning's ``MLFlowLogger`` (SQLite store, MLflow's background writer, as
the CLI's default) and ``log_every_n_steps=1``, three ways in turn (no extra metrics, ``self.log`` per value,
``log_rank_zero``), ``--repeats`` times, and prints each way's training time per step and the extra over the
run without them (medians over the repeats)::

    python benchmarks/log_step_cost.py --out benchmarks/results/log_step_cost.json   # ~1 min
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
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.strategy.metering import COMM_METRICS, log_rank_zero

DIAGNOSTICS = 12  # Gated DANE's diagnostics under overlap with link_aware (H, drift, last round's 5, times 5)
WAYS = ("none", "self.log", "log_rank_zero")


class _Model(pl.LightningModule):
    def __init__(self, way: str) -> None:
        super().__init__()
        self.way = way
        self.layer = nn.Linear(16, 1)
        self.seconds: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("train/loss", loss)
        values = {name: float(batch_idx + i) for i, name in enumerate(COMM_METRICS)}
        values.update({f"diag/m{i}": float(batch_idx * i) for i in range(DIAGNOSTICS)})
        bar = {"up_MB": 1.0, "down_MB": 2.0}
        started = time.perf_counter()
        if self.way == "self.log":  # the path before session 30
            for name, value in values.items():
                self.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1)
            for name, value in bar.items():
                self.log(name, value, prog_bar=True, logger=False, rank_zero_only=True, batch_size=1)
        elif self.way == "log_rank_zero":
            log_rank_zero(self, values, prog_bar=bar)
        self.seconds.append(time.perf_counter() - started)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(way: str, *, steps: int, store: Path) -> dict[str, float]:
    """One fit of ``steps`` steps; its training time per step and the logging calls' median, in ms."""
    g = torch.Generator().manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(steps * 8, 16, generator=g), torch.randn(steps * 8, 1, generator=g)), 8)
    model = _Model(way)
    logger = MLFlowLogger(experiment_name="log_step_cost", tracking_uri=f"sqlite:///{store}", synchronous=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=logger,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - started
    return {"ms_per_step": 1000 * seconds / steps, "call_ms": 1000 * statistics.median(model.seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100 steps, one repeat (~15 s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 100, 1
    runs: dict[str, list[dict[str, float]]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for way in WAYS:  # in turn, so a slow spell of the machine falls on every way alike
                runs[way].append(fit(way, steps=args.steps, store=Path(tmp) / f"{repeat}-{way.replace('.', '_')}.db"))
    base = statistics.median(r["ms_per_step"] for r in runs["none"])
    rows = []
    for way in WAYS:
        step = statistics.median(r["ms_per_step"] for r in runs[way])
        call = statistics.median(r["call_ms"] for r in runs[way])
        rows.append({"way": way, "ms_per_step": step, "extra_ms_per_step": step - base, "call_ms": call})
        print(f"{way:14s} training {step:6.2f} ms/step, {step - base:+6.2f} over none; the logging call {call:.2f} ms")
    if args.out:
        meta = {
            "command": " ".join(["python", *sys.argv]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": len(COMM_METRICS) + DIAGNOSTICS,
            "progress_bar": 2,
            "steps": args.steps,
            "repeats": args.repeats,
            "torch": torch.__version__,
            "lightning": pl.__version__,
        }
        args.out.write_text(json.dumps({"meta": meta, "rows": rows, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
