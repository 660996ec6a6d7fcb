"""Communication metrics every lit_commeff strategy reports: ``comm/*`` per step and a summary at fit end."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from rich.console import Console
from rich.table import Table

from lit_commeff.ledger import CommLedger, ring_wire_bytes
from lit_commeff.strategy import lightning_api

#: Metric names logged every training step (rank 0), see :meth:`CommMetering.log_comm_metrics`.
COMM_METRICS = (
    "comm/uplink_bytes",
    "comm/uplink_bytes_step",
    "comm/downlink_bytes",
    "comm/downlink_bytes_step",
    "comm/cc1",
    "comm/cc3",
    "comm/gamma",
    "comm/delta_hat",
    "comm/comm_time_s",
    "comm/wire_up_bytes",
    "comm/wire_down_bytes",
    "comm/wire_total_bytes",
    "comm/hub_egress_bytes",
    "comm/hub_ingress_bytes",
    "comm/wire_up_vs_ddp",
    "comm/wire_down_vs_ddp",
    "comm/wire_total_vs_ddp",
)

#: The wire quantities compared with dense DDP: summary key -> (label, DDP's summary key), in table order.
WIRE_VS_DDP = {
    "worker_wire_up_bytes": ("uplink per worker", "ddp_wire_up_bytes"),
    "worker_wire_down_bytes": ("downlink per worker", "ddp_wire_down_bytes"),
    "worker_wire_total_bytes": ("total per worker", "ddp_wire_total_bytes"),
    "hub_egress_bytes": ("hub egress", "ddp_wire_up_bytes"),
    "hub_ingress_bytes": ("hub ingress", "ddp_wire_down_bytes"),
}

#: How the wire bytes are modelled (in the summary, the docs and the fit-end table).
WIRE_MODEL = (
    "ring all-reduce: each rank sends and receives 2(M-1)/M of its bytes; "
    "star gather/broadcast: one hop between the hub and each worker"
)


class CommMetering:
    """Owns a strategy's :class:`~lit_commeff.ledger.CommLedger` and turns it into Lightning metrics.

    Byte metrics are **per worker**, in two views (see :class:`~lit_commeff.ledger.CommLedger`).
    ``comm/uplink_bytes`` and ``comm/downlink_bytes`` are the busiest worker's cumulative *handed* bytes
    (uplink: what it handed to gathers and all-reduces; downlink: what it received from the hub), the
    paper's count; ``*_step`` is the increase since the previous step. ``comm/wire_up_bytes``,
    ``comm/wire_down_bytes`` and ``comm/wire_total_bytes`` are what the busiest non-hub worker's link
    carries each way and in all (ring all-reduce, star gather/broadcast), ``comm/hub_egress_bytes`` and
    ``comm/hub_ingress_bytes`` what the hub's link carries; ``comm/wire_*_vs_ddp`` divide the worker's
    wire bytes by dense DDP's for the same number of optimizer steps (a ring all-reduce of the whole
    gradient per step: ``2 (M - 1) / M * d * itemsize`` each way per rank), so a value above 1 means
    the method moves more than DDP in that direction. ``comm/gamma`` is the measured compression power
    (dense-equivalent over sent bytes, all uplink messages). ``comm/delta_hat`` is logged by methods
    that estimate similarity (NaN otherwise). The progress bar shows the worker's wire ``up_MB`` and
    ``down_MB``.
    """

    def __init__(self, ledger: CommLedger, *, method: str) -> None:
        self.ledger = ledger
        self.method = method
        self.steps = 0
        self.sending_steps = 0
        self._last_up = 0
        self._step_bytes = (0, 0)  # (uplink, downlink) of the last counted step
        self._last_down = 0

    def worker_uplink_bytes(self) -> int:
        """Cumulative uplink bytes of the busiest worker."""
        return max(self.ledger.uplink_bytes_per_worker(), default=0)

    def worker_downlink_bytes(self) -> int:
        """Cumulative downlink bytes of the busiest receiving worker."""
        return max(self.ledger.downlink_bytes_per_worker(), default=0)

    def wire_bytes(self) -> dict[str, int]:
        """The wire view now: the busiest non-hub worker's up, down and total bytes, the hub's egress and ingress.

        With a single rank (no worker but the hub) the worker figures are the hub's.
        """
        ledger = self.ledger
        sent, received = ledger.wire_sent_bytes_per_rank(), ledger.wire_received_bytes_per_rank()
        workers = [w for w in range(ledger.num_workers) if w != ledger.hub] or [ledger.hub]
        return {
            "worker_wire_up_bytes": max(sent[w] for w in workers),
            "worker_wire_down_bytes": max(received[w] for w in workers),
            "worker_wire_total_bytes": max(sent[w] + received[w] for w in workers),
            "hub_egress_bytes": sent[ledger.hub],
            "hub_ingress_bytes": received[ledger.hub],
        }

    def ddp_wire_bytes(self, steps: int | None = None) -> dict[str, int]:
        """Dense DDP's wire bytes per rank for ``steps`` optimizer steps (default: the steps counted so far).

        DDP all-reduces the whole gradient (``dense_bytes``) once per step; in a ring each rank sends and
        receives :func:`~lit_commeff.ledger.ring_wire_bytes` of it. Computed from the model size, so it is
        the same figure a metered DDP run of this model reports.
        """
        steps = self.steps if steps is None else steps
        each = ring_wire_bytes(steps * self.ledger.dense_bytes, self.ledger.num_workers)
        return {"ddp_wire_up_bytes": each, "ddp_wire_down_bytes": each, "ddp_wire_total_bytes": 2 * each}

    def metrics(self, *, delta_hat: float | None = None) -> dict[str, float]:
        """The ``comm/*`` values after the last counted step."""
        up, down = self.worker_uplink_bytes(), self.worker_downlink_bytes()
        wire, ddp = self.wire_bytes(), self.ddp_wire_bytes()
        return {
            "comm/uplink_bytes": float(up),
            "comm/uplink_bytes_step": float(self._step_bytes[0]),
            "comm/downlink_bytes": float(down),
            "comm/downlink_bytes_step": float(self._step_bytes[1]),
            "comm/cc1": float(self.ledger.cc1),
            "comm/cc3": float(self.ledger.cc3),
            "comm/gamma": self.gamma(up),
            "comm/delta_hat": float("nan") if delta_hat is None else float(delta_hat),
            "comm/comm_time_s": float(self.ledger.comm_time_s),
            "comm/wire_up_bytes": float(wire["worker_wire_up_bytes"]),
            "comm/wire_down_bytes": float(wire["worker_wire_down_bytes"]),
            "comm/wire_total_bytes": float(wire["worker_wire_total_bytes"]),
            "comm/hub_egress_bytes": float(wire["hub_egress_bytes"]),
            "comm/hub_ingress_bytes": float(wire["hub_ingress_bytes"]),
            "comm/wire_up_vs_ddp": ratio(wire["worker_wire_up_bytes"], ddp["ddp_wire_up_bytes"]),
            "comm/wire_down_vs_ddp": ratio(wire["worker_wire_down_bytes"], ddp["ddp_wire_down_bytes"]),
            "comm/wire_total_vs_ddp": ratio(wire["worker_wire_total_bytes"], ddp["ddp_wire_total_bytes"]),
        }

    def gamma(self, uplink: int | None = None) -> float:
        """Dense bytes per sending step over the busiest worker's uplink bytes (NaN before any send)."""
        up = self.worker_uplink_bytes() if uplink is None else uplink
        return self.sending_steps * self.ledger.dense_bytes / up if up else float("nan")

    def log_comm_metrics(self, module: Any, *, delta_hat: float | None = None) -> bool:
        """Count the step and log ``comm/*`` when Lightning writes logs.

        Call it once per training step on every rank (the values agree; rank 0 logs them). The metrics reach
        the loggers on the steps Lightning hands to them (``log_every_n_steps``), and ``callback_metrics`` at
        those, the last batch of an epoch and ``max_steps``; the byte counters are cumulative, so nothing is lost
        between logged steps.
        Only rank 0 logs, in one call to the Trainer's loggers (:func:`log_rank_zero`): through ``self.log``
        (``rank_zero_only``) every rank spent 8–10 ms per logged step on them and 3–7 ms more on Gated
        DANE's diagnostics (medians; churn, 4 ranks on 2 cores, session 29), CPU time that ranks sharing a
        machine take from each other, and the other ranks' values were dropped anyway.

        Returns:
            Whether this is a logged step, on every rank (a method's diagnostics may reduce over the ranks).
        """
        self.steps += 1
        up, down = self.worker_uplink_bytes(), self.worker_downlink_bytes()
        self._step_bytes = (up - self._last_up, down - self._last_down)
        if self._step_bytes[0] > 0:
            self.sending_steps += 1
        self._last_up, self._last_down = up, down
        trainer = lightning_api.attached_trainer(module)
        if trainer is not None and not _logs_now(trainer, self.steps):
            return False
        if trainer is None or trainer.global_rank == 0:
            values = self.metrics(delta_hat=delta_hat)
            log_rank_zero(module, values, prog_bar={name: values[key] / 1e6 for name, key in PROGRESS_BAR.items()})
        return True

    def summary(self) -> dict[str, Any]:
        """Totals for the run: the ledger's summary plus per-worker bytes and the dense-DDP comparison.

        Handed bytes: ``worker_uplink_bytes`` / ``worker_downlink_bytes``, and ``ddp_equivalent_bytes``,
        what dense DDP hands to all-reduce per rank for the same number of optimizer steps (one dense
        gradient each), the yardstick of ``uplink_reduction``.

        Wire bytes (:meth:`wire_bytes`, model in ``wire_model``): ``worker_wire_up_bytes``,
        ``worker_wire_down_bytes``, ``worker_wire_total_bytes``, ``hub_egress_bytes`` and
        ``hub_ingress_bytes``; dense DDP's for the same steps from the model size (:meth:`ddp_wire_bytes`:
        ``ddp_wire_up_bytes``, ``ddp_wire_down_bytes``, ``ddp_wire_total_bytes``); their ratios
        ``wire_up_vs_ddp``, ``wire_down_vs_ddp``, ``wire_total_vs_ddp``, ``hub_egress_vs_ddp`` and
        ``hub_ingress_vs_ddp`` (above 1: more than DDP; the hub's links are compared with a DDP rank's);
        ``more_than_ddp`` names the quantities above DDP's and ``vs_ddp`` says it in one sentence.
        """
        out = dict(self.ledger.summary())
        up, down = self.worker_uplink_bytes(), self.worker_downlink_bytes()
        ddp = self.steps * self.ledger.dense_bytes
        out.update(
            method=self.method,
            steps=self.steps,
            worker_uplink_bytes=up,
            worker_downlink_bytes=down,
            ddp_equivalent_bytes=ddp,
            uplink_reduction=ddp / up if up else math.inf,
            sending_steps=self.sending_steps,
            gamma_per_step=self.gamma(up),
            wire_model=WIRE_MODEL,
        )
        out.update(self.wire_bytes())
        out.update(self.ddp_wire_bytes())
        for key, (_, ddp_key) in WIRE_VS_DDP.items():
            out[vs_ddp_key(key)] = ratio(out[key], out[ddp_key])
        out["more_than_ddp"] = more_than_ddp(out)
        out["vs_ddp"] = vs_ddp_sentence(self.method, out)
        return out

    def state_dict(self) -> dict[str, Any]:
        """Ledger totals and step count (plain types)."""
        return {
            "ledger": self.ledger.state_dict(),
            "steps": self.steps,
            "sending_steps": self.sending_steps,
            "last": [self._last_up, self._last_down],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.ledger.load_state_dict(state["ledger"])
        self.steps = int(state["steps"])
        self.sending_steps = int(state["sending_steps"])
        self._last_up, self._last_down = (int(v) for v in state["last"])

    @rank_zero_only
    def print_summary(self) -> None:
        """Print the fit-end table and the sentence that compares it with DDP (rank 0)."""
        s = self.summary()
        Console().print(summary_table(s))
        Console().print(s["vs_ddp"], highlight=False)


#: Progress-bar entries: name -> the ``comm/*`` metric shown, in MB (the worker's wire bytes).
PROGRESS_BAR = {"up_MB": "comm/wire_up_bytes", "down_MB": "comm/wire_down_bytes"}


def ratio(value: float, reference: float) -> float:
    """``value / reference``: NaN when both are 0, ``inf`` when only the reference is."""
    if reference:
        return value / reference
    return math.inf if value else math.nan


def times(r: float) -> str:
    """A ratio as ``0.18x``; within half a percent of 1 with four decimals, so ``1.0017x`` never reads ``1.00x``."""
    return f"{r:,.4f}x" if r != 1 and abs(r - 1) < 0.005 else f"{r:,.2f}x"


def vs_ddp_key(key: str) -> str:
    """The summary key of a wire quantity's ratio to DDP (``worker_wire_up_bytes`` -> ``wire_up_vs_ddp``)."""
    return key.removeprefix("worker_").removesuffix("_bytes") + "_vs_ddp"


def more_than_ddp(summary: dict[str, Any]) -> list[str]:
    """Labels of the wire quantities of ``summary`` above dense DDP's (ratio > 1), in table order."""
    return [label for key, (label, _) in WIRE_VS_DDP.items() if summary.get(vs_ddp_key(key), math.nan) > 1]


def vs_ddp_sentence(method: str, summary: dict[str, Any], *, reference: str = "dense DDP") -> str:
    """One plain sentence: where ``method`` moves more bytes than DDP, or that it moves fewer everywhere."""
    over = [
        f"{label} {times(summary[vs_ddp_key(key)])}"
        for key, (label, _) in WIRE_VS_DDP.items()
        if summary.get(vs_ddp_key(key), math.nan) > 1
    ]
    if over:
        return f"{method} moves MORE bytes than {reference} for the same steps: " + ", ".join(over) + "."
    return f"{method} moves no more bytes than {reference} for the same steps, in every direction."


def summary_table(s: dict[str, Any]) -> Table:
    """The fit-end table of a :meth:`CommMetering.summary`: wire bytes against DDP's, then the paper's counters."""
    mb = 1e6
    table = Table(
        title=f"lit_commeff: communication of {s['method']} ({s['steps']} steps, M={s['num_workers']})",
        caption=f"wire model: {s['wire_model']}",
    )
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("dense DDP, same steps", justify="right")
    table.add_column("x DDP", justify="right")
    for key, (label, ddp_key) in WIRE_VS_DDP.items():
        r = s[vs_ddp_key(key)]
        table.add_row(
            label + (" (sent)" if key == "hub_egress_bytes" else " (received)" if key == "hub_ingress_bytes" else ""),
            f"{s[key] / mb:,.3f} MB",
            f"{s[ddp_key] / mb:,.3f} MB",
            times(r) + (" MORE" if r > 1 else ""),
        )
    table.add_row(
        "uplink handed (paper's count)",
        f"{s['worker_uplink_bytes'] / mb:,.3f} MB",
        f"{s['ddp_equivalent_bytes'] / mb:,.3f} MB",
        times(ratio(s["worker_uplink_bytes"], s["ddp_equivalent_bytes"])),
    )
    table.add_row("rounds (CC-1)", f"{s['cc1']:,}", f"{s['steps']:,}", "")
    table.add_row("CC-3 (dense units)", f"{s['cc3']:,.2f}", f"{float(s['steps']):,.2f}", "")
    table.add_row("measured gamma (per sending step)", f"{s['gamma_per_step']:.2f}", "1.00", "")
    table.add_row("time in collectives", f"{s['comm_time_s']:.2f} s", "", "")
    return table


def log_rank_zero(module: Any, values: dict[str, float], *, prog_bar: dict[str, float] | None = None) -> None:
    """Log rank 0's step ``values`` (and ``prog_bar`` values, progress bar only); other ranks log nothing.

    In a Trainer they reach its loggers, ``logged_metrics`` and ``callback_metrics`` in one call
    (:func:`~lit_commeff.strategy.lightning_api.log_step_metrics`): ``self.log`` costs about 0.6 ms per value
    on CPU (``benchmarks/log_step_cost.py``), 8-10 ms per logged step for ``comm/*`` alone on rank 0 (churn,
    4 ranks on 2 cores, session 29).
    Outside a Trainer, ``module.log`` as usual.
    """
    trainer = lightning_api.attached_trainer(module)
    if trainer is not None:
        if trainer.global_rank == 0:
            lightning_api.log_step_metrics(trainer, values, prog_bar=prog_bar)
        return
    for name, value in values.items():
        module.log(name, value, on_step=True, on_epoch=False, rank_zero_only=True, batch_size=1)
    for name, value in (prog_bar or {}).items():
        module.log(name, value, prog_bar=True, logger=False, rank_zero_only=True, batch_size=1)


def _logs_now(trainer: Any, steps: int) -> bool:
    """Whether this step's metrics reach the loggers (Lightning's cadence) or end an epoch or the run."""
    every = max(1, int(getattr(trainer, "log_every_n_steps", 1) or 1))
    max_steps = getattr(trainer, "max_steps", -1)
    return (
        steps % every == 0
        or bool(getattr(trainer, "is_last_batch", False))
        or (max_steps is not None and max_steps > 0 and steps >= max_steps)
    )


def dense_dtype_of(params: Sequence[torch.Tensor]) -> torch.dtype:
    """The dtype of a dense message for these parameters (they must agree)."""
    dtypes = {p.dtype for p in params}
    if len(dtypes) != 1:
        raise ValueError(
            f"model: trainable parameters have mixed dtypes {sorted(map(str, dtypes))}; lit_commeff strategies "
            "communicate one flat vector, so cast the model to one dtype (e.g. model.float())."
        )
    return dtypes.pop()
