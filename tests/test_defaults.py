"""The neural-network defaults of ``Trainer(strategy="olga")`` and ``"ef_olga"``, as measured in
``docs/neural-adaptation.md``: they are what the docs say, and they train a recipe model (2 real ranks)."""

from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

import lit_commeff  # noqa: F401  (registers the strategy names)
from lit_commeff.recipes import CreditClassifier, CreditDataModule
from lit_commeff.strategy import EFOLGAStrategy, OLGAStrategy

DOCUMENTED = {
    # strategy: (compressor, ratio, inner_steps, accelerate)
    "olga": (OLGAStrategy, "RandK", 0.1, 2, False),
    "ef_olga": (EFOLGAStrategy, "TopK", 0.01, 2, True),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_defaults_are_the_documented_ones(name):
    cls, compressor, ratio, inner_steps, accelerate = DOCUMENTED[name]
    strategy = cls()
    assert type(strategy.compressor).__name__ == compressor and strategy.compressor.ratio == ratio
    assert (strategy.inner_steps, strategy.accelerate, strategy.theta, strategy.mu) == (inner_steps, accelerate, 1.0, 0)
    assert strategy.nonfinite == "raise"


class LossLog(pl.Callback):
    """Each rank's training losses, written to ``out`` at the end (ranks are forked processes)."""

    def __init__(self, out) -> None:
        self.out, self.losses = out, []

    def on_train_batch_end(self, trainer, module, outputs, batch, idx) -> None:
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    def on_train_end(self, trainer, module) -> None:
        (self.out / f"losses{trainer.global_rank}.json").write_text(json.dumps(self.losses))


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_default_trains_a_recipe_model_without_diverging(name, tmp_path):
    """Regression guard: the default by name, on the credit recipe's MLP (synthetic table), 2 ranks, 90 steps."""
    pl.seed_everything(0)
    data = CreditDataModule(synthetic_rows=6000, batch_size=32)  # 2,400 rows per rank: 75 steps per epoch
    log = LossLog(tmp_path)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=f"{name}_fork", max_steps=90, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, num_sanity_val_steps=0, callbacks=[log],
    )  # fmt: skip
    trainer.fit(CreditClassifier(hidden=[32, 32], init_seed=0), datamodule=data)
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["train/loss"]))
    assert all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters())
    # the loss falls: the last 15 steps' mean is below the first 10 steps' (measured 0.88 for both defaults)
    losses = json.loads((tmp_path / "losses0.json").read_text())
    assert len(losses) == 90
    assert np.mean(losses[-15:]) < 0.95 * np.mean(losses[:10]), losses
    assert float(metrics["val/auroc"]) > 0.7  # measured 0.75 (olga) and 0.76 (ef_olga)
