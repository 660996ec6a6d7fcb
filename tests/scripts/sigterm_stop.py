"""A 2-rank EF-OLGA fit in which rank 0 gets SIGTERM's flag at one step (run as its own process).

    python sigterm_stop.py OUT STEP [--local-steps H]

Each rank writes ``OUT/rank<r>.json`` with the last step it completed. A SIGTERM stop ends each rank with
``SystemExit``, so this runs as its own process and starts its ranks like torchrun (``popen``): Lightning's
fork launcher would wait forever for a rank that left that way.
"""

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _strategy_utils import TinyRegressor, regression_data, trainer

from lit_commeff.strategy import EFOLGAStrategy


class Stop(pl.Callback):
    def __init__(self, out: Path, step: int) -> None:
        self.out, self.step = out, step

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.global_rank == 0:
            trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        record = {"last": trainer.global_step - 1}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("step", type=int)
    parser.add_argument("--local-steps", type=int, default=1)
    args = parser.parse_args()
    pl.seed_everything(0)
    timeout = timedelta(seconds=20)
    strategy = EFOLGAStrategy(start_method="popen", local_steps=args.local_steps, p=0.001, timeout=timeout)
    loader = DataLoader(regression_data(), batch_size=32, shuffle=True)
    trainer(strategy, max_steps=20, callbacks=[Stop(args.out, args.step)]).fit(TinyRegressor(), loader)


if __name__ == "__main__":
    main()
