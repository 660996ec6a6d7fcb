"""``Trainer(strategy="olga")`` and ``"ef_olga"``: OLGA / EF-OLGA as Lightning strategies."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from typing_extensions import override

from lit_commeff.algorithms.olga import EFOLGA, OLGA
from lit_commeff.options import EFOLGAOptions, OLGAOptions
from lit_commeff.strategy.hub import HubAlgorithmStrategy
from lit_commeff.strategy.metering import log_rank_zero
from lit_commeff.strategy.oracle import LightningOracle
from lit_commeff.transport import DistributedTransport

_WORKER_SIDE = ("ghat_norm", "compression_error")


class OLGAStrategy(HubAlgorithmStrategy):
    """OLGA (unbiased compression + data similarity + acceleration) as a Lightning strategy.

    Bylinkin & Beznosikov, AAAI'25, "Accelerated Methods with Compressed Communications for
    Distributed Optimization Problems under Data Similarity", arXiv 2412.16414, Algorithms 1–2; the
    neural-network adaptation is ours (``docs/algorithms.md``).

    Rank 0 is the hub. Per outer iteration: a dense round at the anchor ``x`` (every rank sends its
    minibatch gradient), ``N ~ Geom(p)`` compressed rounds in which rank m sends
    ``Q(∇f_m(x_k) − ∇f_1(x_k) − ∇f_m(x_0) + ∇f_1(x_0))`` and the hub takes ``inner_steps`` (S) steps of
    the ``configure_optimizers`` optimizer on ``<t_k, x − x_k> + ||x − x_k||²/(2θ) + f_1(x)`` over its
    batch, then a dense round at the epoch's output ``y`` and the momentum (z) step. Every training step
    is one of these rounds. The model holds the output iterate ``y`` after every step.

    Hyper-parameters: ``theta`` (θ, the prox step), ``p`` (end-of-epoch probability; default 1/γ of
    the compressor), ``inner_steps`` (S), ``mu`` (μ ≥ 0, the strong-convexity weight of the momentum
    step; 0 for neural networks); τ and α follow from them by the paper's formulas unless given.
    Presets instead of an explicit θ: ``"theory"`` (Corollary 1, needs ``delta``), ``"similarity"``
    (θ = 1/(2δ), needs ``delta``) and ``"auto"`` (θ = 1/(2δ̂) from the online similarity estimate of the
    dense rounds, starting from ``delta0``). ``gate`` ends an inner epoch early once
    ``δ̂ · ||x_k − x_0|| ≥ gate · ||∇f(x_0)||`` (the geometric draw stays the upper bound).
    The defaults are one per method, measured on the credit MLP over 3 seeds and checked on the churn and
    throughput recipes (``docs/neural-adaptation.md``); they live in :class:`~lit_commeff.options.OLGAOptions`
    and :class:`~lit_commeff.options.EFOLGAOptions`, and ``docs/strategies.md`` lists them with each
    option's meaning.

    Args:
        options: :class:`~lit_commeff.options.OLGAOptions` (``EFOLGAStrategy``:
            :class:`~lit_commeff.options.EFOLGAOptions`); by default built from the keyword options.
        **kwargs: The options' fields as keywords (``theta=0.5``, ``local_steps=4``, ...), then the process
            and launcher options (``start_method``, ``process_group_backend``, ``timeout``, …).
            ``DistributedDataParallel`` options are rejected.

    Raises:
        OptionError: An option out of range, a combination that cannot work, or a DDP option.
    """

    strategy_name: ClassVar[str] = "olga"
    algorithm_cls: ClassVar[type[OLGA]] = OLGA
    options_cls: ClassVar[type[OLGAOptions]] = OLGAOptions
    options: OLGAOptions

    def __init__(self, *, options: OLGAOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options=options, **kwargs)
        self.dense_compressor = self.options.built_dense_compressor
        self.downlink_compressor = self.options.built_downlink_compressor

    @override
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> OLGA:
        return self.algorithm_cls(transport=transport, oracle=oracle, x0=x0, options=self.options, estimate_delta=True)

    @override
    def log_diagnostics(self, module: Any) -> None:
        stats = getattr(self.algorithm, "diagnostics", None)
        if not stats:
            return
        for name, value in stats.items():
            if name in _WORKER_SIDE:  # every rank has them: the largest over ranks
                module.log(f"olga/{name}", value, sync_dist=True, reduce_fx="max", batch_size=1)
        # the hub's own, logged by rank 0 alone (the others' were dropped)
        log_rank_zero(module, {f"olga/{name}": value for name, value in stats.items() if name not in _WORKER_SIDE})

    @override
    def delta_hat(self) -> float | None:
        return getattr(self.algorithm, "delta_hat", None)


class EFOLGAStrategy(OLGAStrategy):
    """EF-OLGA (biased compression with error feedback) as a Lightning strategy.

    Same paper, Algorithms 3–4. As :class:`OLGAStrategy`, but ranks send ``C(e + θ ĝ)`` with a biased
    compressor (default TopK 1%) and keep the error ``e``; after each inner epoch one dense round
    gathers the errors and the momentum step uses ``y − mean e``.
    """

    strategy_name: ClassVar[str] = "ef_olga"
    algorithm_cls: ClassVar[type[OLGA]] = EFOLGA
    options_cls: ClassVar[type[OLGAOptions]] = EFOLGAOptions
    options: EFOLGAOptions
