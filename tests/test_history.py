"""CommHistory: one record per validation, with wall time and training time (validation and checkpoints excluded)."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lit_commeff.tracking.history import HISTORY_FILE, CommHistory, read_history

VALIDATION_SLEEP = 0.3
CHECKPOINT_SLEEP = 0.4
TRAIN_SLEEP = 0.2  # every training step: training time is then bounded below too, so no upper bound is needed


class SlowValidation(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        time.sleep(TRAIN_SLEEP)
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        time.sleep(VALIDATION_SLEEP)  # a slow validation pass: it must not count as training time
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint):
        time.sleep(CHECKPOINT_SLEEP)  # a slow checkpoint (e.g. a gather over a slow link) after validating


def _four_steps_validated_every_2(out, **trainer_kw) -> list[dict]:
    """Fit :class:`SlowValidation` for 4 steps with a validation pass every 2 and return the history's records."""
    data = TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    trainer = pl.Trainer(
        max_steps=4,
        val_check_interval=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[CommHistory(out, monitor="val/loss")],
        **trainer_kw,
    )
    trainer.fit(SlowValidation(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=16))
    return read_history(out / HISTORY_FILE)


def test_train_seconds_exclude_validation(tmp_path):
    # the sanity pass is neither training nor a record
    records = _four_steps_validated_every_2(tmp_path, num_sanity_val_steps=1)
    assert [r["step"] for r in records] == [2, 4]
    for n, record in enumerate(records, start=1):
        validation = record["seconds"] - record["train_seconds"]
        # Every validation pass so far, this one included, is taken out, and every training step is kept in.
        # Two lower bounds, no upper one: a loaded machine only makes both sides longer.
        assert validation >= n * VALIDATION_SLEEP, record
        assert record["train_seconds"] >= record["step"] * TRAIN_SLEEP, record


def test_train_seconds_exclude_the_checkpoint_after_validation(tmp_path):
    """Lightning checkpoints after CommHistory has written its record: that time is the next record's pause."""
    data = TensorDataset(torch.randn(24, 3), torch.randn(24, 1))  # one epoch of 6 steps
    trainer = pl.Trainer(
        max_steps=6,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        default_root_dir=tmp_path,
        callbacks=[
            CommHistory(tmp_path, monitor="val/loss"),
            pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt"),  # one file per validation
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(SlowValidation(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=16))
    records = read_history(tmp_path / HISTORY_FILE)
    assert [r["step"] for r in records] == [2, 4, 6]
    for n, record in enumerate(records, start=1):
        paused = record["seconds"] - record["train_seconds"]
        # n validation passes and the n - 1 checkpoints written after the earlier ones are taken out
        low = n * VALIDATION_SLEEP + (n - 1) * CHECKPOINT_SLEEP
        assert paused >= low, record
        assert record["train_seconds"] >= record["step"] * TRAIN_SLEEP, record


class HidesBackgroundWork(pl.strategies.SingleDeviceStrategy):
    """A strategy whose background communication validation passes hid: 100 s per pass so far."""

    passes = 0

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if not self.lightning_module.trainer.sanity_checking:
            self.passes += 1

    def pause_hidden_seconds(self) -> float:
        return 100.0 * self.passes


def test_train_seconds_add_back_the_background_work_that_validation_hid(tmp_path):
    strategy = HidesBackgroundWork(device=torch.device("cpu"))
    records = _four_steps_validated_every_2(tmp_path, strategy=strategy, num_sanity_val_steps=0)
    assert [r["pause_hidden_seconds"] for r in records] == [100.0, 200.0]
    for record in records:
        # what the validation passes hid of the background work is put back into the training time
        assert record["train_seconds"] >= record["step"] * TRAIN_SLEEP + record["pause_hidden_seconds"], record
