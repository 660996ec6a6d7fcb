"""``Trainer(strategy="compressed")``: compression only (DIANA for unbiased, EF21 for biased compressors)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor
from typing_extensions import override

from lit_commeff.algorithms import Algorithm
from lit_commeff.algorithms.baselines import DIANA, EF21
from lit_commeff.algorithms.params import paper_omega
from lit_commeff.options import CompressedOptions
from lit_commeff.strategy.hub import HubAlgorithmStrategy
from lit_commeff.strategy.oracle import LightningOracle
from lit_commeff.transport import DistributedTransport


class CompressedStrategy(HubAlgorithmStrategy):
    """Compressed gradients with a learned shift: the compression-only family, no similarity, no acceleration.

    With an unbiased compressor this is DIANA (Mishchenko, Gorbunov, Takáč, Richtárik 2019,
    arXiv 1901.09269): rank m sends ``Q(∇f_m(x) − h_m)`` and moves its shift ``h_m`` by ``α`` times the
    message; with a biased one it is EF21 (Richtárik, Sokolov, Fatkhullin, NeurIPS 2021,
    arXiv 2106.05203): one dense round first, then rank m sends ``C(∇f_m(x) − g_m)`` and keeps
    ``g_m += C(·)``. In both the hub (rank 0) applies the aggregated gradient with the optimizer from
    ``configure_optimizers`` (its learning rate, momentum and schedule) and broadcasts the new
    parameters in the same round. One training step = one round: every rank's uplink is one compressed
    message per step (EF21: plus one dense message at the first step).

    Args:
        options: :class:`~lit_commeff.options.CompressedOptions` (``compressor``, ``compressor_options``,
            ``alpha``, ``seed``, ``nonfinite``, ``downlink``); by default built from the keyword options.
        **kwargs: The options' fields as keywords, then the process and launcher options (``start_method``,
            ``process_group_backend``, ``timeout``, …). ``DistributedDataParallel`` options are rejected.

    Raises:
        OptionError: An option out of range, ``alpha`` with a biased compressor, or a DDP option.
    """

    strategy_name: ClassVar[str] = "compressed"
    options_cls: ClassVar[type[CompressedOptions]] = CompressedOptions
    options: CompressedOptions

    @property
    def method(self) -> str:
        """``"diana"`` or ``"ef21"``, chosen by the compressor's family."""
        return "diana" if self.compressor.unbiased else "ef21"

    @override
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> Algorithm:
        # L, mu and the step only enter the theory step size, which the hub's optimizer replaces (see descend).
        common = {"transport": transport, "oracle": oracle, "x0": x0, "compressor": self.compressor, "seed": self.seed}
        if self.compressor.unbiased:
            alpha = self.options.alpha or 1 / (paper_omega(self.compressor.omega(x0.numel())) + 1)
            return DIANA(**common, L=1.0, mu=1.0, alpha=alpha, gamma=1.0)
        return EF21(**common, L=1.0, mu=1.0, gamma=1.0)
