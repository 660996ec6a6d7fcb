"""``Trainer(strategy="compressed")``: compression only (DIANA for unbiased, EF21 for biased compressors)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor
from typing_extensions import override

from lit_commeff.algorithms import Algorithm
from lit_commeff.algorithms.baselines import DIANA, EF21
from lit_commeff.algorithms.params import paper_omega
from lit_commeff.strategy.hub import CompressorSpec, HubAlgorithmStrategy, optional_positive
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
        compressor: Any compressor name or instance (default TopK 1%, i.e. EF21).
        compressor_options: Options of a named compressor.
        alpha: DIANA's shift step in (0, 1] (default 1/(ω + 1) with the paper's ω = d/K for RandK).
        seed: Seed of the compressor draws.
        **kwargs: Process and launcher options (``start_method``, ``process_group_backend``, ``timeout``, …).
    """

    strategy_name: ClassVar[str] = "compressed"

    def __init__(
        self,
        *,
        compressor: CompressorSpec | None = None,
        compressor_options: Mapping[str, Any] | None = None,
        alpha: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if compressor is None:
            compressor, compressor_options = "topk", {"ratio": 0.01, **dict(compressor_options or {})}
        super().__init__(compressor=compressor, compressor_options=compressor_options, seed=seed, **kwargs)
        self.alpha = optional_positive("alpha", alpha, upper=1.0)
        if self.alpha is not None and not self.compressor.unbiased:
            raise ValueError(
                f"alpha: alpha is DIANA's shift step, but {self.compressor!r} is biased (EF21 has no alpha); "
                "drop alpha or use an unbiased compressor (randk, qsgd)."
            )

    @property
    def method(self) -> str:
        """``"diana"`` or ``"ef21"``, chosen by the compressor's family."""
        return "diana" if self.compressor.unbiased else "ef21"

    @override
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> Algorithm:
        # L, mu and the step only enter the theory step size, which the hub's optimizer replaces (see descend).
        common = {"transport": transport, "oracle": oracle, "x0": x0, "compressor": self.compressor, "seed": self.seed}
        if self.compressor.unbiased:
            alpha = self.alpha or 1 / (paper_omega(self.compressor.omega(x0.numel())) + 1)
            return DIANA(**common, L=1.0, mu=1.0, alpha=alpha, gamma=1.0)
        return EF21(**common, L=1.0, mu=1.0, gamma=1.0)
