"""Small models, data and a recording callback for multi-process strategy tests (gloo, forked ranks)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import TensorDataset

import lit_commeff  # noqa: F401  (registers the strategy names)


def regression_data(n: int = 512, d: int = 8, seed: int = 0) -> TensorDataset:
    """A noisy linear regression dataset."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    return TensorDataset(X, X @ w + 0.1 * torch.randn(n, generator=g))


class TinyRegressor(pl.LightningModule):
    """An 8-16-1 MLP with MSE loss and SGD (optionally BatchNorm, frozen layer, two groups, scheduler)."""

    def __init__(
        self,
        *,
        lr: float = 0.05,
        batchnorm: bool = False,
        freeze_first: bool = False,
        two_groups: bool = False,
        scheduler: bool = False,
        validate: bool = False,
        hidden: int = 16,
    ) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = [torch.nn.Linear(8, hidden)]
        if batchnorm:
            layers.append(torch.nn.BatchNorm1d(hidden))
        layers += [torch.nn.Tanh(), torch.nn.Linear(hidden, 1)]
        self.net = torch.nn.Sequential(*layers)
        self.lr, self.two_groups, self.scheduler, self.validate = lr, two_groups, scheduler, validate
        if freeze_first:
            self.net[0].requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.parameters() if p.requires_grad]
        if self.two_groups:
            groups = [{"params": list(self.net[-1].parameters()), "lr": self.lr / 2}]
            rest = [p for p in trainable if all(p is not q for q in groups[0]["params"])]
            opt = torch.optim.SGD([{"params": rest}, *groups], lr=self.lr)
        else:
            opt = torch.optim.SGD(trainable, lr=self.lr)
        if self.scheduler:
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5)}
        return opt


class Recorder(pl.Callback):
    """Writes, on every rank at train end, the rank's losses, final parameters and comm summary to ``out``."""

    def __init__(self, out: Path, *, every_step_params: bool = False) -> None:
        self.out = Path(out)
        self.every_step_params = every_step_params
        self.losses: list[float] = []
        self.params: list[list[float]] = []
        self.phases: list[str] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        algorithm = getattr(trainer.strategy, "algorithm", None)
        self.phases.append(str(getattr(algorithm, "phase", "")))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *a: Any) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))
        if self.every_step_params:
            self.params.append(flat(pl_module).tolist())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {
            "rank": trainer.global_rank,
            "losses": self.losses,
            "phases": self.phases,
            "params": flat(pl_module).tolist(),
            "step_params": self.params,
            "buffers": [b.tolist() for b in pl_module.buffers() if b.is_floating_point()],
            "summary": trainer.strategy.comm_summary(),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "hparams": trainer.strategy.hyperparameters() if hasattr(trainer.strategy, "hyperparameters") else {},
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record, default=str))


def flat(module: torch.nn.Module) -> torch.Tensor:
    """All parameters of a module as one flat float64 tensor."""
    return torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])


def read_ranks(out: Path, world: int) -> list[dict[str, Any]]:
    """The per-rank records written by :class:`Recorder`."""
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(world)]


def trainer(strategy: Any, *, devices: int = 2, max_steps: int = 40, callbacks: list | None = None, **kw: Any):
    """A quiet CPU Trainer."""
    options = {
        "accelerator": "cpu",
        "devices": devices,
        "strategy": strategy,
        "max_steps": max_steps,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": callbacks or [],
    }
    options.update(kw)
    return pl.Trainer(**options)
