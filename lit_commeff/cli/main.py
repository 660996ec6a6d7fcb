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
from typing import Any, cast

import hydra
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from lit_commeff.cli import schema
from lit_commeff.cli.launch import LaunchError, external_rank, launch_local, launched_externally
from lit_commeff.cli.validate import ConfigError, check_resume, explain_hydra_error, validate
from lit_commeff.cli.worker import CONFIG_FILE, RUN_ID_FILE, checkpoint_dir, train
from lit_commeff.strategy.metering import WIRE_VS_DDP, times, vs_ddp_key
from lit_commeff.tracking.history import HISTORY_FILE, SUMMARY_FILE, plot_metric_vs_bytes, read_history
from lit_commeff.tracking.mlflow_run import finish_run, flatten, git_commit, start_run, ui_command

schema.register()
PLOT_FILE = "metric_vs_uplink.png"
#: Hydra's switch for raising its errors rather than printing them and exiting with 1.
_FULL_ERROR = "HYDRA_FULL_ERROR"
#: What Hydra writes in a sweep's folder before its jobs run.
_SWEEP_FILE = "multirun.yaml"


def _tags(cfg: DictConfig, choices: dict[str, Any], world: int) -> dict[str, str]:
    accelerator = str(cfg.trainer.accelerator)
    tags = {
        "lit_commeff.algorithm": str(choices.get("strategy")),
        "lit_commeff.compressor": str(choices.get("compressor") or "default"),
        "lit_commeff.recipe": str(cfg.recipe.get("name", choices.get("recipe"))),
        "lit_commeff.world_size": str(world),
        "lit_commeff.backend": "nccl" if accelerator in ("gpu", "cuda") else "gloo",
    }
    commit = git_commit(Path(hydra.utils.get_original_cwd()))
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _artifact_location(tracking_uri: str, cwd: Path) -> str | None:
    return (cwd / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite:") else None


def _report(cfg: DictConfig, run_dir: Path, monitor: str, run_id: str) -> list[Path]:
    """Plot the metric against uplink bytes, print a summary (wire bytes against DDP's); return the artifact paths."""
    history = read_history(run_dir / HISTORY_FILE)
    summary_path = run_dir / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    label = f"{cfg.recipe.get('name')} / {HydraConfig.get().runtime.choices.get('strategy')}"
    plot = plot_metric_vs_bytes(
        {label: [(r["uplink_bytes"], r["value"]) for r in history]}, metric=monitor, out=run_dir / PLOT_FILE
    )
    table = Table(title=f"lit-commeff run {run_id}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column("dense DDP, same steps", justify="right")
    table.add_column("x DDP", justify="right")
    if history:
        table.add_row(f"final {monitor}", f"{history[-1]['value']:.4f}" if history[-1]["value"] is not None else "-")
    for key, (label_, ddp_key) in WIRE_VS_DDP.items():
        if key in summary:
            r = summary[vs_ddp_key(key)]
            more = " MORE" if r > 1 else ""
            table.add_row(
                f"{label_} (MB)", f"{summary[key] / 1e6:,.3f}", f"{summary[ddp_key] / 1e6:,.3f}", times(r) + more
            )
    if "steps" in summary:
        table.add_row("steps", f"{summary['steps']:,}", f"{summary['steps']:,}", "")
    Console().print(table)
    if "vs_ddp" in summary:
        Console().print(summary["vs_ddp"], highlight=False)
    return [run_dir / CONFIG_FILE, summary_path, plot, run_dir / HISTORY_FILE]


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


@hydra.main(version_base=None, config_path="pkg://lit_commeff.conf", config_name="config")
def _job(cfg: DictConfig) -> None:
    """Hydra task function of ``lit-commeff`` (one job)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    cwd = Path(hydra.utils.get_original_cwd())
    choices = dict(hc.runtime.choices)
    resolved = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)))  # created from a dict
    external = launched_externally()
    is_rank0 = not external or external_rank() == 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            plan = validate(resolved, strategy_choice=str(choices.get("strategy")))
        check_resume(resolved, checkpoint_dir(resolved, run_dir))
    except ConfigError as err:
        print(f"lit-commeff: error: {err}", file=sys.stderr)
        _discard(run_dir, cwd)
        sweep = _sweep_dir()
        if sweep is not None:
            _discard(sweep, cwd)
        raise SystemExit(2) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(resolved, run_dir / CONFIG_FILE)
    tracking_uri = str(resolved.logger.tracking_uri)
    run_id = None
    if is_rank0:
        run_name = resolved.logger.run_name or (
            f"{resolved.recipe.get('name')}-{choices.get('strategy')}-{choices.get('compressor') or 'default'}"
            f"-s{resolved.seed}"
        )
        run_id = start_run(
            tracking_uri=tracking_uri,
            experiment=str(resolved.logger.experiment),
            run_name=run_name,
            params=flatten(cast(dict[str, Any], OmegaConf.to_container(resolved))),
            tags=_tags(resolved, choices, plan.world_size),
            artifact_location=_artifact_location(tracking_uri, cwd),
        )
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
            artifacts = [run_dir / CONFIG_FILE]
            summary = None
            if status == "FINISHED":
                monitor = getattr(plan.datamodule, "monitor", "val/loss")
                artifacts = _report(resolved, run_dir, monitor, run_id)
                path = run_dir / SUMMARY_FILE
                summary = json.loads(path.read_text()) if path.exists() else None
            finish_run(tracking_uri=tracking_uri, run_id=run_id, artifacts=artifacts, status=status, summary=summary)
            print(f"MLflow run {run_id} ({status}) in {tracking_uri}; review it with:\n  {ui_command(tracking_uri)}")


def main() -> None:
    """Entry point of ``lit-commeff``: the Hydra application, with Hydra's composition errors as one line.

    An unknown group option, a key that is not in the config or a value of the wrong type is reported as
    ``lit-commeff: error: <key>: <what is wrong>; <fix>`` with exit code 2 (nothing is written), like the
    errors :func:`~lit_commeff.cli.validate.validate` finds. ``HYDRA_FULL_ERROR=1`` keeps Hydra's own report.
    """
    if os.environ.get(_FULL_ERROR):
        _job()
        return
    os.environ[_FULL_ERROR] = "1"  # Hydra raises its errors instead of printing them and exiting with 1
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
