"""Start the ranks of a local run as processes, the way ``torchrun`` does, and stop them all if one fails.

Each rank is ``python -m lit_commeff.cli.worker RUN_DIR`` with ``MASTER_ADDR=127.0.0.1``, a free
``MASTER_PORT``, ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment, so Lightning sees
processes created externally and launches nothing itself. This avoids re-running the Hydra script
(Lightning's ``popen`` launcher re-executes ``sys.argv``, which breaks ``-m`` sweeps) and pickling
(``spawn``). Rank 0 writes to this console; the others to ``RUN_DIR/rank<N>.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


class LaunchError(RuntimeError):
    """A rank failed; the message names it, its exit code and the tail of its log."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launched_externally() -> bool:
    """Whether torchrun, SLURM or another launcher started this process as one rank of a job."""
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ


def external_rank() -> int:
    """This process's global rank under an external launcher."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch_local(run_dir: Path, world_size: int, *, poll_s: float = 0.2) -> None:
    """Run ``world_size`` worker processes on this machine and wait for all of them.

    Raises:
        LaunchError: A rank exited with a non-zero code (the others are stopped first).
    """
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MASTER_", "RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size), NODE_RANK="0")
    procs: list[tuple[int, subprocess.Popen, Path | None]] = []
    logs = []
    try:
        for rank in range(world_size):
            env = {**base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            cmd = [sys.executable, "-m", "lit_commeff.cli.worker", str(run_dir)]
            if rank == 0:
                procs.append((rank, subprocess.Popen(cmd, env=env), None))
            else:
                log_path = run_dir / f"rank{rank}.log"
                fh = open(log_path, "w")  # noqa: SIM115  (closed in finally)
                logs.append(fh)
                procs.append((rank, subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT), log_path))
        while True:
            codes = [(rank, p.poll(), log) for rank, p, log in procs]
            failed = [(rank, code, log) for rank, code, log in codes if code not in (None, 0)]
            if failed:
                rank, code, log = failed[0]
                _stop(procs)
                where = f"its log {log}:\n{_tail(log)}" if log is not None else "its output is above"
                raise LaunchError(f"rank {rank} exited with code {code}; the other ranks were stopped; {where}")
            if all(code == 0 for _, code, _ in codes):
                return
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    finally:
        for fh in logs:
            fh.close()


def _stop(procs: list[tuple[int, subprocess.Popen, Path | None]], grace_s: float = 10.0) -> None:
    for _, p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for _, p, _ in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
