"""MLflow runs of lit-commeff: created by the launching process, filled by rank 0, closed with artifacts.

The run is created before any training process starts (so its id can be handed to rank 0 and a crash
still leaves a FAILED run to look at), with the flattened resolved config as params (values of keys
that look like credentials masked) and tags for the algorithm, compressor, world size, backend and git
commit. Rank 0 logs metrics through Lightning's ``MLFlowLogger`` attached to the same run id.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from lit_commeff.tracking.glossary import FINAL_KEYS

#: Key fragments whose values are never logged (tokens, passwords, keys in a config).
_SECRET = re.compile(r"(pass(word)?|secret|token|api[_-]?key|credential|private[_-]?key|auth)", re.IGNORECASE)
MASK = "********"
_MAX_PARAM = 6000  # MLflow's limit on a param value

#: Keys of the strategy's ``comm_summary()`` logged as ``final/<key>`` when the run ends: the handed bytes,
#: the wire bytes of a worker and of the hub, dense DDP's wire bytes for the same steps and the ratios
#: (their plain names: :data:`lit_commeff.tracking.glossary.METRICS`).
FINAL_METRICS = FINAL_KEYS


#: The file, next to a run's checkpoint folder (``<folder>.mlflow_run.json``), that names the MLflow run its
#: checkpoints belong to (not inside it: Lightning warns about a checkpoint folder that is not empty).
RUN_FILE_SUFFIX = ".mlflow_run.json"
#: The MLflow tag that holds a run's description (markdown, shown on the run page).
DESCRIPTION_TAG = "mlflow.note.content"
#: Keys that say how a run was invoked, not what it trains: left out of the config hash.
_INVOCATION_KEYS = (
    "logger",
    "ckpt_path",
    "resume_missing_ok",
    "checkpoint_dir",
    "checkpoint_every_n_steps",
    "timeout_s",
)
_INVOCATION_TRAINER_KEYS = ("enable_progress_bar",)


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


def run_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """The params of a run from its resolved config: flattened, each setting once, no ``None``.

    ``None`` stands for "the default" or "off": defaults are logged with their value once the run resolves
    them (:mod:`lit_commeff.tracking.settings`), and a setting that is off is absent. The strategy's copy of
    the top-level compressor (``strategy.compressor: ${compressor}``) is left out, as is ``recipe.data.path``
    when it is ``None`` and replaced by ``recipe.data.source: synthetic``.
    """
    params = {k: v for k, v in flatten(config).items() if v is not None}
    strategy = config.get("strategy")
    if isinstance(strategy, Mapping) and strategy.get("compressor") == config.get("compressor"):
        params = {k: v for k, v in params.items() if not k.startswith("strategy.compressor.")}
    recipe = config.get("recipe")
    data = recipe.get("data") if isinstance(recipe, Mapping) else None
    if isinstance(data, Mapping) and "path" in data:
        params["recipe.data.source"] = "synthetic" if data.get("path") is None else "file"
    return params


def config_hash(config: Mapping[str, Any], length: int = 6) -> str:
    """A short hash of what a config trains (recipe, strategy, compressor, trainer, seed), not how it is run.

    Logger, checkpoint and resume keys, the collective timeout and the progress bar are left out, so the same
    training under another experiment or resumed from a checkpoint has the same hash.
    """
    kept = {k: v for k, v in config.items() if k not in _INVOCATION_KEYS}
    trainer = kept.get("trainer")
    if isinstance(trainer, Mapping):
        kept["trainer"] = {k: v for k, v in trainer.items() if k not in _INVOCATION_TRAINER_KEYS}
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def unique_run_name(base: str, config: Mapping[str, Any], now: float | None = None) -> str:
    """``<base>-<config hash>-<MMDD-HHMMSS>``: the same training gets the same hash, each start its own time."""
    stamp = time.strftime("%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{base}-{config_hash(config)}-{stamp}"


def log_new_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Log the params the run does not have yet; return ``{key: (logged, new)}`` for those it has with another value.

    MLflow params cannot change; a changed value (a run continued with another setting) is recorded in the
    tag ``lit_commeff.resume_changes`` instead (one ``key: old -> new`` per line, appended).
    """
    existing = dict(client.get_run(run_id).data.params)
    values = {k: str(v)[:_MAX_PARAM] for k, v in mask_secrets(params).items()}
    new = [Param(k, v) for k, v in values.items() if k not in existing]
    for i in range(0, len(new), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=new[i : i + 100])
    changed = {k: (existing[k], v) for k, v in values.items() if k in existing and existing[k] != v}
    if changed:
        tags = client.get_run(run_id).data.tags
        lines = [tags["lit_commeff.resume_changes"]] if tags.get("lit_commeff.resume_changes") else []
        lines += [f"{k}: {old} -> {now}" for k, (old, now) in changed.items()]
        client.set_tag(run_id, "lit_commeff.resume_changes", "\n".join(lines))
    return changed


def run_file(directory: Path) -> Path:
    """Where :func:`remember_run` records a checkpoint folder's MLflow run: ``<folder>.mlflow_run.json`` beside it."""
    directory = Path(directory)
    return directory.with_name(directory.name + RUN_FILE_SUFFIX)


def remember_run(directory: Path, *, tracking_uri: str, experiment: str, run_id: str, run_dir: Path) -> None:
    """Record, beside a checkpoint folder, the MLflow run (and output folder) its checkpoints belong to."""
    path = run_file(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"tracking_uri": tracking_uri, "experiment": experiment, "run_id": run_id, "run_dir": str(run_dir)}
    path.write_text(json.dumps(record, indent=2))


def recall_run(directory: Path, *, tracking_uri: str, experiment: str) -> dict[str, Any] | None:
    """The run :func:`remember_run` recorded for a checkpoint folder, if in this store and experiment and not deleted.

    Returns the record (``run_id``, ``run_dir``, …) or ``None`` (no file, another store or experiment, a run
    deleted or gone): then a resumed training starts a new MLflow run.
    """
    path = run_file(directory)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("tracking_uri") != tracking_uri or record.get("experiment") != experiment:
        return None
    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(str(record["run_id"]))
    except Exception:  # gone from the store (or the store unreachable): start a new run
        return None
    return record if run.info.lifecycle_stage == "active" else None


def continue_run(*, tracking_uri: str, run_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
    """Reopen a run to continue it (``ckpt_path=last``): status RUNNING, new params logged, resumes counted.

    Metrics logged by the resumed training are appended to the same run's histories (by step).
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    client.update_run(run_id, status="RUNNING")
    log_new_params(client, run_id, params)
    resumes = int(client.get_run(run_id).data.tags.get("lit_commeff.resumes", "0")) + 1
    for key, value in {**tags, "lit_commeff.resumes": str(resumes)}.items():
        if key != "mlflow.runName":
            client.set_tag(run_id, key, value)
    return run_id


def set_description(tracking_uri: str, run_id: str, text: str) -> None:
    """Set the run's description (the markdown note on its MLflow page)."""
    MlflowClient(tracking_uri=tracking_uri).set_tag(run_id, DESCRIPTION_TAG, text)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The current git commit of ``cwd`` (None outside a repository or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


#: The experiment tag MLflow 3's UI reads to show an experiment as model training rather than GenAI.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


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
    if found is None or EXPERIMENT_KIND_TAG not in found.tags:
        # MLflow 3's UI files an experiment without a kind under GenAI ("Evaluation runs"); ours are training runs
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
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
