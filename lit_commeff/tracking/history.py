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
from lightning.pytorch.loggers import MLFlowLogger

from lit_commeff.tracking.mlflow_run import log_new_params
from lit_commeff.tracking.settings import effective_settings

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "ledger_summary.json"
SETTINGS_FILE = "effective_settings.json"


class CommHistory(pl.Callback):
    """After each validation (rank 0), appends ``{step, monitor value, bytes, seconds}`` to a file.

    ``seconds`` is the wall time since training started; ``train_seconds`` is the same minus every pause
    of training for validation, i.e. the training time a run with less frequent validation would need
    to reach the same step (benchmark B3 reports both). A pause runs from the start of a validation pass
    to the next training batch, so it also holds what Lightning does after validating: the checkpoint
    (a collective gather of every rank's algorithm state, see :mod:`lit_commeff.strategy.state`) and
    the logging. How often a run validates and checkpoints is the caller's choice, not the method's.
    Communication that a strategy runs in the background goes on through a pause; ``train_seconds`` adds back
    what of it the pauses hid (the strategy's ``pause_hidden_seconds()``, recorded as ``pause_hidden_seconds``):
    had training gone on instead, it would have waited for that part.

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

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Rank 0: the settings in force (resolved defaults, see :mod:`lit_commeff.tracking.settings`).

        Written to ``effective_settings.json`` and logged as params of every MLflow logger's run (keys
        already there are kept; a changed value, e.g. on resume, is noted in the tag
        ``lit_commeff.resume_changes``).
        """
        if not trainer.is_global_zero:
            return
        settings = effective_settings(trainer.strategy, pl_module)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=2, default=str))
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
                log_new_params(logger.experiment, logger.run_id, settings)

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
        hidden = _pause_hidden(trainer)
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
            "train_seconds": self._pause_start - self._start - self._paused + hidden,
            "pause_hidden_seconds": hidden,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / HISTORY_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _pause_hidden(trainer: pl.Trainer) -> float:
    """Background communication that validation pauses hid from training time (overlapped strategies; else 0)."""
    fn = getattr(trainer.strategy, "pause_hidden_seconds", None)
    return float(fn()) if fn is not None else 0.0


def _summary(trainer: pl.Trainer) -> dict[str, Any]:
    fn = getattr(trainer.strategy, "comm_summary", None)
    return dict(fn()) if fn is not None else {}


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``history.jsonl`` (empty if the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_history(path: str | Path, records: Sequence[Mapping[str, Any]]) -> None:
    """Write records as a ``history.jsonl`` (one JSON object a line)."""
    Path(path).write_text("".join(json.dumps(dict(r)) + "\n" for r in records))


def dedupe_history(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records in file order where a later record at step s replaces every earlier one at step >= s.

    A resumed run re-does the steps after its checkpoint: what a crashed attempt recorded past the checkpoint
    is superseded by what the resumed attempt records.
    """
    out: list[dict[str, Any]] = []
    for record in records:
        step = record.get("step")
        if step is not None:
            out = [r for r in out if r.get("step") is None or r["step"] < step]
        out.append(dict(record))
    return out


#: The byte axes of the metric-vs-bytes plot: history key -> axis label (per worker, on the wire).
PANELS = {
    "wire_up_bytes": "uplink MB per worker (wire)",
    "wire_total_bytes": "total MB per worker (wire: up + down)",
}


def points(records: Sequence[Mapping[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(MB, value)`` of the records with a finite value, MB from ``key``'s bytes.

    Histories written before the wire view have handed bytes only: ``uplink_bytes`` stands for
    ``wire_up_bytes``, up + down for ``wire_total_bytes``.

    Zero bytes are kept: a method that validates before its first sync (DiLoCo) has points at 0 MB.
    """
    out = []
    for r in records:
        value = r.get("value")
        if value is None or not math.isfinite(value):
            continue
        b = r.get(key)
        if b is None and key == "wire_up_bytes":
            b = r.get("uplink_bytes")
        elif b is None and key == "wire_total_bytes" and r.get("uplink_bytes") is not None:
            b = r["uplink_bytes"] + (r.get("downlink_bytes") or 0)
        if b is not None:
            out.append((b / 1e6, float(value)))
    return out


def metric_vs_bytes_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]], *, metric: str, title: str = "") -> Any:
    """The figure of :func:`plot_metric_vs_bytes`: one panel per :data:`PANELS` entry, one line per run.

    The x axis is logarithmic above the smallest positive value and linear below it (``symlog``), so points
    at 0 MB (validations before a first sync) stay on the plot instead of being dropped by a log axis.
    """
    fig, axes = plt.subplots(1, len(PANELS), figsize=(6.5 * len(PANELS), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], PANELS.items(), strict=True):
        all_x = []
        for name, records in curves.items():
            pts = points(records, key)
            if not pts:
                continue
            all_x += [b for b, _ in pts]
            ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o", markersize=3, label=name)
        positive = [x for x in all_x if x > 0]
        if positive and max(positive) / min(positive) > 10:
            ax.set_xscale("symlog", linthresh=min(positive))
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"{metric} vs bytes on the wire")
    fig.tight_layout()
    return fig


def plot_metric_vs_bytes(
    curves: Mapping[str, Sequence[Mapping[str, Any]]], *, metric: str, out: str | Path, title: str = ""
) -> Path:
    """Write a PNG: the validation metric against uplink MB and against total MB per worker, one line per run.

    Args:
        curves: Run label -> its ``history.jsonl`` records.
        metric: The metric's name (y axis).
        out: The PNG's path.
        title: The figure's title.
    """
    fig = metric_vs_bytes_figure(curves, metric=metric, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
