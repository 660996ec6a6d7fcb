"""A tiny training script run by tests through ``torchrun`` and through Lightning's own launcher."""

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_commeff  # noqa: F401  (registers the strategy names)
from lit_commeff.cli.worker import close_process_group


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


if __name__ == "__main__":
    strategy, out = sys.argv[1], Path(sys.argv[2])
    pl.seed_everything(0)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 8, generator=g)
    data = TensorDataset(X, X @ torch.randn(8, generator=g))
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_steps=12, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Tiny(), DataLoader(data, batch_size=16, shuffle=True))
    close_process_group()  # gloo threads must not outlive the interpreter (an abort at exit otherwise)
    summary = trainer.strategy.comm_summary()
    record = {
        "rank": trainer.global_rank,
        "world": trainer.world_size,
        "env": type(trainer.strategy.cluster_environment).__name__,
        "uplink": summary["worker_uplink_bytes"],
        "steps": summary["steps"],
    }
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
