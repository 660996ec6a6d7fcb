"""B2 (quick): bytes to accuracy — credit-default MLP, real multi-process CPU training, methods side by side.

Every method trains the same MLP (23-64-64-1, BCE with logits) from the same initial weights with the
same seed, batch (64 per rank), optimizer (SGD, lr 0.1, momentum 0) and number of CPU processes (4),
each in its own ``Trainer.fit`` with a lit_commeff strategy. Every ``--val-every`` steps the ranks
compute the validation AUROC over the full validation split (torchmetrics syncs across ranks) and
rank 0 records (step, AUROC, uplink and downlink bytes per worker so far) from the strategy's ledger
(``trainer.strategy.comm_summary()``: exact bytes of the tensors handed to collectives).

Target = DDP's (``ddp_metered``) final AUROC minus ``--tolerance``. Per method: the final AUROC, the
bytes per worker at the end, the bytes per worker at the first validation point that reaches the
target, and their ratios against DDP and against the best baseline (DDP, PowerSGD, DiLoCo).

    python benchmarks/b2_bytes_to_accuracy.py                       # quick: all six methods, 2-3 min on 2 cores
    python benchmarks/b2_bytes_to_accuracy.py --methods ddp_metered olga --steps 200
    python benchmarks/b2_bytes_to_accuracy.py --set olga.theta=0.5   # override one strategy option
    python benchmarks/b2_bytes_to_accuracy.py --data synthetic       # no CSV needed

The model, data module and recorder live at module level, so ``--start-method spawn`` can unpickle them.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import BinaryAUROC

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "datasets" / "UCI_Credit_Card.csv"
TARGET_COLUMN = "default.payment.next.month"
METHODS = ("ddp_metered", "powersgd", "diloco", "compressed", "olga", "ef_olga")
BASELINES = ("ddp_metered", "powersgd", "diloco")
DIRECTIONS = ("uplink_bytes", "downlink_bytes", "total_bytes")
#: Label of the temporary stand-in used while ``ddp_metered`` does not exist (see :func:`build_strategy`).
FALLBACK_NOTE = "TEMPORARY FALLBACK: plain Lightning 'ddp', bytes = steps x d x 4 (not metered)"


# ----------------------------------------------------------------------------------------------- data
def load_table(data: str, csv: Path, seed: int, synthetic_rows: int = 30_000) -> dict[str, torch.Tensor]:
    """The credit-default table (or a synthetic stand-in) as standardised train/val tensors.

    Args:
        data: ``"credit"`` (the CSV), ``"synthetic"`` or ``"auto"`` (the CSV if present, else synthetic).
        csv: Path of ``UCI_Credit_Card.csv``.
        seed: Seed of the 80/20 split (and of the synthetic table).
        synthetic_rows: Rows of the synthetic table.

    Returns:
        ``x_train``, ``y_train``, ``x_val``, ``y_val`` (float32; ``y`` of shape ``(n,)``) and ``source``.
    """
    if data == "auto":
        data = "credit" if csv.is_file() else "synthetic"
    if data == "credit":
        import pandas as pd

        frame = pd.read_csv(csv)
        y = torch.tensor(frame[TARGET_COLUMN].to_numpy(), dtype=torch.float32)
        x = torch.tensor(frame.drop(columns=["ID", TARGET_COLUMN]).to_numpy(dtype="float32"))
        source = str(csv)
    elif data == "synthetic":
        x, y = synthetic_table(synthetic_rows, seed)
        source = f"synthetic ({synthetic_rows} rows, seed {seed})"
    else:
        raise ValueError(f"--data: {data!r} is unknown; use credit, synthetic or auto.")
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=gen)
    cut = int(0.8 * len(y))
    train, val = order[:cut], order[cut:]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    return {
        "x_train": (x[train] - mean) / std,
        "y_train": y[train],
        "x_val": (x[val] - mean) / std,
        "y_val": y[val],
        "source": source,
    }


def synthetic_table(rows: int, seed: int, features: int = 23, positive_rate: float = 0.22) -> tuple:
    """A credit-like table: 23 correlated features, a non-linear logit, about 22 % positives."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=gen) / math.sqrt(features)
    x = torch.randn(rows, features, generator=gen) @ (torch.eye(features) + 0.5 * mix)
    w = torch.randn(features, generator=gen) * 0.6
    logit = x @ w + 0.8 * torch.tanh(x[:, 0] * x[:, 1]) - 0.5 * x[:, 2].abs()
    lo, hi = -20.0, 20.0  # intercept by bisection so that the mean probability is positive_rate
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if torch.sigmoid(logit + mid).mean() < positive_rate else (lo, mid)
    y = torch.bernoulli(torch.sigmoid(logit + (lo + hi) / 2), generator=gen)
    return x, y


class CreditData(pl.LightningDataModule):
    """Train/val tensors; Lightning adds the DistributedSampler (each rank its own shard)."""

    def __init__(self, table: dict[str, torch.Tensor], batch_size: int = 64, val_batch_size: int = 1024) -> None:
        super().__init__()
        self.table = table
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size

    def train_dataloader(self) -> DataLoader:
        ds = TensorDataset(self.table["x_train"], self.table["y_train"])
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        ds = TensorDataset(self.table["x_val"], self.table["y_val"])
        return DataLoader(ds, batch_size=self.val_batch_size, shuffle=False)


# ----------------------------------------------------------------------------------------------- model
class CreditMLP(pl.LightningModule):
    """``in-hidden-hidden-1`` MLP with ReLU, BCE with logits, SGD; validation AUROC over all ranks."""

    def __init__(
        self,
        in_features: int = 23,
        hidden: int = 64,
        lr: float = 0.1,
        momentum: float = 0.0,
        pos_weight: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        weight = None if pos_weight is None else torch.tensor([pos_weight])
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
        self.val_auroc = BinaryAUROC()
        self.last_val_auroc = float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss_fn(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_auroc.update(logits, y.long())
        self.log("val_loss", self.loss_fn(logits, y), on_epoch=True, sync_dist=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        value = self.val_auroc.compute()  # torchmetrics gathers every rank's predictions first
        self.val_auroc.reset()
        self.last_val_auroc = float(value)
        self.log("val_auroc", value, sync_dist=True)  # same value on every rank (silences Lightning's hint)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


def parameter_count(hidden: int, in_features: int = 23) -> int:
    """The number of trainable parameters (d) of :class:`CreditMLP`."""
    return in_features * hidden + hidden + hidden * hidden + hidden + hidden + 1


# ----------------------------------------------------------------------------------------------- recording
def _plain(value: Any) -> Any:
    """JSON-safe copy (non-finite floats become strings, tensors numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain(payload), indent=1))
    tmp.replace(path)


class CurveRecorder(Callback):
    """On rank 0: one record per validation (step, AUROC, bytes per worker) into a JSON file.

    Args:
        path: The JSON file (rewritten after every validation and at the end of training).
        fallback_bytes_per_step: Only for the temporary ``ddp`` stand-in: bytes per step per worker
            (uplink = downlink) when the strategy has no ledger; ``None`` otherwise.
    """

    def __init__(self, path: Path, fallback_bytes_per_step: int | None = None) -> None:
        self.path = Path(path)
        self.fallback = fallback_bytes_per_step
        self.records: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.train_s: float | None = None

    def _bytes(self, trainer: pl.Trainer) -> tuple[float, float, dict]:
        summary_fn = getattr(trainer.strategy, "comm_summary", None)
        summary = summary_fn() if summary_fn is not None else {}
        if summary:
            return float(summary["worker_uplink_bytes"]), float(summary["worker_downlink_bytes"]), summary
        if self.fallback is not None:  # TEMPORARY: plain ddp has no ledger
            n = trainer.global_step * self.fallback
            return float(n), float(n), {"steps": trainer.global_step, "fallback": FALLBACK_NOTE}
        m = trainer.callback_metrics
        return float(m.get("comm/uplink_bytes", math.nan)), float(m.get("comm/downlink_bytes", math.nan)), {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        up, down, _ = self._bytes(trainer)
        self.records.append(
            {
                "step": trainer.global_step,
                "val_auroc": pl_module.last_val_auroc,
                "uplink_bytes": up,
                "downlink_bytes": down,
                "elapsed_s": time.perf_counter() - self.t0,
            }
        )
        self._dump(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        self.train_s = time.perf_counter() - self.t0
        self._dump(trainer)

    def _dump(self, trainer: pl.Trainer) -> None:
        up, down, summary = self._bytes(trainer)
        payload = {
            "records": self.records,
            "final_step": trainer.global_step,
            "final_uplink_bytes": up,
            "final_downlink_bytes": down,
            "train_s": self.train_s,
            "summary": summary,
        }
        _write_json(self.path, payload)


# ----------------------------------------------------------------------------------------------- strategies
def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["olga.theta=0.5", "powersgd.rank=2"]`` -> ``{"olga": {"theta": 0.5}, "powersgd": {"rank": 2}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, option = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set: {item!r} is not METHOD.OPTION=VALUE")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(method, {})[option] = value
    return out


def build_strategy(
    name: str, *, start_method: str, seed: int, options: dict[str, Any] | None = None, timeout_s: float = 300
) -> tuple[Any, str | None]:
    """A strategy instance for ``name`` and, for the temporary ``ddp`` stand-in, the note saying so.

    ``"ddp"`` is plain Lightning DDP (no metering). ``"ddp_metered"`` is lit_commeff's metered DDP; while
    that class does not exist yet this returns plain DDP and :data:`FALLBACK_NOTE` (bytes then come from
    the recorder's d x 4 per step count, a clearly labelled temporary path). Options not given keep
    the strategy's defaults; ``seed`` is passed where the constructor takes one.
    """
    from lightning.pytorch.strategies import DDPStrategy

    from lit_commeff.strategy import strategy_classes

    options = dict(options or {})
    timeout = timedelta(seconds=timeout_s)
    if name == "ddp":
        return DDPStrategy(start_method=start_method, timeout=timeout, **options), None
    classes = strategy_classes()
    if name not in classes:  # registry lists the baselines only once all three modules exist
        found = _strategy_from_module(name)
        if found is not None:
            classes[name] = found
    if name not in classes:
        if name == "ddp_metered":  # TEMPORARY stand-in, remove once ddp_metered exists everywhere
            return DDPStrategy(start_method=start_method, timeout=timeout, **options), FALLBACK_NOTE
        raise KeyError(f"strategy {name!r} does not exist (available: {sorted(classes)})")
    cls = classes[name]
    if "seed" in inspect.signature(cls.__init__).parameters and "seed" not in options:
        options["seed"] = seed
    return cls(start_method=start_method, timeout=timeout, **options), None


def _strategy_from_module(name: str) -> type | None:
    """The class with ``strategy_name == name`` in ``lit_commeff.strategy.<name>``, if that module imports."""
    import importlib

    from lit_commeff.strategy import CommStrategy

    try:
        module = importlib.import_module(f"lit_commeff.strategy.{name}")
    except ImportError:
        return None
    for value in vars(module).values():
        if isinstance(value, type) and issubclass(value, CommStrategy) and value.strategy_name == name:
            return value
    return None


def make_trainer(strategy: Any, *, ranks: int, callbacks: list[Callback], **kwargs: Any) -> pl.Trainer:
    """A quiet CPU Trainer (no logger, checkpoints, progress bar or summary)."""
    return pl.Trainer(
        accelerator="cpu",
        devices=ranks,
        strategy=strategy,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def quiet_lightning() -> None:
    """Lightning's per-fit info lines (GPU available, Initializing distributed, ...) off; warnings stay."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def fit_with_watchdog(trainer: pl.Trainer, model: pl.LightningModule, data: Any, timeout_s: float) -> None:
    """``trainer.fit``; if it runs past ``timeout_s``, SIGKILL this process's worker processes and raise TimeoutError.

    A deadlocked collective never returns (gloo's timeout does not cover work that never starts), so each
    fit gets a wall-clock limit. Only children started by this process (the fit's ranks) are killed.
    """
    import multiprocessing
    import signal
    import threading

    fired = threading.Event()

    def kill() -> None:
        fired.set()
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGKILL)

    timer = threading.Timer(timeout_s, kill)
    timer.daemon = True
    timer.start()
    try:
        trainer.fit(model, datamodule=data)
    except Exception as exc:
        if fired.is_set():
            raise TimeoutError(f"hang: fit still running after {timeout_s:.0f} s, its processes were killed") from exc
        raise
    finally:
        timer.cancel()


def error_summary(exc: BaseException) -> str:
    """One line: the exception type and the last line of its message that names an error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line or "Exception" in line or "error" in line]
    text = named[-1] if named else (lines[-1] if lines else "")
    return f"{type(exc).__name__}: {text[:400]}"


def fresh_port() -> None:
    """Forget the previous fit's MASTER_PORT so that each fit picks a free one."""
    os.environ.pop("MASTER_PORT", None)


# ----------------------------------------------------------------------------------------------- one run
def run_method(method: str, args: argparse.Namespace, table: dict, overrides: dict, workdir: Path) -> dict[str, Any]:
    """One ``Trainer.fit`` of ``method``; the rank-0 records (or the error)."""
    pl.seed_everything(args.seed, workers=True, verbose=False)
    model = CreditMLP(hidden=args.hidden, lr=args.lr, momentum=args.momentum, pos_weight=args.pos_weight)
    data = CreditData(table, batch_size=args.batch_size)
    path = workdir / f"{method}.json"
    path.unlink(missing_ok=True)
    out: dict[str, Any] = {"method": method, "options": overrides.get(method, {})}
    t0 = time.perf_counter()
    try:
        strategy, note = build_strategy(
            method,
            start_method=args.start_method,
            seed=args.seed,
            options=overrides.get(method),
            timeout_s=args.fit_timeout,
        )
        if note:
            out["note"] = note
        fallback = parameter_count(args.hidden) * 4 if note else None
        trainer = make_trainer(
            strategy,
            ranks=args.ranks,
            callbacks=[CurveRecorder(path, fallback)],
            max_steps=args.steps,
            val_check_interval=args.val_every,
            check_val_every_n_epoch=None,
        )
        fresh_port()
        fit_with_watchdog(trainer, model, data, args.fit_timeout)
    except Exception as exc:  # record any strategy failure and go on with the next method
        out["error"] = error_summary(exc)
        out["traceback"] = traceback.format_exc()[-4000:]
        print(f"[b2] {method} FAILED: {out['error']}", file=sys.stderr)
    out["wall_s"] = time.perf_counter() - t0
    if path.is_file():
        out.update(json.loads(path.read_text()))
    if "error" not in out and not out.get("records"):
        out["error"] = "no validation records came back from rank 0"
    return out


# ----------------------------------------------------------------------------------------------- analysis
def first_reaching(records: list[dict], target: float) -> dict | None:
    """The first validation record with AUROC >= target."""
    return next((r for r in records if r["val_auroc"] >= target), None)


def analyse(results: list[dict], tolerance: float, reference: str = "ddp_metered") -> dict[str, Any]:
    """Target, per-method bytes to target and ratios vs DDP and vs the best baseline."""
    ok = {r["method"]: r for r in results if "error" not in r}
    ref = ok.get(reference)
    if ref is None:
        return {"target": None, "note": f"no {reference} result: no target"}
    target = ref["records"][-1]["val_auroc"] - tolerance
    for r in results:
        if "error" in r:
            continue
        hit = first_reaching(r["records"], target)
        r["final_auroc"] = r["records"][-1]["val_auroc"]
        r["to_target"] = (
            None
            if hit is None
            else {
                "step": hit["step"],
                "uplink_bytes": hit["uplink_bytes"],
                "downlink_bytes": hit["downlink_bytes"],
                "total_bytes": hit["uplink_bytes"] + hit["downlink_bytes"],
            }
        )
    best: dict[str, tuple[str, float] | None] = {}
    for direction in DIRECTIONS:
        candidates = [
            (m, ok[m]["to_target"][direction]) for m in BASELINES if m in ok and ok[m].get("to_target") is not None
        ]
        best[direction] = min(candidates, key=lambda c: c[1]) if candidates else None
    for r in results:
        if "error" in r:
            continue
        r["ratios"] = {}
        for direction in DIRECTIONS:
            mine = r["to_target"][direction] if r["to_target"] else math.inf
            ddp = ref["to_target"][direction] if ref.get("to_target") else math.nan
            b = best[direction]
            r["ratios"][direction] = {
                "vs_ddp": mine / ddp if ddp else math.nan,
                "vs_best_baseline": mine / b[1] if b and b[1] else math.nan,
            }
    return {
        "target": target,
        "reference": reference,
        "reference_final_auroc": ref["records"][-1]["val_auroc"],
        "best_baseline": {k: (v[0] if v else None) for k, v in best.items()},
    }


def _mb(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isinf(value)):
        return "never"
    return f"{value / 1e6:,.3f}"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.3f}×"


def results_table(results: list[dict], summary: dict, title: str) -> Table:
    """The rich table of :func:`analyse`'s results."""
    t = Table(title=title)
    cols = (
        "method", "final AUROC", "up MB", "down MB", "up MB→tgt", "down MB→tgt", "step→tgt",
        "up/DDP", "up/best", "(up+down)/DDP", "(up+down)/best", "steps", "wall s",
    )  # fmt: skip
    for col in cols:
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        if "error" in r:
            t.add_row(r["method"], f"[red]{r['error'][:90]}[/red]", *[""] * 10, f"{r['wall_s']:.0f}")
            continue
        hit, ra = r.get("to_target"), r.get("ratios", {})
        up, total = ra.get("uplink_bytes", {}), ra.get("total_bytes", {})
        t.add_row(
            r["method"] + (" (fallback)" if r.get("note") else ""),
            f"{r['final_auroc']:.4f}" if "final_auroc" in r else f"{r['records'][-1]['val_auroc']:.4f}",
            _mb(r["final_uplink_bytes"]), _mb(r["final_downlink_bytes"]),
            _mb(hit["uplink_bytes"]) if hit else "never", _mb(hit["downlink_bytes"]) if hit else "never",
            str(hit["step"]) if hit else "never",
            _ratio(up.get("vs_ddp", math.nan)), _ratio(up.get("vs_best_baseline", math.nan)),
            _ratio(total.get("vs_ddp", math.nan)), _ratio(total.get("vs_best_baseline", math.nan)),
            str(r["final_step"]), f"{r['wall_s']:.0f}",
        )  # fmt: skip
    return t


def plot(results: list[dict], summary: dict, path: Path, title: str) -> None:
    """Val AUROC vs uplink MB per worker (log x), one line per method, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles = ["-", "--", "-.", ":"]
    for i, r in enumerate(results):
        if "error" in r or not r.get("records"):
            continue
        points = [(rec["uplink_bytes"] / 1e6, rec["val_auroc"]) for rec in r["records"] if rec["uplink_bytes"] > 0]
        if not points:  # nothing sent (log axis): no line
            continue
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, styles[i % len(styles)], marker="o", markersize=3, label=r["method"])
    if summary.get("target") is not None:
        ax.axhline(summary["target"], color="grey", linestyle=":", linewidth=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel("uplink MB per worker (cumulative; points before the first uplink byte left out)")
    ax.set_ylabel("validation AUROC")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action=argparse.BooleanOptionalAction, default=True, help="(default) quick run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"default: {' '.join(METHODS)}")
    parser.add_argument("--steps", type=int, help="optimizer steps per method (default: quick 600, full 2000)")
    parser.add_argument("--val-every", type=int, help="validate every N steps (default: quick 25, full 100)")
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--pos-weight", type=float, default=None, help="BCE pos_weight (default none)")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("auto", "credit", "synthetic"), default="auto")
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--start-method", choices=("fork", "spawn"), default="fork")
    parser.add_argument("--fit-timeout", type=float, default=300, help="kill a fit (hang) after this many s")
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.OPTION=VALUE", help="strategy options")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="JSON folder")
    parser.add_argument("--plot", type=Path, help="PNG (default docs/benchmarks/b2_quick.png or b2.png)")
    args = parser.parse_args(argv)
    args.steps = args.steps or (600 if args.quick else 2000)
    args.val_every = args.val_every or (25 if args.quick else 100)
    suffix = "_quick" if args.quick else ""
    plot_path = args.plot or ROOT / "docs" / "benchmarks" / f"b2{suffix}.png"
    torch.set_num_threads(1)  # ranks share 2 cores; also keeps fork safe
    quiet_lightning()
    overrides = parse_overrides(args.set)

    from lit_commeff.strategy import strategy_classes

    available = sorted(set(strategy_classes()) | {m for m in METHODS if _strategy_from_module(m) is not None})
    table = load_table(args.data, args.csv, args.seed)
    d = parameter_count(args.hidden)
    print(
        f"[b2] data: {table['source']}; train {len(table['y_train'])}, val {len(table['y_val'])}, "
        f"positives {table['y_train'].mean():.3f}; d = {d}; strategies available: {available}",
        file=sys.stderr,
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="b2_") as tmp:
        for method in args.methods:
            print(f"[b2] {method}: fit {args.steps} steps on {args.ranks} ranks ...", file=sys.stderr)
            r = run_method(method, args, table, overrides, Path(tmp))
            results.append(r)
            if "error" not in r:
                print(
                    f"[b2] {method}: AUROC {r['records'][-1]['val_auroc']:.4f}, up {_mb(r['final_uplink_bytes'])} MB, "
                    f"{r['wall_s']:.0f} s",
                    file=sys.stderr,
                )
    summary = analyse(results, args.tolerance)
    title = (
        f"B2{' quick' if args.quick else ''}: {'synthetic' if table['source'].startswith('synthetic') else 'credit'} "
        f"MLP 23-{args.hidden}-{args.hidden}-1 (d={d}), {args.ranks} CPU "
        f"ranks, batch {args.batch_size}/rank, SGD lr {args.lr}, {args.steps} steps"
    )
    Console(width=200).print(results_table(results, summary, title))
    if summary.get("target") is not None:
        print(
            f"target AUROC = {summary['reference']} final {summary['reference_final_auroc']:.4f} - {args.tolerance} "
            f"= {summary['target']:.4f}; best baseline to target (uplink): {summary['best_baseline']['uplink_bytes']}, "
            f"(uplink + downlink): {summary['best_baseline']['total_bytes']}"
        )
    print(
        "MB = 1e6 bytes per worker (busiest worker, from the strategy's ledger: bytes of the tensors handed to "
        "collectives; an all-reduce counts as uplink only); ratios = bytes to target / the reference's, < 1: fewer"
    )
    for r in results:
        if r.get("note"):
            print(f"note: {r['method']}: {r['note']}")
        if "error" in r:
            print(f"error: {r['method']}: {r['error']}")
    meta = {
        "benchmark": "B2",
        "quick": args.quick,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": table["source"],
        "d": d,
        "strategies_available": available,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"b2{suffix}.json"
    _write_json(path, {"meta": meta, "summary": summary, "methods": results})
    print(f"wrote {path}")
    plot(results, summary, plot_path, title)
    print(f"wrote {plot_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
