"""The CLI worker destroys its process group before exiting (gloo threads must not outlive the interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

from _cli_utils import free_port

SCRIPT = """
import os, torch.distributed as dist
from lit_commeff.cli.worker import close_process_group
close_process_group()  # no group yet: nothing to do
dist.init_process_group("gloo", rank=0, world_size=1)
assert dist.is_initialized()
close_process_group()
assert not dist.is_initialized()
print("closed")
"""


def test_close_process_group_destroys_the_default_group():
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "closed"
