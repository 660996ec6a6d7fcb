"""Runs that explain themselves: resolved settings as params (no ``None``), unique names, a resumed run
continues its MLflow run, plain names for the counters, and no third-party noise on the console."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from _cli_utils import FAST
from mlflow.tracking import MlflowClient

from lit_commeff.options import OLGAOptions
from lit_commeff.strategy.metering import COMM_METRICS
from lit_commeff.tracking import glossary, quiet
from lit_commeff.tracking.mlflow_run import (
    DESCRIPTION_TAG,
    FINAL_METRICS,
    config_hash,
    continue_run,
    log_new_params,
    recall_run,
    remember_run,
    run_file,
    run_params,
    start_run,
    unique_run_name,
)
from lit_commeff.tracking.settings import effective_settings

CONFIG = {
    "recipe": {"name": "finance_credit", "data": {"path": None, "batch_size": 32}, "model": {"lr": 0.1, "x": None}},
    "strategy": {"_target_": "OLGA", "p": None, "theta": 1.0, "compressor": None, "compressor_options": None},
    "compressor": None,
    "trainer": {"max_steps": 6, "enable_progress_bar": False},
    "logger": {"experiment": "e", "run_name": None},
    "seed": 0,
    "ckpt_path": None,
}


# ----------------------------------------------------------------------------------- params and settings
def test_params_hold_each_setting_once_and_no_none():
    params = run_params(
        {**CONFIG, "compressor": {"ratio": 0.1}, "strategy": {**CONFIG["strategy"], "compressor": {"ratio": 0.1}}}
    )
    assert None not in params.values() and "strategy.p" not in params and "ckpt_path" not in params
    assert params["compressor.ratio"] == 0.1 and not any(k.startswith("strategy.compressor") for k in params)
    assert params["recipe.data.source"] == "synthetic" and params["strategy.theta"] == 1.0


class _Model(pl.LightningModule):
    def __init__(self, hidden: int = 4, pos_weight: float | None = None, num_numeric: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hparams["num_numeric"] = 7  # filled in from the data, as the recipes do
        self.net = torch.nn.Linear(10, hidden)


def test_effective_settings_resolve_the_defaults():
    options = OLGAOptions()  # compressor=None: RandK 10 %; p=None: 1/gamma; accelerate off: tau, alpha unused
    resolved = {"p": 0.25, "theta": 1.0, "tau": 0.5, "alpha": 0.1, "mu": 0.0, "omega_used": 9.0, "delta_hat": 0.3}
    strategy = SimpleNamespace(options=options, compressor=options.built_compressor, hyperparameters=lambda: resolved)
    settings = effective_settings(strategy, _Model())
    d = 10 * 4 + 4
    assert settings["model.parameters"] == d
    assert settings["compressor.name"] == "randk" and settings["compressor.ratio"] == 0.1
    assert settings["compressor.k"] == math.ceil(0.1 * d)
    assert settings["strategy.p"] == 0.25  # configured None: the resolved value
    assert "strategy.theta" not in settings  # configured 1.0: the config's param already says it
    assert "strategy.tau" not in settings and "strategy.alpha" not in settings  # unused without accelerate
    assert settings["strategy.resolved.omega_used"] == 9.0 and "strategy.delta_hat" not in settings
    assert settings["recipe.model.num_numeric"] == 7 and "recipe.model.pos_weight" not in settings
    assert None not in settings.values()


# ----------------------------------------------------------------------------------- names and resume
def test_run_names_are_unique_and_carry_a_hash_of_what_is_trained():
    other = {**CONFIG, "seed": 1}
    assert config_hash(CONFIG) == config_hash({**CONFIG, "logger": {"experiment": "x"}, "ckpt_path": "last"})
    assert config_hash(CONFIG) != config_hash(other)
    first, later = unique_run_name("b", CONFIG, now=0.0), unique_run_name("b", CONFIG, now=61.0)
    assert first != later and first.startswith(f"b-{config_hash(CONFIG)}-")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_changed_params_are_kept_and_noted(store):
    run_id = start_run(tracking_uri=store, experiment="changes", run_name="r", params={"a": 1, "b": 2}, tags={})
    client = MlflowClient(tracking_uri=store)
    changed = log_new_params(client, run_id, {"a": 1, "b": 3, "c": 4})
    run = client.get_run(run_id)
    assert changed == {"b": ("2", "3")} and run.data.params == {"a": "1", "b": "2", "c": "4"}
    assert run.data.tags["lit_commeff.resume_changes"] == "b: 2 -> 3"


def test_a_checkpoint_folder_remembers_its_run_and_a_resume_continues_it(store, tmp_path):
    folder = tmp_path / "ckpt"
    run_id = start_run(tracking_uri=store, experiment="e", run_name="r", params={"a": 1}, tags={})
    MlflowClient(tracking_uri=store).set_terminated(run_id, status="FAILED")
    remember_run(folder, tracking_uri=store, experiment="e", run_id=run_id, run_dir=tmp_path / "out")
    assert not folder.exists() and run_file(folder).exists()  # beside the folder: Lightning wants it empty
    assert recall_run(folder, tracking_uri=store, experiment="other") is None
    assert recall_run(tmp_path / "none", tracking_uri=store, experiment="e") is None
    record = recall_run(folder, tracking_uri=store, experiment="e")
    assert record is not None and record["run_id"] == run_id
    assert continue_run(tracking_uri=store, run_id=run_id, params={"a": 1, "ckpt_path": "last"}, tags={}) == run_id
    run = MlflowClient(tracking_uri=store).get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["lit_commeff.resumes"] == "1"
    assert run.data.params["ckpt_path"] == "last"
    MlflowClient(tracking_uri=store).delete_run(run_id)
    assert recall_run(folder, tracking_uri=store, experiment="e") is None  # a deleted run is not continued


# ----------------------------------------------------------------------------------- plain names
def test_every_logged_metric_has_a_plain_name():
    for name in [*COMM_METRICS, *(f"final/{k}" for k in FINAL_METRICS)]:
        assert glossary.describe(name) != name, name
    assert glossary.describe("comm/cc3").startswith("CC-3: uplink in dense vectors")


def test_the_description_names_the_settings_and_says_mb():
    summary = {"worker_wire_up_bytes": 94_304, "ddp_wire_up_bytes": 495_840, "wire_up_vs_ddp": 0.19, "vs_ddp": "ok."}
    text = glossary.run_description(
        title="t", settings={"strategy.p": 0.1000322, "compressor.k": 620}, summary=summary, final=("val/auroc", 0.75)
    )
    assert "| p (`strategy.p`) | 0.1 |" in text and "| K (`compressor.k`) | 620 |" in text
    assert "| uplink per worker | 0.094 MB | 0.496 MB | 0.19× |" in text and "94304" not in text
    assert "- `comm/cc3`, `final/cc3`: CC-3: uplink in dense vectors" in text


def test_docs_name_every_metric_and_setting_as_the_code_does():
    doc = (Path(__file__).parents[1] / "docs" / "mlflow.md").read_text()
    assert glossary.metrics_table() in doc and glossary.settings_table() in doc


# ----------------------------------------------------------------------------------- noise
def test_quiet_drops_third_party_noise_and_keeps_real_warnings(caplog):
    quiet.quiet_third_party()
    tip = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        tip.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        tip.info("GPU available: False, used: False")
        tip.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False", "a real warning"]
    with warnings.catch_warnings(record=True) as seen:
        quiet.quiet_third_party()  # after catch_warnings reset the filters
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("your learning rate is odd", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["your learning rate is odd"]
    env = quiet.child_warnings_env({"PYTHONWARNINGS": "ignore::DeprecationWarning"})
    assert env == "ignore::DeprecationWarning,ignore:`isinstance(treespec:FutureWarning"


def test_the_configuration_check_prints_no_information_lines(caplog):
    def device_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("GPU available")]

    caplog.set_level(logging.INFO)
    with quiet.info_silenced():
        pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    assert device_lines() == []
    pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)  # rank 0's, once
    assert device_lines() == ["GPU available: False, used: False"]


# ----------------------------------------------------------------------------------- end to end
def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.pop("PYTHONWARNINGS", None)  # the warnings a user sees
    cmd = [sys.executable, "-m", "lit_commeff.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two 2-rank CLI runs
def test_a_resumed_run_continues_its_mlflow_run_with_resolved_params(tmp_path):
    run = ["recipe.data.synthetic_rows=1200", "recipe.data.batch_size=32", *FAST, "checkpoint_every_n_steps=3"]
    first = _cli([*run, "logger.experiment=resume"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resume").experiment_id
    (before,) = client.search_runs([experiment])
    # the name says recipe, method, the compressor actually used, seed, config hash and start time
    assert before.info.run_name.startswith("finance_credit-olga-randk-s0-"), before.info.run_name
    params = before.data.params
    assert "None" not in params.values()
    assert params["compressor.name"] == "randk" and params["compressor.ratio"] == "0.1"
    assert int(params["compressor.k"]) == math.ceil(0.1 * int(params["model.parameters"]))
    assert 0 < float(params["strategy.p"]) <= 1 and params["strategy.inner_steps"] == "2"
    assert "lr" not in params and params["recipe.model.lr"] == "0.1"  # the model's hyper-parameters, once
    assert float(params["recipe.model.pos_weight"]) > 0
    note = before.data.tags[DESCRIPTION_TAG]
    assert "| p (`strategy.p`) |" in note and "uplink per worker" in note and " MB " in note
    # the console: the checks before launch repeat nothing, MLflow's and torch's notes are gone
    assert first.stderr.count("GPU available") == 1, first.stderr
    for noise in ("Creating initial MLflow database tables", "LeafSpec"):
        assert noise not in first.stderr, noise
    assert "Checkpoint directory" not in first.stderr  # the run's record is beside the folder, not in it

    resumed = _cli([*run, "logger.experiment=resume", "ckpt_path=last", "trainer.max_steps=9"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (after,) = client.search_runs([experiment])  # the same run, not a second one with the same name
    assert after.info.run_id == before.info.run_id and after.info.status == "FINISHED"
    assert after.info.run_name == before.info.run_name and after.data.tags["lit_commeff.resumes"] == "1"
    steps = sorted(m.step for m in client.get_metric_history(after.info.run_id, "train/loss"))
    assert steps == sorted(set(steps)) and min(steps) < 6 < max(steps)  # both parts' metrics in one run
    assert "trainer.max_steps: 6 -> 9" in after.data.tags["lit_commeff.resume_changes"]
    history = Path(client.download_artifacts(after.info.run_id, "history.jsonl", str(tmp_path)))
    assert [json.loads(line)["step"] for line in history.read_text().splitlines()] == [3, 6, 9]


def test_experiments_are_filed_as_model_training(tmp_path):
    """MLflow 3's UI lists an experiment without a kind under GenAI; a user's own kind is kept."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start_run(tracking_uri=uri, experiment="ours", run_name="a", params={}, tags={})
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("ours").tags["mlflow.experimentKind"] == "custom_model_development"
    theirs = client.create_experiment("theirs", tags={"mlflow.experimentKind": "genai_development"})
    start_run(tracking_uri=uri, experiment="theirs", run_name="b", params={}, tags={})
    assert client.get_experiment(theirs).tags["mlflow.experimentKind"] == "genai_development"
