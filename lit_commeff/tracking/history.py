"""Validation metric against communication volume: recorded by rank 0, plotted for runs and comparisons."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "ledger_summary.json"


class CommHistory(pl.Callback):
    """After each validation (rank 0), appends ``{step, monitor value, bytes, seconds}`` to a file.

    ``seconds`` is the wall time since training started; ``train_seconds`` is the same minus every pause
    of training for validation, i.e. the training time a run with less frequent validation would need
    to reach the same step (benchmark B3 reports both). A pause runs from the start of a validation pass
    to the next training batch, so it also holds what Lightning does after validating: the checkpoint
    (a collective gather of every rank's algorithm state, see :mod:`lit_commeff.strategy.state`) and
    the logging. How often a run validates and checkpoints is the caller's choice, not the method's.

    Bytes are the strategy's exact per-worker totals (``trainer.strategy.comm_summary()``) at that
    moment: ``uplink_bytes`` and ``downlink_bytes`` handed to collectives, and ``wire_up_bytes``,
    ``wire_down_bytes`` and ``wire_total_bytes`` on the busiest worker's link (ring all-reduce, star
    gather/broadcast); at the end of training the full summary is written to ``ledger_summary.json``.

    Args:
        out_dir: Directory of ``history.jsonl`` and ``ledger_summary.json``.
        monitor: Validation metric to record (e.g. ``"val/auroc"``).
    """

    def __init__(self, out_dir: str | Path, monitor: str) -> None:
        self.out_dir = Path(out_dir)
        self.monitor = monitor
        self._start = time.perf_counter()
        self._pause_start: float | None = None
        self._paused = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()
        self._pause_start = None
        self._paused = 0.0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._resume()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._resume()
        if trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / SUMMARY_FILE).write_text(json.dumps(_summary(trainer), indent=2, default=str))

    def _resume(self) -> None:
        if self._pause_start is not None:
            self._paused += time.perf_counter() - self._pause_start
            self._pause_start = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._pause_start is None:
            self._pause_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._pause_start is None:
            return
        now = time.perf_counter()
        if not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.monitor)
        summary = _summary(trainer)
        record = {
            "step": int(trainer.global_step),
            "epoch": int(trainer.current_epoch),
            "value": None if value is None else float(value),
            "uplink_bytes": summary.get("worker_uplink_bytes"),
            "downlink_bytes": summary.get("worker_downlink_bytes"),
            "wire_up_bytes": summary.get("worker_wire_up_bytes"),
            "wire_down_bytes": summary.get("worker_wire_down_bytes"),
            "wire_total_bytes": summary.get("worker_wire_total_bytes"),
            "seconds": now - self._start,
            "train_seconds": self._pause_start - self._start - self._paused,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / HISTORY_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _summary(trainer: pl.Trainer) -> dict[str, Any]:
    fn = getattr(trainer.strategy, "comm_summary", None)
    return dict(fn()) if fn is not None else {}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metric_vs_bytes(
    curves: Mapping[str, Sequence[tuple[float, float]]], *, metric: str, out: str | Path, title: str = ""
) -> Path:
    """One line per run: validation metric against uplink MB per worker (log x when it helps)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive = False
    for label, points in curves.items():
        pts = [(b / 1e6, v) for b, v in points if b is not None and v is not None and math.isfinite(v)]
        if not pts:
            continue
        positive = positive or all(b > 0 for b, _ in pts)
        ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o", markersize=3, label=label)
    if positive:
        ax.set_xscale("log")
    ax.set_xlabel("uplink MB per worker (exact bytes handed to collectives)")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} vs uplink bytes")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
