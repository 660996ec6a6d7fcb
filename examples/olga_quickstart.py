"""Train a small MLP with OLGA on 2 CPU processes: ``python examples/olga_quickstart.py [strategy]``.

The strategy name is any registered one (``olga``, ``ef_olga``, ``compressed``, ``powersgd``,
``diloco``, ``ddp_metered``, or Lightning's ``ddp``). Lightning re-runs this script once per extra
process (like ``torchrun``); ``torchrun --nproc_per_node=2 examples/olga_quickstart.py`` works too.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import lit_commeff  # noqa: F401  (registers the strategy names)


class Regressor(pl.LightningModule):
    """A 16-32-1 MLP on a noisy nonlinear regression target."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x).squeeze(-1), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def data(n: int = 4096, seed: int = 0) -> TensorDataset:
    """Synthetic regression data (the same on every rank; Lightning shards it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = torch.tanh(x @ torch.randn(16, generator=g)) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


if __name__ == "__main__":
    strategy = sys.argv[1] if len(sys.argv) > 1 else "olga"
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=3, logger=False)
    trainer.fit(Regressor(), DataLoader(data(), batch_size=64, shuffle=True))
