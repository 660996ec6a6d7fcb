"""Validation metrics of the tabular classifier from one synchronised state: one gather per validation pass.

torchmetrics' ``BinaryAUROC``, ``BinaryAveragePrecision`` and ``BinaryF1Score`` each synchronise their own states
when computed, and every state costs three collectives (a barrier, the sizes, the values); with Lightning's
``sync_dist`` mean of the loss that made 28 collectives a validation pass. Over a slow link each costs round trips:
on telecom churn over netlab's ``edge`` profile (20 ms, 4 ranks) they took about 2.5 s of every 4 s validation pass
(profiled, session 31), against 0.1 s of training between two passes. :class:`BinaryScores` keeps one row
``[probability, label, loss]`` per sample, gathered once (three collectives), and computes the same values with
torchmetrics' functional metrics; :class:`~lit_commeff.recipes.scores.Score` shows one of them to ``self.log``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc, binary_average_precision, binary_f1_score
from torchmetrics.utilities import dim_zero_cat
from typing_extensions import override

#: The values of :meth:`BinaryScores.compute`.
SCORES = ("auroc", "ap", "f1", "loss")


class BinaryScores(Metric):
    """AUROC, average precision, F1 at ``threshold`` and the mean loss over every sample of every rank.

    The values are those of ``BinaryAUROC``, ``BinaryAveragePrecision`` and ``BinaryF1Score`` over the same
    predictions (exact: no binning), and the loss is the mean over the samples (not the mean of the ranks' means).

    Args:
        threshold: Probability at and above which a prediction is positive (F1).
        **kwargs: Those of :class:`torchmetrics.Metric`.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None
    names = SCORES

    rows: list[Tensor]

    def __init__(self, threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"BinaryScores: threshold={threshold!r} is not a probability; use a value in [0, 1].")
        self.threshold = threshold
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    @override
    def update(self, probs: Tensor, target: Tensor, loss: Tensor) -> None:
        """Add a batch: probabilities in [0, 1], 0/1 labels and per-sample losses, each of one value per sample."""
        columns = [probs.detach().reshape(-1), target.detach().reshape(-1), loss.detach().reshape(-1)]
        sizes = {c.numel() for c in columns}
        if len(sizes) != 1:
            raise ValueError(
                f"BinaryScores.update: probs, target and loss hold {[c.numel() for c in columns]} values; pass one "
                "value per sample to each."
            )
        self.rows.append(torch.stack([c.to(torch.float32) for c in columns], dim=-1))

    @override
    def compute(self) -> dict[str, Tensor]:
        """``{"auroc", "ap", "f1", "loss"}`` over the gathered samples."""
        rows = dim_zero_cat(self.rows)
        probs, target, loss = rows[:, 0], rows[:, 1].long(), rows[:, 2]
        return {
            "auroc": binary_auroc(probs, target),
            "ap": binary_average_precision(probs, target),
            "f1": binary_f1_score(probs, target, threshold=self.threshold),
            "loss": loss.mean(),
        }


__all__ = ["SCORES", "BinaryScores"]
