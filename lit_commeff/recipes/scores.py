"""One logged value of a metric that computes several from one synchronised state (the recipes' validation scores).

Lightning's ``self.log`` takes a torchmetrics object per value and computes and resets it after each epoch; a
metric per value synchronises its own states, three collectives each, which over a slow link cost seconds a
validation pass (see :mod:`lit_commeff.recipes.tabular.metrics`). A recipe keeps its values in one metric whose
``compute`` returns them all (gathered once) and logs a :class:`Score` per value.
"""

from __future__ import annotations

from typing import Any, cast

import lightning.pytorch as pl
from torch import Tensor, nn
from torchmetrics import Metric
from typing_extensions import override


class Score(Metric):
    """One value of ``source``, a metric whose ``compute`` returns a dict of the values its ``names`` list.

    It holds no state of its own, so computing it gathers nothing: the first :class:`Score` computed makes its
    source synchronise and compute (cached until the source's reset); the rest read the cache. Call :meth:`update`
    with each source update (torchmetrics warns about a metric computed before any update), and reset the source
    at the start of each epoch (Lightning resets the logged :class:`Score` objects, not their source).

    Args:
        source: The metric the value comes from.
        name: Which value (one of ``source.names``).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, source: Metric, name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        names = tuple(getattr(source, "names", ()))
        if name not in names:
            kind = type(source).__name__
            raise ValueError(f"Score: name={name!r} is not a value of {kind}; use one of {list(names)}.")
        self._source = (source,)  # a tuple: not registered as a child module, so its state is saved once
        self.name = name

    @override
    def update(self) -> None:
        """Counts an update (the values are the source's)."""

    @override
    def compute(self) -> Tensor:
        value: Tensor = self._source[0].compute()[self.name]
        return value


def score_views(source: Metric) -> nn.ModuleDict:
    """A :class:`Score` per value of ``source`` (its ``names``), registered, as Lightning's logged metrics must be."""
    names: tuple[str, ...] = tuple(getattr(source, "names", ()))
    return nn.ModuleDict({name: Score(source, name) for name in names})


def log_scores(module: pl.LightningModule, views: nn.ModuleDict, *, prog_bar: str) -> None:
    """After the source's update in a validation step: count it on each view and log it as ``val/<name>``.

    Lightning computes each logged :class:`Score` at the end of the epoch (the first one gathers the source's state
    once) and resets it; ``prog_bar`` names the value shown on the progress bar.
    """
    for name, view in views.items():
        score = cast(Score, view)
        score.update()
        module.log(f"val/{name}", score, on_step=False, on_epoch=True, prog_bar=name == prog_bar)


__all__ = ["Score", "log_scores", "score_views"]
