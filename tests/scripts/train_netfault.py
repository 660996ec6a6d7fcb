"""One rank of a 2-rank OLGA run for the network-fault tests (started inside a netlab namespace).

    python train_netfault.py OUT MAX_STEPS TIMEOUT_S [--ckpt PATH] [--pause-at STEP]

Rank 1 touches ``OUT/paused`` and sleeps 1 s when step ``--pause-at`` starts, so that a test can take
its link down at a known point. Checkpoints go to ``OUT/ckpt`` every 4 steps; each rank writes its
final parameters and ledger totals to ``OUT/rank<r>.json``.
"""

import argparse
import json
import time
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.cli.worker import close_process_group
from lit_commeff.strategy import OLGAStrategy


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Pause(pl.Callback):
    def __init__(self, out: Path, step: int | None) -> None:
        self.out, self.step = out, step

    def on_train_batch_start(self, trainer, module, batch, idx):
        if trainer.global_rank == 1 and trainer.global_step == self.step:
            (self.out / "paused").write_text(str(self.step))
            time.sleep(1.0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("max_steps", type=int)
    parser.add_argument("timeout_s", type=float)
    parser.add_argument("--ckpt")
    parser.add_argument("--pause-at", type=int)
    args = parser.parse_args()
    pl.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(512, 8, generator=g)
    data = TensorDataset(X, X @ torch.randn(8, generator=g))
    strategy = OLGAStrategy(p=0.25, timeout=timedelta(seconds=args.timeout_s))
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_steps=args.max_steps, max_epochs=-1, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[
            ModelCheckpoint(dirpath=args.out / "ckpt", every_n_train_steps=4, save_last=True, save_top_k=0),
            Pause(args.out, args.pause_at),
        ],
    )  # fmt: skip
    # a fixed, unshuffled order: the resumed run sees the batches the uninterrupted one saw
    trainer.fit(Tiny(), DataLoader(data, batch_size=32, shuffle=False), ckpt_path=args.ckpt, weights_only=True)
    close_process_group()  # gloo threads must not outlive the interpreter (an abort at exit otherwise)
    record = {
        "params": torch.cat([p.detach().reshape(-1) for p in trainer.lightning_module.parameters()]).tolist(),
        "summary": trainer.strategy.comm_summary(),
        "step": trainer.global_step,
    }
    (args.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
