"""``Trainer(strategy="olga")`` and ``"ef_olga"``: OLGA / EF-OLGA as Lightning strategies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor
from typing_extensions import override

from lit_commeff.algorithms.base import require_biased, require_unbiased
from lit_commeff.algorithms.olga import EFOLGA, OLGA
from lit_commeff.algorithms.params import PRESETS
from lit_commeff.strategy.hub import (
    CompressorSpec,
    HubAlgorithmStrategy,
    optional_positive,
    positive_int,
    resolve_compressor,
)
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
    Defaults (one per method, measured on the credit MLP over 3 seeds and checked on the churn and
    throughput recipes, ``docs/neural-adaptation.md``): OLGA uses RandK 10 %, θ = 1, S = 2 and no momentum;
    EF-OLGA uses TopK 1 %, θ = 1, S = 2 and momentum; both use p = 1/γ.

    Args:
        compressor: Unbiased compressor (``"randk"``, ``"qsgd"``, ``"identity"`` or an instance).
        compressor_options: Options of a named compressor (default for RandK: ``{"ratio": 0.1}``).
        theta: θ > 0; ``None`` to take it from ``preset``.
        p: Probability in (0, 1] that an inner epoch ends after a compressed round (default 1/γ).
        inner_steps: S ≥ 1, optimizer steps of the hub per prox solve (default 2).
        mu: μ ≥ 0.
        preset: ``"theory"``, ``"similarity"`` or ``"auto"``, used when ``theta`` is ``None``.
        delta: Hessian similarity δ for ``theory``/``similarity``.
        delta0: Starting δ for ``auto``.
        tau, alpha: Explicit momentum weight τ ∈ (0, 1] and z step α > 0.
        gate: Similarity gate on the epoch length (``None``: geometric only).
        diagnostics: Log ``olga/*`` norms of each round (``ghat_norm`` and ``compression_error``:
            the largest over ranks, synced; on the hub: ``correction_norm``, ``anchor_grad_norm``,
            ``prox_step``, ``drift``, ``outer_G_norm``, ``outer_step``, ``z_minus_y``), at the logging cadence.
        same_batch: SVRG-style inner differences: each rank computes ``∇f_m(x_k) − ∇f_m(x_0)`` on its
            current batch (one more forward/backward per inner round; two more on the hub), so minibatch
            noise cancels inside the compressed difference (see ``docs/neural-adaptation.md``).
        accelerate: Katyusha-X momentum (default: off for OLGA, on for EF-OLGA, as measured). ``False``
            sets x_{k+1} = y_{k+1}, reuses the y round's dense gradients as the next anchor (one dense round
            per outer iteration instead of two, or three for EF-OLGA) and ignores μ, τ and α (see
            ``docs/neural-adaptation.md``).
        output: What the model holds after each step (what validation and checkpoints see): ``"last"``
            (default), the newest iterate every rank holds, updated every round; or ``"y"``, the paper's
            output, updated once per outer iteration (with EF-OLGA's p ≈ 1/50 a short run could end
            on its initial weights).
        dense_compressor: Also compress the anchor and y rounds' gradient gathers, EF21-style (each rank
            keeps an estimate of its gradient and sends the compressed change; a biased compressor such as
            ``"topk"``). ``None`` (default) keeps them dense, as the paper does.
        dense_compressor_options: Options of a named ``dense_compressor``, e.g. ``{"ratio": 0.1}``.
        local_steps: H ≥ 1, training steps per inner round (default 1). Only the first step of a round
            communicates; in every step each rank adds its gradient at the round's centre x_k to a running
            average and the hub takes its S optimizer steps on its subproblem. At the next round the ranks send
            the compressed difference of their averages, so every batch is used and the hub's correction is one
            round stale. The model holds x_k until the next round. Cuts the collectives per step by H, for links
            where a round costs more than H hub steps (``docs/neural-adaptation.md``). Needs ``gate=None`` and
            ``same_batch=False``.
        downlink_compressor: Also compress the hub's broadcast of inner rounds, EF21-P-style: every rank holds a
            point w and an estimate of the hub's gradient there, and the hub sends the compressed change of both
            (a biased compressor such as ``"topk"``). The model holds w. ``None`` (default) broadcasts dense, as
            the paper does. Needs ``local_steps=1`` and ``same_batch=False`` (``docs/neural-adaptation.md``).
        downlink_compressor_options: Options of a named ``downlink_compressor``, e.g. ``{"ratio": 0.1}``.
        anchor_batches: K ≥ 1, minibatches each anchor gradient averages (default 1). The anchor round takes K
            training steps at the anchor point: the first broadcasts it, the last gathers every rank's K-batch
            average, and the steps between are silent. Its gradient is the control variate of a whole inner
            epoch, so its batch noise reaches every compressed difference of the epoch; the average has 1/K of
            it. Without ``accelerate`` the y round is the next anchor and is averaged too. Same bytes as K = 1,
            over K − 1 more steps in which the model does not move (``docs/neural-adaptation.md``).
        seed: Seed of the epoch lengths and compressor draws (same on every rank).
        **kwargs: Process and launcher options (``start_method``, ``process_group_backend``, ``timeout``, …).
    """

    strategy_name: ClassVar[str] = "olga"
    algorithm_cls: ClassVar[type[OLGA]] = OLGA
    # Neural-network defaults, measured on the credit MLP over 3 seeds (docs/neural-adaptation.md).
    default_compressor: ClassVar[tuple[str, dict[str, Any]]] = ("randk", {"ratio": 0.1})
    default_accelerate: ClassVar[bool] = False

    def __init__(
        self,
        *,
        compressor: CompressorSpec | None = None,
        compressor_options: Mapping[str, Any] | None = None,
        theta: float | None = 1.0,
        p: float | None = None,
        inner_steps: int = 2,
        mu: float = 0.0,
        preset: str = "similarity",
        delta: float | None = None,
        delta0: float | None = None,
        tau: float | None = None,
        alpha: float | None = None,
        gate: float | None = None,
        diagnostics: bool = False,
        same_batch: bool = False,
        accelerate: bool | None = None,
        output: str = "last",
        dense_compressor: CompressorSpec | None = None,
        dense_compressor_options: Mapping[str, Any] | None = None,
        local_steps: int = 1,
        downlink_compressor: CompressorSpec | None = None,
        downlink_compressor_options: Mapping[str, Any] | None = None,
        anchor_batches: int = 1,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if compressor is None:
            compressor, defaults = self.default_compressor
            compressor_options = {**defaults, **dict(compressor_options or {})}
        super().__init__(compressor=compressor, compressor_options=compressor_options, seed=seed, **kwargs)
        method = "EF-OLGA" if self.algorithm_cls.error_feedback else "OLGA"
        if self.algorithm_cls.error_feedback:
            require_biased(self.compressor, method, "strategy='olga'")
        else:
            require_unbiased(self.compressor, method, "strategy='ef_olga'")
        if preset not in PRESETS:
            raise ValueError(f"preset: preset={preset!r} is unknown; use one of {list(PRESETS)}.")
        self.theta = optional_positive("theta", theta)
        self.p = optional_positive("p", p, upper=1.0)
        self.inner_steps = positive_int("inner_steps", inner_steps)
        if isinstance(mu, bool) or not isinstance(mu, int | float) or not math.isfinite(mu) or mu < 0:
            raise ValueError(f"mu: mu={mu!r} is out of range; use a finite value >= 0 (0 for neural networks).")
        self.mu = float(mu)
        self.preset = preset
        self.delta = optional_positive("delta", delta)
        self.delta0 = optional_positive("delta0", delta0)
        self.tau = optional_positive("tau", tau, upper=1.0)
        self.alpha = optional_positive("alpha", alpha)
        self.gate = optional_positive("gate", gate)
        self.local_steps = positive_int("local_steps", local_steps)
        self.anchor_batches = positive_int("anchor_batches", anchor_batches)
        if self.local_steps > 1 and same_batch:
            raise ValueError(
                f"same_batch: local_steps={self.local_steps} averages each rank's gradients over the round's batches "
                "instead; pass same_batch=false or local_steps=1."
            )
        if self.local_steps > 1 and self.gate is not None:
            raise ValueError(
                f"gate: gate={self.gate!r} needs a collective after every inner round, which local_steps="
                f"{self.local_steps} would put inside the silent local steps; pass gate=null or local_steps=1."
            )
        self.diagnostics = bool(diagnostics)
        self.same_batch = bool(same_batch)
        if accelerate is None:
            accelerate = self.default_accelerate
        if not isinstance(accelerate, bool):
            raise ValueError(f"accelerate: accelerate={accelerate!r} is invalid; use true or false.")
        self.accelerate = accelerate
        if output not in ("y", "last"):
            raise ValueError(
                f"output: output={output!r} is unknown; use 'last' (the newest iterate, every round) or 'y' "
                "(the paper's output, once per outer iteration)."
            )
        self.output = output
        self.dense_compressor = None
        if dense_compressor is not None:
            self.dense_compressor = resolve_compressor(
                dense_compressor, dense_compressor_options, field="dense_compressor"
            )
            require_biased(self.dense_compressor, "dense_compressor (EF21-style estimates)", "dense_compressor=null")
        elif dense_compressor_options:
            raise ValueError(
                f"dense_compressor_options: {dict(dense_compressor_options)} were given without dense_compressor; "
                "name one (e.g. dense_compressor='topk') or drop the options."
            )
        self.downlink_compressor = None
        if downlink_compressor is not None:
            self.downlink_compressor = resolve_compressor(
                downlink_compressor, downlink_compressor_options, field="downlink_compressor"
            )
            require_biased(
                self.downlink_compressor, "downlink_compressor (EF21-P-style estimates)", "downlink_compressor=null"
            )
            if self.local_steps > 1:
                raise ValueError(
                    f"downlink_compressor: local_steps={self.local_steps} already sends the hub's point once per "
                    "round; pass downlink_compressor=null or local_steps=1."
                )
            if self.same_batch:
                raise ValueError(
                    "downlink_compressor: same_batch broadcasts the hub's same-batch difference, which has no shared "
                    "estimate to compress against; pass downlink_compressor=null or same_batch=false."
                )
        elif downlink_compressor_options:
            raise ValueError(
                f"downlink_compressor_options: {dict(downlink_compressor_options)} were given without "
                "downlink_compressor; name one (e.g. downlink_compressor='topk') or drop the options."
            )
        if self.theta is None:
            if preset == "auto" and self.delta0 is None:
                raise ValueError(
                    "delta0: preset='auto' without theta needs a starting similarity delta0 (a safe upper bound such "
                    "as the smoothness L), or pass theta."
                )
            if preset != "auto" and self.delta is None:
                raise ValueError(
                    f"delta: preset={preset!r} without theta needs the similarity constant delta; pass delta, "
                    "pass theta, or use preset='auto' with delta0."
                )

    @override
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> OLGA:
        return self.algorithm_cls(
            transport=transport,
            oracle=oracle,
            x0=x0,
            compressor=self.compressor,
            mu=self.mu,
            delta=self.delta,
            preset=self.preset,
            delta0=self.delta0,
            p=self.p,
            theta=self.theta,
            tau=self.tau,
            alpha=self.alpha,
            gate=self.gate,
            diagnostics=self.diagnostics,
            same_batch=self.same_batch,
            accelerate=self.accelerate,
            output=self.output,
            dense_compressor=self.dense_compressor,
            local_steps=self.local_steps,
            downlink_compressor=self.downlink_compressor,
            anchor_batches=self.anchor_batches,
            estimate_delta=True,
            seed=self.seed,
        )

    @override
    def log_diagnostics(self, module: Any) -> None:
        stats = getattr(self.algorithm, "diagnostics", None)
        if not stats:
            return
        for name, value in stats.items():
            if name in _WORKER_SIDE:  # every rank has them: the largest over ranks
                module.log(f"olga/{name}", value, sync_dist=True, reduce_fx="max", batch_size=1)
            else:  # the hub's own
                module.log(f"olga/{name}", value, rank_zero_only=True, batch_size=1)

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
    default_compressor: ClassVar[tuple[str, dict[str, Any]]] = ("topk", {"ratio": 0.01})
    default_accelerate: ClassVar[bool] = True
