"""The default ``popen`` start method: Lightning's own launcher and ``torchrun`` (the multi-node path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.mark.parametrize("launcher", ["lightning", "torchrun"])
def test_registered_name_runs_from_a_script(launcher, tmp_path):
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=0",
               "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:0", str(SCRIPT), "olga", str(tmp_path)]  # fmt: skip
    else:
        cmd = [sys.executable, str(SCRIPT), "olga", str(tmp_path)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in records] == [2, 2]
    assert records[0]["env"] == ("TorchElasticEnvironment" if launcher == "torchrun" else "LightningEnvironment")
    assert records[0]["steps"] == 12 and records[0]["uplink"] > 0
    assert records[0]["uplink"] == records[1]["uplink"]
