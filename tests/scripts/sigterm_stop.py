"""A 2-rank EF-OLGA fit in which rank 0 sends itself a real SIGTERM at one step (run as its own process).

    python sigterm_stop.py OUT STEP [--launch popen|external] [--local-steps H]

Rank 0 calls ``os.kill(os.getpid(), SIGTERM)`` as step ``STEP`` starts. ``--launch popen``: Lightning's
launcher starts rank 1, and rank 0's SIGTERM handler forwards the signal to it, as torchrun and SLURM
signal every rank. ``--launch external``: this script starts both ranks with ``RANK``/``WORLD_SIZE`` in
their environment, as the ``lit-commeff`` launcher does, so the signal reaches rank 0 alone and only the
strategy's rounds can tell rank 1. Each rank writes ``OUT/rank<r>.json`` with the last step it completed;
``OUT/ckpt/last.ckpt`` is saved after every step; a rank that leaves ``fit`` by a SIGTERM stop writes
``OUT/exit<r>.json`` with whether its process group was already closed. A SIGTERM stop ends each rank with
``SystemExit``, so this runs as its own process: Lightning's fork launcher would wait forever for a rank
that left that way.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _strategy_utils import TinyRegressor, regression_data, trainer

from lit_commeff.cli.worker import close_process_group
from lit_commeff.strategy import EFOLGAStrategy


class Stop(pl.Callback):
    def __init__(self, out: Path, step: int) -> None:
        self.out, self.step = out, step

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # a real signal: Lightning's handler runs as on preemption

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        record = {"last": trainer.global_step - 1}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def launch_external(argv: list[str]) -> int:
    """Start both ranks as processes of their own (``RANK``, ``WORLD_SIZE``, ...); the worst exit code."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
        procs.append(subprocess.Popen([sys.executable, *argv], env=env))
    codes = [p.wait(timeout=240) for p in procs]
    return max(codes, key=abs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("step", type=int)
    parser.add_argument("--launch", choices=("popen", "external"), default="popen")
    parser.add_argument("--local-steps", type=int, default=1)
    args = parser.parse_args()
    if args.launch == "external" and "RANK" not in os.environ:
        return launch_external(sys.argv)
    pl.seed_everything(0)
    timeout = timedelta(seconds=120)  # also the rendezvous' limit: a loaded machine starts ranks slowly
    strategy = EFOLGAStrategy(start_method="popen", local_steps=args.local_steps, p=0.001, timeout=timeout)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    checkpoint = ModelCheckpoint(dirpath=args.out / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=1)
    callbacks = [Stop(args.out, args.step), checkpoint]
    fit = trainer(strategy, max_steps=20, callbacks=callbacks, enable_checkpointing=True, default_root_dir=args.out)
    try:
        fit.fit(TinyRegressor(), loader)
    except SystemExit:
        # A SIGTERM stop leaves fit() this way, skipping a script's own cleanup: the strategy must have
        # closed the process group already, or gloo's threads meet interpreter shutdown (an abort, -6).
        closed = {"group_closed": not torch.distributed.is_initialized()}
        (args.out / f"exit{fit.global_rank}.json").write_text(json.dumps(closed))
        raise
    close_process_group()  # gloo threads must not outlive the interpreter (an abort at exit otherwise)
    return 0


if __name__ == "__main__":
    sys.exit(main())
