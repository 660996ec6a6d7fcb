"""``trainer=multinode`` for real: two torchrun "nodes" (1 process each) on this machine, loopback only.

Each node is its own ``torchrun --nnodes 2 --nproc-per-node 1 --node-rank N`` agent meeting at one c10d
rendezvous; every process runs ``lit-commeff trainer=multinode`` itself, and global rank 0 creates and
fills the MLflow run. ``trainer=gpu`` runs where there are 2 or more CUDA GPUs (a hub strategy needs two
processes), and is only composed elsewhere (``test_cli.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _cli_utils import FAST, free_port
from mlflow.tracking import MlflowClient

#: A short run of the default recipe and strategy.
SHORT = ["recipe.data.synthetic_rows=1200", "recipe.data.batch_size=32", *FAST]
RUN = [
    "trainer=multinode",
    "trainer.num_nodes=2",
    "trainer.devices=1",
    "trainer.accelerator=cpu",
    *SHORT,
    "logger.experiment=multinode",
]


@pytest.mark.slow
def test_two_torchrun_nodes_train_and_log_comm_metrics(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    port = free_port()
    nodes = []
    for node in range(2):
        cwd = tmp_path / f"node{node}"
        cwd.mkdir()
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
            "-m", "lit_commeff", *RUN, f"hydra.run.dir={cwd / 'run'}",
            f"checkpoint_dir={tmp_path / 'ckpt'}", f"logger.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ]  # fmt: skip
        log = open(tmp_path / f"node{node}.log", "w")  # noqa: SIM115  (closed below)
        nodes.append((subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [proc.wait(timeout=400) for proc, _ in nodes]
    finally:
        for proc, log in nodes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / f"node{n}.log").read_text(errors="replace") for n in range(2)]
    assert codes == [0, 0], "\n".join(text[-3000:] for text in logs)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("multinode").experiment_id])  # rank 0's alone
    assert run.info.status == "FINISHED"
    assert run.data.tags["lit_commeff.world_size"] == "2" and run.data.params["trainer.num_nodes"] == "2"
    uplink = client.get_metric_history(run.info.run_id, "comm/uplink_bytes")
    assert len(uplink) == 6 and uplink[-1].value > 0  # every step crossed between the two nodes
    for name in ("comm/downlink_bytes", "comm/cc3", "train/loss"):
        assert name in run.data.metrics, name
    assert not list(tmp_path.glob("node*/run/rank*.log"))  # torchrun started the ranks, not lit-commeff


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="trainer=gpu with a hub strategy needs 2 or more CUDA GPUs")
def test_trainer_gpu_runs_one_process_per_gpu_over_nccl(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env["PYTHONWARNINGS"] = "ignore"
    gpu = ["trainer=gpu", *SHORT, "logger.experiment=gpu", f"checkpoint_dir={tmp_path / 'ckpt'}"]
    cmd = [sys.executable, "-m", "lit_commeff.cli.main", *gpu]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("gpu").experiment_id])
    assert run.data.tags["lit_commeff.backend"] == "nccl"
    assert run.data.tags["lit_commeff.world_size"] == str(torch.cuda.device_count())
    assert client.get_metric_history(run.info.run_id, "comm/uplink_bytes")[-1].value > 0
