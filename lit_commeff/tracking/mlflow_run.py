"""MLflow runs of lit-commeff: created by the launching process, filled by rank 0, closed with artifacts.

The run is created before any training process starts (so its id can be handed to rank 0 and a crash
still leaves a FAILED run to look at), with the flattened resolved config as params (values of keys
that look like credentials masked) and tags for the algorithm, compressor, world size, backend and git
commit. Rank 0 logs metrics through Lightning's ``MLFlowLogger`` attached to the same run id.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

#: Key fragments whose values are never logged (tokens, passwords, keys in a config).
_SECRET = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential|private[_-]?key|auth)", re.IGNORECASE)
MASK = "********"
_MAX_PARAM = 6000  # MLflow's limit on a param value

#: Keys of the strategy's ``comm_summary()`` logged as ``final/<key>`` when the run ends: the handed bytes,
#: the wire bytes of a worker and of the hub, dense DDP's wire bytes for the same steps and the ratios.
FINAL_METRICS = (
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


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as their string form."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def mask_secrets(params: Mapping[str, Any]) -> dict[str, Any]:
    """Replace the values of keys that look like credentials (password, token, api_key, …) by a mask."""
    return {k: (MASK if _SECRET.search(k.rsplit(".", 1)[-1]) and v not in (None, "") else v) for k, v in params.items()}


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (None outside a repository or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def start_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    artifact_location: str | None = None,
) -> str:
    """Create the MLflow run with params and tags; returns its id.

    ``artifact_location`` is used when the experiment is created (e.g. ``file:///.../mlartifacts`` next
    to a SQLite store, instead of MLflow's default relative to the current directory).
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id
        if found is not None
        else client.create_experiment(experiment, artifact_location=artifact_location)
    )
    run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags))
    items = [Param(k, str(v)[:_MAX_PARAM]) for k, v in mask_secrets(params).items()]
    for i in range(0, len(items), 100):  # MLflow's batch limit
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def finish_run(
    *, tracking_uri: str, run_id: str, artifacts: list[Path], status: str = "FINISHED", summary: Mapping | None = None
) -> None:
    """Log artifacts (and final summary metrics) and mark the run finished or failed.

    ``summary`` is the strategy's ``comm_summary()``: its :data:`FINAL_METRICS` become ``final/*`` metrics,
    and its verdict against DDP the tags ``lit_commeff.more_than_ddp`` (the quantities above DDP's, or
    ``none``) and ``lit_commeff.vs_ddp`` (one sentence).
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    for path in artifacts:
        if Path(path).exists():
            client.log_artifact(run_id, str(path))
    if summary:
        for key in FINAL_METRICS:
            value = summary.get(key)
            if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
                client.log_metric(run_id, f"final/{key}", float(value))
        if isinstance(summary.get("vs_ddp"), str):
            more = summary.get("more_than_ddp") or []
            client.set_tag(run_id, "lit_commeff.more_than_ddp", ", ".join(more) if more else "none")
            client.set_tag(run_id, "lit_commeff.vs_ddp", summary["vs_ddp"])
    client.set_terminated(run_id, status=status)


def ui_command(tracking_uri: str, port: int = 5000) -> str:
    """The command that opens the MLflow UI on this store, bound to 127.0.0.1."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} (the tracking server's own UI)"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)} --host 127.0.0.1 --port {port}"
