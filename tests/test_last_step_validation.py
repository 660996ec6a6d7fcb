"""A run shorter than an epoch still validates at its last step, so it has a final metric.

``max_steps`` ends a ``lit-commeff`` run wherever the epoch stands; Lightning validates at the end of an
epoch (or every ``val_check_interval``) only. :class:`~lit_commeff.cli.worker.ValidateAtLastStep` makes
the last step validate, once. Tested on a one-process Trainer (no launch) and for the CLI's worker wiring.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.cli import worker
from lit_commeff.cli.worker import ValidateAtLastStep

#: Training batches per epoch of :class:`_Tiny`.
EPOCH = 10


class _Tiny(pl.LightningModule):
    """A linear model that records the global step of every validation."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.validated_at: list[int] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def on_validation_epoch_end(self) -> None:
        self.validated_at.append(self.trainer.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(EPOCH * 4, 2), torch.randn(EPOCH * 4, 1)), batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=4)


def _fit(tmp_path, *, max_steps: int, val_check_interval: Any = 1.0) -> list[int]:
    model = _Tiny()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        val_check_interval=val_check_interval,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[ValidateAtLastStep()],
    )
    trainer.fit(model)
    return model.validated_at


@pytest.mark.parametrize(
    ("max_steps", "interval", "expected"),
    [
        pytest.param(3, 1.0, [3], id="shorter-than-an-epoch"),
        pytest.param(7, 4, [4, 7], id="last-step-between-checks"),
        pytest.param(8, 4, [4, 8], id="last-step-is-a-check-once"),
        pytest.param(EPOCH, 1.0, [EPOCH], id="a-whole-epoch-once"),
        pytest.param(EPOCH + 3, 1.0, [EPOCH, EPOCH + 3], id="into-the-second-epoch"),
    ],
)
def test_the_last_step_validates_once(tmp_path, max_steps: int, interval: Any, expected: list[int]) -> None:
    assert _fit(tmp_path, max_steps=max_steps, val_check_interval=interval) == expected


def test_the_cli_worker_trains_with_it(tmp_path, monkeypatch) -> None:
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf, open_dict

    from lit_commeff.cli import schema

    schema.register()
    seen: dict[str, Any] = {}

    class _Trainer:
        def __init__(self, **kwargs: Any) -> None:
            seen.update(kwargs)

        def fit(self, *args: Any, **kwargs: Any) -> None:
            pass

    monkeypatch.setattr(worker.pl, "Trainer", _Trainer)
    overrides = ["strategy=ddp", "trainer.devices=1", f"logger.tracking_uri={tmp_path}/mlruns"]
    with initialize_config_module(config_module="lit_commeff.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    monkeypatch.setenv("RANK", "1")  # no MLflow logger: nothing to open
    worker.train(resolved, tmp_path, None)
    assert any(isinstance(c, ValidateAtLastStep) for c in seen["callbacks"])
