"""The throughput forecaster's validation metrics from one synchronised state: one gather per validation pass.

``MeanAbsoluteError`` twice and ``SymmetricMeanAbsolutePercentageError`` keep two sum states each, and
Lightning's ``sync_dist`` mean of the loss two more values: 28 collectives a validation pass, each of them round
trips over a slow link (see :mod:`lit_commeff.recipes.tabular.metrics`). :class:`ForecastScores` keeps the same
sums in one tensor, gathered once (three collectives), and logs through :class:`~lit_commeff.recipes.scores.Score`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from typing_extensions import override

#: The values of :meth:`ForecastScores.compute`.
SCORES = ("mae", "smape", "mae_persistence", "loss")
#: torchmetrics' SMAPE denominator floor (``SymmetricMeanAbsolutePercentageError``).
EPSILON = 1.17e-06


class ForecastScores(Metric):
    """MAE and SMAPE of a forecast, MAE of the persistence forecast, and the mean loss, over every rank's samples.

    The same sums as torchmetrics' ``MeanAbsoluteError`` and ``SymmetricMeanAbsolutePercentageError`` (SMAPE:
    2·|p − y| / max(|p| + |y|, 1.17e-6), averaged), kept in one state ``[Σ|p − y|, ΣSMAPE terms,
    Σ|last − y|, values, Σloss, loss values]`` in float32, as torchmetrics keeps its sums (counts exact up to 2²⁴
    values a pass). The loss is the mean over every element of every rank (not the mean of the ranks' means).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None
    names = SCORES

    sums: Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("sums", default=torch.zeros(6), dist_reduce_fx="sum")  # float32: every device has it

    @override
    def update(self, preds: Tensor, target: Tensor, last: Tensor, loss: Tensor) -> None:
        """Add a batch: forecasts, the true values and the last observed ones (same shape), elementwise losses."""
        if preds.shape != target.shape or last.shape != target.shape:
            raise ValueError(
                f"ForecastScores.update: preds {tuple(preds.shape)}, target {tuple(target.shape)} and last "
                f"{tuple(last.shape)} differ in shape; pass one forecast, true and last value per element."
            )
        p, y, x = (t.detach().to(self.sums.dtype) for t in (preds, target, last))
        error = (p - y).abs()
        smape = 2 * error / (y.abs() + p.abs()).clamp_min(EPSILON)
        losses = loss.detach().to(self.sums.dtype)
        batch = [error.sum(), smape.sum(), (x - y).abs().sum(), float(y.numel()), losses.sum(), float(losses.numel())]
        self.sums += torch.stack([torch.as_tensor(v, dtype=self.sums.dtype, device=self.sums.device) for v in batch])

    @override
    def compute(self) -> dict[str, Tensor]:
        """``{"mae", "smape", "mae_persistence", "loss"}`` over the gathered sums."""
        s = self.sums
        n, m = s[3], s[5]
        return {"mae": s[0] / n, "smape": s[1] / n, "mae_persistence": s[2] / n, "loss": s[4] / m}


__all__ = ["EPSILON", "SCORES", "ForecastScores"]
