"""Plain names for the paper's counters and the ``comm/*`` metrics, and the run description built from them.

The metrics keep their short keys (``comm/cc3``, ``final/wire_up_vs_ddp``); :data:`METRICS` says what each
one is, in words a user reads on the MLflow run page (the run description, :func:`run_description`) and in
``docs/mlflow.md``. Bytes are per worker unless the name says hub.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Metric key (without the ``comm/`` or ``final/`` prefix) -> (plain name, what it is).
METRICS: dict[str, tuple[str, str]] = {
    "uplink_bytes": (
        "uplink handed (paper's count)",
        "bytes the busiest worker handed to gathers and all-reduces, cumulative",
    ),
    "uplink_bytes_step": ("uplink handed this step", "increase of the handed uplink bytes in the last step"),
    "downlink_bytes": ("downlink handed", "bytes the busiest worker received from the hub, cumulative"),
    "downlink_bytes_step": ("downlink handed this step", "increase of the handed downlink bytes in the last step"),
    "cc1": ("CC-1: communication rounds", "rounds with any collective so far (the paper's CC-1)"),
    "cc2": ("CC-2: worker messages", "worker-to-hub messages so far (the paper's CC-2)"),
    "cc3": (
        "CC-3: uplink in dense vectors",
        "sum over rounds of the most bytes one worker sent, in units of one dense gradient "
        "(a dense round costs 1, a RandK round K/d; the paper's CC-3)",
    ),
    "gamma": (
        "compression power γ",
        "dense-equivalent bytes over bytes actually sent per sending step (1 = dense; 10 = a tenth)",
    ),
    "delta_hat": ("similarity estimate δ̂", "the method's running estimate of the Hessian similarity δ (NaN if none)"),
    "comm_time_s": ("time in collectives (s)", "wall seconds rank 0 spent inside collectives"),
    "wire_up_bytes": (
        "uplink per worker on the wire",
        "bytes the busiest worker's link sent (ring all-reduce: 2(M-1)/M of its message; star: one hop)",
    ),
    "wire_down_bytes": ("downlink per worker on the wire", "bytes the busiest worker's link received"),
    "wire_total_bytes": ("total per worker on the wire", "uplink + downlink of the busiest worker's link"),
    "hub_egress_bytes": ("hub egress", "bytes the hub's (rank 0's) link sent: one copy per worker"),
    "hub_ingress_bytes": ("hub ingress", "bytes the hub's (rank 0's) link received"),
    "wire_up_vs_ddp": ("uplink × DDP", "wire uplink over dense DDP's for the same steps (above 1: more than DDP)"),
    "wire_down_vs_ddp": ("downlink × DDP", "wire downlink over dense DDP's for the same steps"),
    "wire_total_vs_ddp": ("total × DDP", "wire total over dense DDP's for the same steps"),
    "hub_egress_vs_ddp": ("hub egress × DDP", "hub egress over a dense DDP rank's sent bytes"),
    "hub_ingress_vs_ddp": ("hub ingress × DDP", "hub ingress over a dense DDP rank's received bytes"),
    "worker_uplink_bytes": ("uplink handed (paper's count)", "final handed uplink bytes of the busiest worker"),
    "worker_downlink_bytes": ("downlink handed", "final handed downlink bytes of the busiest worker"),
    "uplink_reduction": ("uplink reduction", "dense DDP's handed bytes over this run's (higher is better)"),
    "worker_wire_up_bytes": ("uplink per worker on the wire", "final wire uplink bytes of the busiest worker"),
    "worker_wire_down_bytes": ("downlink per worker on the wire", "final wire downlink bytes of the busiest worker"),
    "worker_wire_total_bytes": ("total per worker on the wire", "final wire total bytes of the busiest worker"),
    "ddp_wire_up_bytes": ("dense DDP uplink", "what dense DDP's ring all-reduce sends per rank for the same steps"),
    "ddp_wire_down_bytes": ("dense DDP downlink", "what dense DDP's ring all-reduce receives per rank"),
    "ddp_wire_total_bytes": ("dense DDP total", "dense DDP's sent + received bytes per rank"),
    "skipped_rounds": ("skipped rounds", "rounds undone because of a NaN/Inf (nonfinite=skip)"),
}

#: Keys logged every logged step as ``comm/<key>`` (the others only at the end, as ``final/<key>``).
STEP_KEYS = (
    "uplink_bytes",
    "uplink_bytes_step",
    "downlink_bytes",
    "downlink_bytes_step",
    "cc1",
    "cc3",
    "gamma",
    "delta_hat",
    "comm_time_s",
    "wire_up_bytes",
    "wire_down_bytes",
    "wire_total_bytes",
    "hub_egress_bytes",
    "hub_ingress_bytes",
    "wire_up_vs_ddp",
    "wire_down_vs_ddp",
    "wire_total_vs_ddp",
    "skipped_rounds",
)
#: Keys of the strategy's summary logged once at the end as ``final/<key>`` (``mlflow_run.FINAL_METRICS``).
FINAL_KEYS = (
    "worker_uplink_bytes",
    "worker_downlink_bytes",
    "cc1",
    "cc3",
    "uplink_reduction",
    "worker_wire_up_bytes",
    "worker_wire_down_bytes",
    "worker_wire_total_bytes",
    "hub_egress_bytes",
    "hub_ingress_bytes",
    "ddp_wire_up_bytes",
    "ddp_wire_down_bytes",
    "ddp_wire_total_bytes",
    "wire_up_vs_ddp",
    "wire_down_vs_ddp",
    "wire_total_vs_ddp",
    "hub_egress_vs_ddp",
    "hub_ingress_vs_ddp",
)

#: Settings a user looks up by the paper's letter: param key -> (letter, meaning).
SETTINGS: dict[str, tuple[str, str]] = {
    "strategy.p": ("p", "probability of ending an inner epoch after each compressed round"),
    "strategy.theta": ("θ", "the hub's prox step"),
    "strategy.inner_steps": ("S", "optimizer steps of the hub per prox solve (DiLoCo: local steps H)"),
    "strategy.local_steps": ("H", "training steps per inner round"),
    "strategy.tau": ("τ", "momentum weight"),
    "strategy.alpha": ("α", "z step"),
    "strategy.mu": ("μ", "momentum (z) step's strong convexity"),
    "compressor.name": ("C", "the compressor workers send with"),
    "compressor.ratio": ("K/d", "fraction of coordinates sent"),
    "compressor.k": ("K", "coordinates sent per message"),
    "model.parameters": ("d", "trainable parameters"),
}


def describe(metric: str) -> str:
    """``"<plain name>: <what it is>"`` of a metric key (``comm/cc3``, ``final/cc3``, ``cc3``); else the key."""
    key = metric.split("/", 1)[1] if "/" in metric else metric
    if key not in METRICS:
        return metric
    name, what = METRICS[key]
    return f"{name}: {what}"


def mb(value: float | None) -> str:
    """Bytes as ``1.234 MB`` (``-`` for none)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value / 1e6:,.3f} MB"


def run_description(
    *,
    title: str,
    settings: Mapping[str, Any],
    summary: Mapping[str, Any] | None = None,
    final: tuple[str, float | None] | None = None,
) -> str:
    """The markdown description of a run (its MLflow note): what ran, the settings in force, the counters in words.

    Args:
        title: One line: recipe, method, compressor, world size.
        settings: Params of the run (resolved); those in :data:`SETTINGS` are listed with their letter.
        summary: The strategy's ``comm_summary()`` at the end, if the run finished.
        final: ``(monitor, value)`` of the last validation.
    """
    lines = [f"**{title}**", ""]
    known = [(key, *SETTINGS[key]) for key in SETTINGS if key in settings]
    if known:
        lines += ["| setting | value | meaning |", "|---|---|---|"]
        lines += [f"| {letter} (`{key}`) | {_value(settings[key])} | {meaning} |" for key, letter, meaning in known]
        lines.append("")
    if final is not None and final[1] is not None:
        lines += [f"Final {final[0]}: **{final[1]:.4f}**", ""]
    if summary:
        rows = [
            ("uplink per worker", "worker_wire_up_bytes", "ddp_wire_up_bytes", "wire_up_vs_ddp"),
            ("downlink per worker", "worker_wire_down_bytes", "ddp_wire_down_bytes", "wire_down_vs_ddp"),
            ("total per worker", "worker_wire_total_bytes", "ddp_wire_total_bytes", "wire_total_vs_ddp"),
            ("hub egress", "hub_egress_bytes", "ddp_wire_up_bytes", "hub_egress_vs_ddp"),
            ("hub ingress", "hub_ingress_bytes", "ddp_wire_down_bytes", "hub_ingress_vs_ddp"),
        ]
        lines += ["| traffic (wire) | this run | dense DDP, same steps | × DDP |", "|---|---|---|---|"]
        for label, key, ddp_key, ratio_key in rows:
            if key in summary:
                r = summary.get(ratio_key)
                ratio = f"{r:.2f}×" + (" MORE" if r > 1 else "") if isinstance(r, int | float) else "-"
                lines.append(f"| {label} | {mb(summary[key])} | {mb(summary.get(ddp_key))} | {ratio} |")
        if isinstance(summary.get("vs_ddp"), str):
            lines += ["", str(summary["vs_ddp"])]
        lines.append("")
    lines += ["Metrics (`comm/*` every logged step, `final/*` at the end; bytes per worker):", ""]
    lines += [f"- {', '.join(f'`{n}`' for n in names)}: {name}: {what}" for names, name, what in metric_rows()]
    return "\n".join(lines)


def metric_rows() -> list[tuple[list[str], str, str]]:
    """``([metric names], plain name, what it is)`` for every metric a run logs (``comm/*``, ``final/*``)."""
    rows = []
    for key, (name, what) in METRICS.items():
        names = [f"{prefix}/{key}" for prefix, keys in (("comm", STEP_KEYS), ("final", FINAL_KEYS)) if key in keys]
        if names:
            rows.append((names, name, what))
    return rows


def _value(value: Any) -> str:
    """A setting for the description: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def metrics_table() -> str:
    """The markdown table of every logged metric's plain name (``docs/mlflow.md`` holds it verbatim)."""
    lines = ["| metric | plain name | what it is |", "|---|---|---|"]
    lines += [f"| {', '.join(f'`{n}`' for n in names)} | {name} | {what} |" for names, name, what in metric_rows()]
    return "\n".join(lines)


def settings_table() -> str:
    """The markdown table of the settings named by the paper's letters (``docs/mlflow.md`` holds it verbatim)."""
    lines = ["| param | letter | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {letter} | {meaning} |" for key, (letter, meaning) in SETTINGS.items()]
    return "\n".join(lines)
