"""``lit-commeff`` end to end: Hydra composition and checks, real 2-process runs, MLflow store and server, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _cli_utils import FAST, free_port, validate_overrides
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from lit_commeff.cli import schema
from lit_commeff.cli.validate import ConfigError
from lit_commeff.tracking.mlflow_run import MASK, flatten, mask_secrets

schema.register()
TINY = {
    "finance_credit": ["recipe.data.synthetic_rows=1200", "recipe.data.batch_size=32"],
    "telecom_churn": ["recipe.data.synthetic_rows=1200", "recipe.data.batch_size=32"],
    "telecom_throughput": [
        "recipe.data.synthetic_traces=8",
        "recipe.data.synthetic_length=200",
        "recipe.data.window=8",
        "recipe.data.batch_size=32",
        "recipe.model.hidden=16",
    ],
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _cli(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lit_commeff.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _compose(overrides: list[str]):
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    from omegaconf import OmegaConf

    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False)), cfg


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One working directory (one MLflow SQLite store) for the module's runs."""
    return tmp_path_factory.mktemp("cli")


# ----------------------------------------------------------------------------------- composition and checks
def test_default_config_composes_with_every_group():
    _, cfg = _compose([])
    assert cfg.strategy._target_ == "lit_commeff.strategy.OLGAStrategy"
    assert cfg.trainer.devices == 2 and cfg.recipe.name == "finance_credit"
    for recipe in TINY:
        _, c = _compose([f"recipe={recipe}"])
        assert c.recipe.name == recipe
    for strategy in ("ddp", "powersgd", "diloco", "compressed", "olga", "ef_olga"):
        _, c = _compose([f"strategy={strategy}"])
        assert c.strategy._target_.startswith("lit_commeff.strategy.")
    for trainer in ("cpu2", "cpu4", "gpu", "multinode"):
        _compose([f"trainer={trainer}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.foo=1"], "trainer.foo"),
        (["strategy=olgaa"], "olgaa"),
        (["trainer.max_epochs=x"], "max_epochs"),
        (["trainer.log_every_n_steps=often"], "log_every_n_steps"),
    ],
)
def test_hydra_rejects_unknown_keys_groups_and_types(overrides, message):
    with pytest.raises(Exception, match=message):
        _compose(overrides)


def _validate(overrides: list[str]):
    return validate_overrides(overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["compressor=randk", "compressor.ratio=1.5"], r"compressor: randk\.ratio: ratio=1\.5"),
        (["strategy.theta=-1"], r"strategy \(test\): theta: theta=-1"),
        (["strategy=ef_olga", "compressor=randk"], "EF-OLGA needs a biased contractive compressor"),
        (["strategy=diloco", "strategy.inner_steps=0"], "inner_steps"),
        (["recipe.data.path=/nonexistent/UCI_Credit_Card.csv"], r"recipe\.data: path: data file '/nonexistent"),
        (["recipe.data.partition=shards"], "partition='shards' is unknown"),
        (["recipe.data.synthetic_rows=100", "recipe.data.batch_size=64"], "batch_size"),
        (["trainer.devices=1"], "needs at least 2 processes"),
        (["trainer.devices=two"], "trainer.devices: trainer.devices='two' is not a process count"),
        (["trainer.precision=17"], "trainer"),
    ],
)
def test_bad_values_fail_before_any_process_starts(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _validate(overrides)


def test_secrets_are_masked_in_logged_params():
    params = mask_secrets(flatten({"logger": {"password": "hunter2", "api_key": "k", "experiment": "x"}}))
    assert params == {"logger.password": MASK, "logger.api_key": MASK, "logger.experiment": "x"}


def test_cli_reports_a_bad_override_and_starts_nothing(tmp_path):
    proc = _cli(["compressor=randk", "compressor.ratio=1.5"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "lit-commeff: error: compressor: randk.ratio: ratio=1.5" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists()  # no run was created, no rank was started
    assert not list(tmp_path.glob("outputs/*/*/rank1.log"))


# ----------------------------------------------------------------------------------- real runs
@pytest.mark.parametrize("recipe", list(TINY))
def test_each_recipe_trains_end_to_end_and_lands_in_mlflow(recipe, workdir):
    experiment = f"e2e_{recipe}"
    proc = _cli([f"recipe={recipe}", *TINY[recipe], *FAST, f"logger.experiment={experiment}"], workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "mlflow ui --backend-store-uri sqlite:///" in proc.stdout and "--host 127.0.0.1" in proc.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["strategy._target_"] == "lit_commeff.strategy.OLGAStrategy"
    assert run.data.params["recipe.name"] == recipe
    assert run.data.tags["lit_commeff.world_size"] == "2" and run.data.tags["lit_commeff.backend"] == "gloo"
    assert run.data.tags["lit_commeff.algorithm"] == "olga"
    history = client.get_metric_history(run.info.run_id, "comm/uplink_bytes")
    assert len(history) == 6 and history[-1].value > 0  # every step with log_every_n_steps=1
    for name in ("comm/downlink_bytes", "comm/cc3", "comm/gamma", "comm/delta_hat", "train/loss"):
        assert name in run.data.metrics, name
    monitor = "val/mae" if recipe == "telecom_throughput" else "val/auroc"
    assert monitor in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "ledger_summary.json", "metric_vs_uplink.png", "history.jsonl"} <= artifacts
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "ledger_summary.json", str(workdir))).read_text()
    )
    assert summary["worker_uplink_bytes"] == history[-1].value
    # both directions on the wire, against dense DDP, in comm/*, final/* and the tags
    wire_down = client.get_metric_history(run.info.run_id, "comm/wire_down_bytes")
    assert len(wire_down) == 6 and wire_down[-1].value == summary["worker_wire_down_bytes"] > 0
    assert run.data.metrics["final/worker_wire_total_bytes"] == summary["worker_wire_total_bytes"]
    assert run.data.metrics["final/hub_egress_bytes"] == summary["hub_egress_bytes"]
    assert run.data.metrics["final/wire_down_vs_ddp"] == pytest.approx(summary["wire_down_vs_ddp"])
    assert run.data.tags["lit_commeff.vs_ddp"] == summary["vs_ddp"]


def test_sweep_makes_one_run_per_job_and_compare_reads_them(workdir):
    proc = _cli(["-m", "strategy=ddp,olga", *TINY["finance_credit"], *FAST, "logger.experiment=sweep"], workdir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert sorted(r.data.tags["lit_commeff.algorithm"] for r in runs) == ["ddp", "olga"]
    out = subprocess.run(
        [sys.executable, "-m", "lit_commeff.cli.compare", "--experiment", "sweep", "--out", "cmp.png", "--json",
         "cmp.json"], cwd=workdir, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((workdir / "cmp.json").read_text())
    assert {r["algorithm"] for r in table["rows"]} == {"ddp", "olga"} and table["target"] is not None
    rows = {r["algorithm"]: r for r in table["rows"]}
    assert (rows["ddp"]["up_vs_ddp"], rows["ddp"]["down_vs_ddp"], rows["ddp"]["total_vs_ddp"]) == (1.0, 1.0, 1.0)
    assert rows["ddp"]["wire_down_mb"] == rows["ddp"]["wire_up_mb"] > 0  # DDP's all-reduce comes back down
    assert rows["olga"]["ddp_reference"].startswith("run ") and "down" in rows["olga"]["more_than_ddp"]
    assert "moves MORE bytes per worker than DDP: down" in out.stdout
    assert (workdir / "cmp.png").stat().st_size > 1000


def test_mlflow_server_logger_and_rest_api(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--workers", "1"],
        cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        proc = _cli(["logger=mlflow_server", f"logger.tracking_uri={base}", "logger.experiment=served",
                     *TINY["finance_credit"], *FAST], tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=served", method="GET"
        )
        experiment_id = json.load(urllib.request.urlopen(request, timeout=10))["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [experiment_id]}).encode()
        search = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"}
        )
        runs = json.load(urllib.request.urlopen(search, timeout=10))["runs"]
        assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
        metrics = {m["key"] for m in runs[0]["data"]["metrics"]}
        assert "comm/uplink_bytes" in metrics
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_torchrun_starts_the_ranks_the_multinode_path(tmp_path):
    """Under torchrun every process runs lit-commeff itself; rank 0 creates and fills the MLflow run."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0", "-m", "lit_commeff", *TINY["finance_credit"], *FAST,
        "logger.experiment=torchrun", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("torchrun").experiment_id])
    assert run.info.status == "FINISHED" and "comm/uplink_bytes" in run.data.metrics
    assert not list((tmp_path / "run").glob("rank*.log"))  # nothing launched by lit-commeff itself
