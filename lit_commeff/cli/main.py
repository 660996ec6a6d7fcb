"""``lit-commeff``: train a recipe with a strategy, tracked in MLflow. A Hydra application (``-m`` sweeps).

    lit-commeff                                             # finance_credit, OLGA, 2 CPU processes, local MLflow
    lit-commeff strategy=ef_olga compressor=topk compressor.ratio=0.05 trainer=cpu4
    lit-commeff -m strategy=ddp,powersgd,diloco,olga,ef_olga      # a sweep: one MLflow run per job
    torchrun --nnodes 2 --nproc-per-node 4 ... -m lit_commeff trainer=multinode trainer.devices=4

For each job: the config is composed and checked (objects built once, data checked) before any
training process starts; an MLflow run is created with the flattened config as params; the ranks are
started (or, under torchrun/SLURM, this process is one of them); at the end the run gets the resolved
config, the ledger summary and a metric-vs-bytes plot as artifacts, and the command to open the
MLflow UI is printed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, NoReturn, cast

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from lit_commeff.cli import schema
from lit_commeff.cli.launch import LaunchError, external_rank, launch_local, launched_externally
from lit_commeff.cli.validate import ConfigError, check_resume, explain_hydra_error, validate
from lit_commeff.cli.worker import CONFIG_FILE, RUN_ID_FILE, checkpoint_dir, train
from lit_commeff.strategy.metering import WIRE_VS_DDP, times, vs_ddp_key
from lit_commeff.tracking.glossary import run_description
from lit_commeff.tracking.history import (
    HISTORY_FILE,
    SETTINGS_FILE,
    SUMMARY_FILE,
    dedupe_history,
    plot_metric_vs_bytes,
    read_history,
    write_history,
)
from lit_commeff.tracking.mlflow_run import (
    config_hash,
    continue_run,
    finish_run,
    git_commit,
    recall_run,
    remember_run,
    run_params,
    set_description,
    start_run,
    ui_command,
    unique_run_name,
)
from lit_commeff.tracking.quiet import child_warnings_env, info_silenced, quiet_third_party

schema.register()
PLOT_FILE = "metric_vs_uplink.png"
#: Hydra's switch for raising its errors rather than printing them and exiting with 1.
_FULL_ERROR = "HYDRA_FULL_ERROR"
#: What Hydra writes in a sweep's folder before its jobs run.
_SWEEP_FILE = "multirun.yaml"


def _compressor_name(plan: Any, choices: dict[str, Any]) -> str:
    """The compressor the workers send with: the built one's name (the method's default resolved), else none."""
    built = getattr(plan.strategy, "compressor", None)
    if built is not None:
        return str(getattr(built, "name", type(built).__name__))
    return str(choices.get("compressor") or "none")


def _dataset(cfg: DictConfig) -> str:
    """The data set a run trains on, for grouping runs: the file's name, or ``synthetic`` with its size."""
    data = cfg.recipe.get("data") or {}
    path = data.get("path")
    if path:
        return Path(str(path)).name
    size = {k: data.get(k) for k in ("synthetic_rows", "synthetic_traces", "synthetic_length") if data.get(k)}
    return "synthetic" + ("(" + ", ".join(f"{k.removeprefix('synthetic_')}={v}" for k, v in size.items()) + ")")


def _tags(cfg: DictConfig, choices: dict[str, Any], world: int, compressor: str) -> dict[str, str]:
    accelerator = str(cfg.trainer.accelerator)
    tags = {
        "lit_commeff.algorithm": str(choices.get("strategy")),
        "lit_commeff.compressor": compressor,
        "lit_commeff.recipe": str(cfg.recipe.get("name", choices.get("recipe"))),
        "lit_commeff.dataset": _dataset(cfg),
        "lit_commeff.config_hash": config_hash(cast(dict[str, Any], OmegaConf.to_container(cfg)), length=12),
        "lit_commeff.world_size": str(world),
        "lit_commeff.backend": "nccl" if accelerator in ("gpu", "cuda") else "gloo",
    }
    commit = git_commit(Path(hydra.utils.get_original_cwd()))
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _resume_dir(cfg: DictConfig, checkpoints: Path) -> Path | None:
    """The checkpoint folder a resumed run reads (``ckpt_path=last``: the run's; a file: its folder); else None."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    return checkpoints if str(ckpt) == "last" else Path(str(ckpt)).parent


def _title(cfg: DictConfig, choices: dict[str, Any], world: int, compressor: str) -> str:
    return (
        f"{cfg.recipe.get('name')} ({_dataset(cfg)}) trained with {choices.get('strategy')}, compressor {compressor}, "
        f"on {world} processes, seed {cfg.seed}"
    )


def _artifact_location(tracking_uri: str, cwd: Path) -> str | None:
    return (cwd / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite:") else None


def _report(cfg: DictConfig, run_dir: Path, monitor: str, run_id: str) -> list[Path]:
    """Plot the metric against uplink and total bytes, print the run's result in MB; return the artifact paths.

    Rank 0 has already printed the strategy's full traffic table; this adds the run's name and metric and
    repeats only the total against DDP's.
    """
    history = read_history(run_dir / HISTORY_FILE)
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    label = f"{cfg.recipe.get('name')} / {HydraConfig.get().runtime.choices.get('strategy')}"
    plot = plot_metric_vs_bytes({label: history}, metric=monitor, out=run_dir / PLOT_FILE)
    name = cfg.logger.run_name or _run_name(cfg.logger.tracking_uri, run_id)
    table = Table(title=f"lit-commeff run {name} ({run_id})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("dense DDP, same steps", justify="right")
    table.add_column("x DDP", justify="right")
    if history:
        table.add_row(f"final {monitor}", f"{history[-1]['value']:.4f}" if history[-1]["value"] is not None else "-")
    for key, (label_, ddp_key) in WIRE_VS_DDP.items():
        if key in summary and key.startswith("worker_"):
            r = summary[vs_ddp_key(key)]
            more = " MORE" if r > 1 else ""
            table.add_row(label_, f"{summary[key] / 1e6:,.3f} MB", f"{summary[ddp_key] / 1e6:,.3f} MB", times(r) + more)
    if "steps" in summary:
        table.add_row("steps", f"{summary['steps']:,}", f"{summary['steps']:,}", "")
    Console().print(table)
    return [run_dir / CONFIG_FILE, summary_path, plot, run_dir / HISTORY_FILE, run_dir / SETTINGS_FILE]


def _run_name(tracking_uri: str, run_id: str) -> str:
    try:
        return str(MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.run_name)
    except Exception:  # the store unreachable at the end: the id alone names the run
        return "?"


def _discard(folder: Path, cwd: Path) -> None:
    """Remove the folder Hydra made for a rejected config, and its parents below ``cwd`` left with nothing of theirs.

    Only while it holds nothing but Hydra's own files (``.hydra/``, the job's log, a sweep's ``multirun.yaml``):
    a rejected config writes nothing.
    """

    def hydras_only(path: Path) -> bool:
        return all(p.name in (".hydra", _SWEEP_FILE) or p.suffix == ".log" for p in path.iterdir())

    if not folder.is_dir() or not hydras_only(folder):
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:
        if parent == cwd or cwd not in parent.parents or not parent.is_dir() or not hydras_only(parent):
            break
        shutil.rmtree(parent, ignore_errors=True)


def _sweep_dir() -> Path | None:
    """The folder of the ``-m`` sweep being run (Hydra made it, with ``multirun.yaml``, before any job); else None."""
    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    return Path(str(hc.sweep.dir)) if hc.mode == RunMode.MULTIRUN else None


def _reject(err: ConfigError, run_dir: Path, cwd: Path) -> NoReturn:
    """One ``lit-commeff: error:`` line, nothing left behind (the job's and the sweep's folders), exit code 2."""
    print(f"lit-commeff: error: {err}", file=sys.stderr)
    _discard(run_dir, cwd)
    sweep = _sweep_dir()
    if sweep is not None:
        _discard(sweep, cwd)
    raise SystemExit(2)


def _unresolved(cfg: DictConfig, err: OmegaConfBaseException) -> str:
    """The key whose own interpolation does not resolve, what OmegaConf said, and the fix.

    Keys that fail only because they refer to a failing key (``recipe.data.seed: ${seed}``) are passed over
    for the key they refer to (``seed``).
    """
    failing: dict[str, tuple[str, str]] = {}  # path -> (its raw value, OmegaConf's first line)

    def walk(node: Any, prefix: str) -> None:
        keys = [str(k) for k in node] if isinstance(node, DictConfig) else list(range(len(node)))
        for key in keys:
            path = f"{prefix}{key}"
            if OmegaConf.is_interpolation(node, key):
                try:
                    node[key]
                except OmegaConfBaseException as inner:
                    failing[path] = (str(node._get_node(key)._value()), str(inner).splitlines()[0])
            elif OmegaConf.is_config(node._get_node(key)):
                walk(node[key], f"{path}.")

    try:
        walk(cfg, "")
    except OmegaConfBaseException:  # a node that cannot even be walked: report OmegaConf's own key
        failing.clear()
    roots = [p for p, (raw, _) in failing.items() if not any("${" + q in raw for q in failing if q != p)]
    if roots or failing:
        key = min(roots or failing, key=lambda path: (path.count("."), path))
        cause = failing[key][1]
    else:
        key = str(getattr(err, "full_key", None) or "config")
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (
        f"{key}: its value does not resolve ({cause}); give a plain value, or an interpolation of a key that "
        "exists (e.g. ${seed})."
    )


@hydra.main(version_base=None, config_path="pkg://lit_commeff.conf", config_name="config")
def _job(cfg: DictConfig) -> None:
    """Hydra task function of ``lit-commeff`` (one job)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    cwd = Path(hydra.utils.get_original_cwd())
    choices = dict(hc.runtime.choices)
    try:
        resolved = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))  # from a dict
    except OmegaConfBaseException as err:  # an interpolation that does not resolve (seed='${oops}')
        _reject(ConfigError(_unresolved(cfg, err)), run_dir, cwd)
    external = launched_externally()
    is_rank0 = not external or external_rank() == 0
    checkpoints = checkpoint_dir(resolved, run_dir)
    try:
        # the checks build a Trainer: its information lines would repeat the ones rank 0 prints; warnings stay
        with warnings.catch_warnings(), info_silenced():
            warnings.simplefilter("always")
            plan = validate(resolved, strategy_choice=str(choices.get("strategy")))
        check_resume(resolved, checkpoints)
    except ConfigError as err:
        _reject(err, run_dir, cwd)
    config = cast(dict[str, Any], OmegaConf.to_container(resolved))
    params = run_params(config)
    # The run's params are the config's (above) and the settings resolved at setup (CommHistory logs them):
    # Lightning's own logging of the model's hyper-parameters would log them a second time, unprefixed.
    resolved.trainer.enable_autolog_hparams = False
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(resolved, run_dir / CONFIG_FILE)
    tracking_uri = str(resolved.logger.tracking_uri)
    experiment = str(resolved.logger.experiment)
    compressor = _compressor_name(plan, choices)
    title = _title(resolved, choices, plan.world_size, compressor)
    run_id = None
    if is_rank0:
        tags = _tags(resolved, choices, plan.world_size, compressor)
        resume_dir = _resume_dir(resolved, checkpoints)
        previous = recall_run(resume_dir, tracking_uri=tracking_uri, experiment=experiment) if resume_dir else None
        if previous is not None:  # ckpt_path=last: the same MLflow run goes on (same id, metrics appended)
            run_id = continue_run(tracking_uri=tracking_uri, run_id=previous["run_id"], params=params, tags=tags)
            _carry_history(Path(previous.get("run_dir", "")), run_dir)
        else:
            base = f"{resolved.recipe.get('name')}-{choices.get('strategy')}-{compressor}-s{resolved.seed}"
            params["logger.run_name"] = resolved.logger.run_name or unique_run_name(base, config)
            run_id = start_run(
                tracking_uri=tracking_uri,
                experiment=experiment,
                run_name=str(params["logger.run_name"]),
                params=params,
                tags=tags,
                artifact_location=_artifact_location(tracking_uri, cwd),
            )
            set_description(tracking_uri, run_id, run_description(title=title, settings=params))
        remember_run(checkpoints, tracking_uri=tracking_uri, experiment=experiment, run_id=run_id, run_dir=run_dir)
        (run_dir / RUN_ID_FILE).write_text(run_id)
    status = "FAILED"
    try:
        if external:
            train(resolved, run_dir, run_id)
        else:
            launch_local(run_dir, plan.world_size)
        status = "FINISHED"
    except LaunchError as err:
        print(f"lit-commeff: error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if is_rank0 and run_id is not None:
            _close(resolved, plan, run_dir, run_id, status, title, params)


def _carry_history(previous_dir: Path, run_dir: Path) -> None:
    """Start this output folder's history with the continued run's (so the run's curve covers both parts)."""
    records = read_history(previous_dir / HISTORY_FILE) if previous_dir.name else []
    if records:
        write_history(run_dir / HISTORY_FILE, dedupe_history(records))


def _close(
    cfg: DictConfig, plan: Any, run_dir: Path, run_id: str, status: str, title: str, params: dict[str, Any]
) -> None:
    """End the MLflow run: artifacts, final metrics, the description with the results; print where it is."""
    tracking_uri = str(cfg.logger.tracking_uri)
    history_path = run_dir / HISTORY_FILE
    if history_path.exists():  # a resumed run re-does the steps after its checkpoint: the new records win
        write_history(history_path, dedupe_history(read_history(history_path)))
    artifacts = [run_dir / CONFIG_FILE, history_path]
    summary = None
    monitor = getattr(plan.datamodule, "monitor", "val/loss")
    if status == "FINISHED":
        artifacts = _report(cfg, run_dir, monitor, run_id)
        path = run_dir / SUMMARY_FILE
        summary = json.loads(path.read_text()) if path.exists() else None
    settings_path = run_dir / SETTINGS_FILE
    settings = {**params, **(json.loads(settings_path.read_text()) if settings_path.exists() else {})}
    history = read_history(history_path)
    final = (monitor, history[-1]["value"]) if history else None
    try:
        set_description(
            tracking_uri, run_id, run_description(title=title, settings=settings, summary=summary, final=final)
        )
    finally:
        finish_run(tracking_uri=tracking_uri, run_id=run_id, artifacts=artifacts, status=status, summary=summary)
    print(f"MLflow run {run_id} ({status}) in {tracking_uri}; review it with:\n  {ui_command(tracking_uri)}")


def main() -> None:
    """Entry point of ``lit-commeff``: the Hydra application, with Hydra's composition errors as one line.

    An unknown group option, a key that is not in the config or a value of the wrong type is reported as
    ``lit-commeff: error: <key>: <what is wrong>; <fix>`` with exit code 2 (nothing is written), like the
    errors :func:`~lit_commeff.cli.validate.validate` finds. ``HYDRA_FULL_ERROR=1`` keeps Hydra's own report.
    """
    if os.environ.get(_FULL_ERROR):
        quiet_third_party()
        os.environ["PYTHONWARNINGS"] = child_warnings_env()
        _job()
        return
    os.environ[_FULL_ERROR] = "1"  # Hydra raises its errors instead of printing them and exiting with 1
    quiet_third_party()
    os.environ["PYTHONWARNINGS"] = child_warnings_env()  # the ranks' processes drop the same foreign warnings
    sweeps = set(Path.cwd().glob(f"multirun/*/*/{_SWEEP_FILE}"))  # Hydra's default hydra.sweep.dir
    try:
        _job()
    except (ConfigCompositionException, OverrideParseException) as err:
        overrides = list(get_args_parser().parse_known_args()[0].overrides or [])
        print(f"lit-commeff: error: {explain_hydra_error(err, overrides)}", file=sys.stderr)
        for made in set(Path.cwd().glob(f"multirun/*/*/{_SWEEP_FILE}")) - sweeps:  # a sweep stopped at its first job
            _discard(made.parent, Path.cwd())
        raise SystemExit(2) from None
    except Exception as err:  # anything else: Hydra's usual report (the job's own frames) and exit code 1
        tb = err.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_name != "run_job":
            tb = tb.tb_next
        traceback.print_exception(type(err), err, tb.tb_next if tb is not None else err.__traceback__)
        print(f"\nSet the environment variable {_FULL_ERROR}=1 for a complete stack trace.", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        os.environ.pop(_FULL_ERROR, None)


if __name__ == "__main__":
    main()
