"""Gated DANE: every rank trains on its similarity-corrected subproblem; compressed, gated, accelerated sync.

In OLGA only the hub's prox steps move the model. Here every worker solves, in parallel and inexactly, the
subproblem OLGA's hub solves, each on its own data:

    x_m ≈ argmin_x  F_m(x) = f_m(x) + ⟨ĝ_r − ∇f_m(x_r), x⟩ + ‖x − x_r‖² / (2θ),     ĝ_r ≈ ∇f(x_r),

by local gradient steps (the user's optimizer in Lightning). The linear term cancels worker m's gradient bias
at the anchor x_r, so the local minimiser differs from the global prox step by O(δ‖x − x_r‖) only, δ being
the Hessian similarity of the shards: corrected local steps do not drift to a floor as uncorrected ones
(local SGD, DiLoCo) do when the shards differ.

One round, in :meth:`~lit_commeff.algorithms.base.Algorithm.step` s (``H`` of them):

1. **Anchor** (first step, communicating): every worker sends ∇f_m(x_r) (dense, or EF21-compressed with
   ``grad_compressor``); the hub averages and broadcasts ĝ_r; worker m keeps its correction
   c_m = ĝ_r − ∇f_m(x_r). Its first local step is then a step along ĝ_r, since ∇F_m(x_r) = ĝ_r.
2. **Local steps** (silent): x_m ← x_m − η ∇F_m(x_m), with no communication.
3. **Sync** (the H-th step, communicating): every worker sends its model change Δ_m = x_r − x_m, compressed
   (error feedback for biased compressors); the hub averages to Δ̄, takes the **outer step** — DiLoCo's
   Nesterov step, or the Katyusha-X-style extrapolation x_{r+1} = x̄ + β(x̄ − x̄_prev) with x̄ = x_r − Δ̄ —
   and sends the new anchor (dense, or compressed: every process adds C(x_{r+1} − x_r) to the anchor it
   holds, so all hold the same anchor bit for bit).
   With ``correction="averaged"`` (SCAFFOLD's option II) each worker sends, in place of ∇f_m(x_r), the mean
   of the minibatch gradients of its round: the next round's correction ĝ − mean_m then carries 1/√H of one
   minibatch's noise instead of all of it, for the same bytes (the ranks' corrections still sum to zero).
   With ``correction="update"`` the correction lives in the optimizer's update space instead (SCAFFOLD's
   option II as SCAFFOLD writes it, from model changes): a local step is the user's optimizer step on the
   plain minibatch gradient minus e_m, with e_m ← e_m + (Δ̄ − Δ_m)/H after each sync (the hub sends Δ̄ with the
   anchor: d more values down). The e_m sum to zero over the ranks whatever the optimizer, so under Adam the
   corrections cancel in the averaged model change exactly; under SGD with a constant step it is the averaged
   correction times the step. The gate and δ̂ still use the gradient correction, which is still computed.
4. **Similarity-gated length** (``sync="gated"``): during the local steps each worker records the first
   step at which its round was done — its local solve reached ‖∇F_m(x_m)‖ ≤ ``gate_tol``·‖x_m − x_r‖/θ
   (the inexactness criterion of S-DANE: more steps would not improve the outer step), or, without a prox
   term, its drift δ̂·‖x_m − x_r‖ reached ``gate``·‖ĝ_r‖ (its correction is stale). Since θ = 1/(2δ), a
   small δ asks for an accurate solve (long rounds) and a large δ for a coarse one (short rounds). The
   sync agrees these counts (one int32 per worker, tag ``"gate"``); the next round lasts the smallest one
   (the first worker done), or twice this round if no worker was done, within [``min_inner_steps``,
   ``inner_steps``]. Rounds
   are short where the shards differ and long where they agree. δ̂ is ``delta`` or each worker's running
   maximum of ‖(∇f_m(x_r) − ∇f_m(x_{r−1})) − (ĝ_r − ĝ_{r−1})‖ / ‖x_r − x_{r−1}‖, which it computes from
   what it already holds; ``delta_estimate="debiased"`` takes the minibatch noise out of it, measured by the
   spread of the rank's minibatch gradients within the round.
5. **Weighed against the link** (``link_aware``, the Lightning default): the drift gate asks only whether a
   longer round would hurt, not what a sync costs. The hub measures its sync (the collectives' wall-clock) and
   the median interval between its silent local steps, a = t_sync/t_step (a sync's cost in local steps), and
   the next round lasts √(H_drift·a) steps, H_drift being the drift gate's choice above (within
   [``min_inner_steps``, ``inner_steps``], as the gate alone would hold it). This is the round
   length that maximises progress per second when a round's per-step progress falls as 1/(1 + H/H_drift)
   (d/dH of H/((1 + H/H_drift)(H + a)) vanishes at H² = H_drift·a): the error-runtime trade-off of adaptive
   local-update SGD (Wang & Joshi, "Adaptive Communication Strategies to Achieve the Best Error-Runtime
   Trade-off in Local-Update SGD", SysML 2019), with the ranks' similarity in place of a loss schedule. A
   cheap link shortens rounds, a slow one lengthens them, and the shards' similarity scales both. Under
   ``overlap`` a round of H steps takes max(H, a) steps' time instead of H + a, which is largest per second at
   H = a whatever H_drift is: the round lasts a, with t_step the round's own training time per step (from the
   exchange's launch to its join, validation left out).

References: DANE (Shamir, Srebro & Zhang, ICML 2014, "Communication-Efficient Distributed Optimization using
an Approximate Newton-type Method") for the corrected subproblem; SCAFFOLD (Karimireddy et al., ICML 2020)
for its stochastic, step-wise form; S-DANE / Accelerated S-DANE (Jiang, Rodomanov & Stich, NeurIPS 2024) for
inexact local solves with a √(δ/μ) round complexity; DiLoCo (Douillard et al., 2023, arXiv:2311.08455) for
the outer Nesterov step; Bylinkin & Beznosikov (AAAI 2025, OLGA / EF-OLGA) for the prox subproblem under
similarity, compression with error feedback and the Katyusha-X-style extrapolation; EF21 (Richtárik et al.,
NeurIPS 2021) and EF21-P (Gruntkowska et al., ICML 2023) for the compressed gradient and anchor estimates.
What none of them has and this method adds is the drift-gated round length.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import Algorithm, LocalOracle, check_positive, descend
from lit_commeff.algorithms.local_sgd import nesterov_outer_step
from lit_commeff.algorithms.memory import EF21Estimate, ErrorFeedback
from lit_commeff.algorithms.preconditioner import SharedAdamRule, linear_steps, optimizer_lr
from lit_commeff.compression import Identity
from lit_commeff.finite import all_finite
from lit_commeff.options import MESSAGE_DTYPES, GatedDANEOptions
from lit_commeff.transport import Transport
from lit_commeff.transport.background import Exchange, InlineExchange
from lit_commeff.transport.wire import pack, round_values, unpack


class GatedDANE(Algorithm):
    """Every worker trains on its similarity-corrected subproblem; compressed, drift-gated, accelerated sync.

    The module docstring gives the method. Each :meth:`step` is one local step; the first step of a round
    (anchor gradients) and its last (model changes, new anchor) communicate, the others are silent
    (:meth:`communicates`). :meth:`output` is the anchor x_r, the same on every process.

    Args:
        transport: Message transport.
        oracle: Local gradients (and, in Lightning, the user's optimizer through ``descend``).
        x0: Starting point (every process passes the same one).
        options: :class:`~lit_commeff.options.GatedDANEOptions`; by default built from the keyword options
            over :attr:`~lit_commeff.options.GatedDANEOptions.paper_defaults`.
        L: Smoothness of f; the default local step is ``1 / (L + 1/θ)`` (``1/L`` without a prox term).
        lr: Explicit local step size (overrides the default; Lightning's optimizer ignores it).
        seed: Seed of the compressor draws.
        **kwargs: Instead of ``options``: its fields.
    """

    name: ClassVar[str] = "gated_dane"
    options_cls: ClassVar[type[GatedDANEOptions]] = GatedDANEOptions
    _state: ClassVar[tuple[str, ...]] = (
        "phase", "k", "H", "anchor", "ghat", "corr", "y", "done_at", "delta_hat",
        "prev_anchor", "prev_ghat", "prev_grads", "prev_mean", "momentum", "history_h",
        "anchor_grads", "ghat_held", "pre_m", "pre_u", "pre_v", "pre_t", "pre_seen", "grad_sum", "grad_count",
        "step_seconds", "sync_seconds", "update_corr", "grad_sq", "noise_var", "prev_noise", "timed_rounds",
        "base", "outbox", "outbox_cost", "outbox_h", "outbox_noise", "voided_rounds", "wire_shift", "hub_shift",
    )  # fmt: skip
    _memory: ClassVar[tuple[str, ...]] = ("error_memory", "grad_estimate")

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        options: GatedDANEOptions | None = None,
        L: float | None = None,
        lr: float | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=seed)
        if options is None:
            kwargs.setdefault("seed", seed)
        self.options = options = self.options_cls.of(options, defaults=self.options_cls.paper_defaults, **kwargs)
        self.compressor = options.built_compressor
        self.grad_compressor = options.built_grad_compressor
        self.downlink_compressor = options.built_downlink_compressor
        self.theta = options.resolved_theta
        self.beta = options.resolved_beta if options.outer == "extrapolate" else 0.0
        #: The outer Nesterov step: DiLoCo's (0.7, 0.9) over linear local steps, plain averaging over adaptive ones.
        linear = linear_steps(getattr(oracle, "optimizer", None))
        self.outer_lr = float(options.outer_lr if options.outer_lr is not None else (0.7 if linear else 1.0))
        self.outer_momentum = float(
            options.outer_momentum if options.outer_momentum is not None else (0.9 if linear else 0.0)
        )
        if lr is None:
            if L is None:
                lr = 0.0  # unused: the oracle's own descend (the user's optimizer) takes the step
                if getattr(oracle, "descend", None) is None:
                    raise ValueError(f"lr: {self.name} needs a local step size lr or the smoothness L.")
            else:
                lr = 1.0 / (check_positive("L", L) + (0.0 if self.theta is None else 1.0 / self.theta))
        self.lr = float(lr)
        #: Smoothness (simulator): with ``prox_rho`` the local step follows each row's θ_m (:meth:`_row_steps`).
        self.L = None if L is None else float(L)
        rows = transport.workers.numel()
        self.phase = "anchor"
        #: Local steps taken in this round, and this round's length.
        self.k = 0
        self.H = options.first_steps if options.sync == "gated" else options.inner_steps
        self.anchor = x0.detach().clone()
        self.ghat: Tensor | None = None
        self.corr: Tensor | None = None
        self.y: Tensor | None = None
        #: Per row: the local step at which the round was done (0: not yet).
        self.done_at = torch.zeros(rows, dtype=torch.int64)
        #: Per row: the similarity used by the drift gate (``delta``, or the running estimate).
        self.delta_hat: Tensor | None = (
            None if options.delta is None else torch.full((rows,), float(options.delta), dtype=torch.float64)
        )
        self.prev_anchor: Tensor | None = None
        self.prev_ghat: Tensor | None = None
        self.prev_grads: Tensor | None = None
        #: ``correction="lagged"``: this process's gradients at the current anchor, sent with the round's sync.
        self.anchor_grads: Tensor | None = None
        self.lagged = options.correction in ("lagged", "averaged", "update")
        #: ``correction="averaged"``: the sum and count of this round's minibatch gradients (SCAFFOLD's option II).
        self.averaged = options.correction in ("averaged", "update")
        #: ``correction="update"``: this process's rows of e_m, the correction in the optimizer's update space.
        self.in_update_space = options.correction == "update"
        self.update_corr: Tensor | None = None
        self._own_change: Tensor | None = None  # this round's model change as the hub received it
        #: The last sync's norms on this process (first row): its model change ‖Δ_m‖, the anchor's move
        #: ‖x_{r+1} − x_r‖, its correction relative to ĝ, ‖c_m‖/‖ĝ‖, and how far the correction moved since the
        #: last sync, ‖c_m − c_m,prev‖/‖ĝ‖ (what a correction one round older is off by; diagnostics, no traffic).
        self.last_round: dict[str, float] = {}
        self._recorded_corr: Tensor | None = None  # the correction at the last sync (diagnostics only, not state)
        self.grad_sum: Tensor | None = None
        self.grad_count = 0
        #: ``delta_estimate="debiased"``: per row, this round's sum of squared minibatch-gradient norms; the noise
        #: variance of the gradients sent with the last sync (``fresh``: of the next anchor's) and of the ones before.
        self.debiased = options.delta_estimate == "debiased"
        self.grad_sq: Tensor | None = None
        self.noise_var: Tensor | None = None
        self.prev_noise: Tensor | None = None
        #: ``downlink_compressor``: the ĝ every process holds, moved each round by C(ĝ − ĝ_held) (EF21-P).
        self.ghat_held: Tensor | None = None
        self.prev_mean: Tensor | None = None  # the hub's previous x̄ (extrapolation)
        self.momentum: Tensor | None = None  # the hub's Nesterov buffer
        #: Lengths of the finished rounds (for logs and the gate's tests).
        self.history_h: list[int] = []
        #: ``preconditioner="shared"`` with Adam: the rule; this rank's momentum and own second moment, the shared
        #: one, the local steps taken and those the shared one has seen (``None``: SGD, the user's optimizer steps).
        self.shared_rule: SharedAdamRule | None = None
        if options.preconditioner == "shared":
            optimizer = getattr(oracle, "optimizer", None)
            if optimizer is None:
                raise ValueError(
                    "preconditioner: 'shared' shares the state of the user's optimizer (Lightning); these local "
                    "steps are plain gradient steps, which keep none; use preconditioner='local'."
                )
            self.shared_rule = SharedAdamRule.of(optimizer)
        self.pre_m: Tensor | None = None
        self.pre_u: Tensor | None = None
        self.pre_v: Tensor | None = None
        self.pre_t = 0
        self.pre_seen = 0
        #: ``link_aware``: the clock, this process's smoothed sync and local-step times (seconds), and the
        #: intervals between the silent steps of the current round.
        self.clock: Callable[[], float] = time.perf_counter
        self.step_seconds: float | None = None
        self.sync_seconds: float | None = None
        self.timed_rounds = 0  # syncs seen by the timer; the first one (a warm-up) is not folded in
        self._entered: float | None = None
        self._entered_silent = False
        self._intervals: list[float] = []
        self._round_sync = 0.0
        #: ``overlap``: when this process launched the exchange in flight, and the training time of the last round
        #: between a launch and the next join (validation passes left out).
        self._launched_clock: float | None = None
        self._round_seconds: float | None = None
        #: ``overlap``: where this rank's current round started (its merged iterate), the message of the exchange in
        #: flight with the hub's cost and the round length it was sent with, and the rounds the hub voided.
        #: ``None`` (Lightning decides it before, :meth:`GatedDANEOptions.resolve_overlap`) is off here.
        self.overlap = bool(options.overlap)
        #: ``message_dtype``: the dtype the values of the one dense message a round travel in (``None``: the model's):
        #: overlap's both ways, the synchronous sync's gather (its broadcast carries the new anchor exactly).
        wire = MESSAGE_DTYPES[options.wire_dtype_name]
        self.wire_dtype: torch.dtype | None = None if wire is None else getattr(torch, wire)
        self.base: Tensor | None = None
        self.outbox: Tensor | None = None
        self.outbox_cost: float | None = None
        self.outbox_h = 0
        #: ``delta_estimate="debiased"``: the noise variance of the gradients in :attr:`outbox`, which the estimate
        #: taken with their reply subtracts (the round's sums are gone by then).
        self.outbox_noise: Tensor | None = None
        self.voided_rounds = 0
        #: ``message_dtype``: this process's rows of the gradient shifts s_m, and on the hub every rank's.
        self.wire_shift: Tensor | None = None
        self.hub_shift: Tensor | None = None
        #: ``overlap``: runs the exchange (at once here; in a thread over its own process group in Lightning).
        self.exchange: Exchange = InlineExchange(transport)
        #: ``overlap``: set by the caller before a step, this rank's fault to report in its next message; after a
        #: step that joined an exchange, (first faulty rank or ``None``, rank 0's stop bit) as every rank learnt it.
        self.outbound_fault = False
        self.outbound_stop = False
        self.inbound: tuple[int | None, bool] | None = None
        self.error_memory = ErrorFeedback() if options.uses_error_feedback else None
        self.grad_estimate: EF21Estimate | None = None
        if self.grad_compressor is not None:
            agg = torch.zeros(transport.num_workers, self.dim, dtype=x0.dtype, device=x0.device)
            self.grad_estimate = EF21Estimate(aggregate=agg if transport.is_hub else None)

    # ------------------------------------------------------------------------------- schedule
    def hyperparameters(self) -> dict[str, float]:
        out = {
            "lr": self.lr,
            "inner_steps": float(self.options.inner_steps),
            "H": float(self.H),
            "theta": float("inf") if self.theta is None else self.theta,
            "beta": self.beta,
            "overlap": float(self.overlap),  # 1: on (``None`` resolves in Lightning: on over gloo where allowed)
            # the rounds' floor and whether they weigh the link (Lightning resolves both under overlap with Adam)
            "min_inner_steps": float(self.options.min_steps),
            "link_aware": float(self.options.resolved_link_aware),
            # the bits of each value of the one dense message (``message_dtype`` as resolved; 32 for float32 models)
            "message_bits": float(torch.finfo(self.wire_dtype or self.anchor.dtype).bits),
            "correction_memory": self.options.resolved_correction_memory,
        }
        if self.options.prox_rho is not None:
            out["prox_rho"] = float(self.options.prox_rho)
        if self.options.outer == "nesterov":
            out.update(outer_lr=self.outer_lr, outer_momentum=self.outer_momentum)
        return out

    def output(self) -> Tensor:
        return self.anchor

    def communicates(self) -> bool:
        if self.phase == "anchor":
            return not self.lagged or self.H <= 1
        return self.k + 1 >= self.H

    def round_kind(self) -> str:
        if self.phase == "anchor" and not self.lagged:
            return "anchor" if self.H > 1 else "anchor+sync"
        return "sync" if self.communicates() else "local"

    def skip_local_step(self) -> None:
        if self.communicates():
            raise RuntimeError(f"{self.name}: skip_local_step() called on a communicating step, not a local step.")
        if self.phase == "anchor":  # a dropped lagged anchor step: the sync evaluates the anchor gradients itself
            self.y = self._start()
            self.anchor_grads, self.phase = None, "local"
        self.k += 1

    def _accumulate(self, raw: Tensor) -> None:
        """Add a minibatch gradient of this round to its running sum (``averaged``) and squared norm (``debiased``)."""
        if self.averaged or self.debiased:
            self.grad_sum = raw if self.grad_sum is None else self.grad_sum + raw
            self.grad_count += 1
        if self.debiased:
            sq = torch.linalg.vector_norm(raw, dim=-1, dtype=torch.float64).square()
            self.grad_sq = sq if self.grad_sq is None else self.grad_sq + sq

    def _round_noise(self) -> Tensor | None:
        """``debiased``: per row, the noise variance of the gradients this round sends (``None``: not measured).

        The spread of the round's n minibatch gradients, s² = (Σ‖g_i‖² − ‖Σg_i‖²/n)/(n − 1), is one minibatch's
        variance (the gradient's own change along the round counts as noise too: δ̂ errs low by that much); the
        round mean (``averaged``) carries s²/n of it, a single anchor gradient all of it.
        """
        n = self.grad_count
        if not self.debiased or n < 2 or self.grad_sq is None or self.grad_sum is None:
            return None
        total = torch.linalg.vector_norm(self.grad_sum, dim=-1, dtype=torch.float64).square()
        spread = ((self.grad_sq - total / n).clamp(min=0.0) / (n - 1)).cpu()
        return spread / n if self.averaged else spread

    def _reset_round_sums(self) -> None:
        self.grad_sum, self.grad_count, self.grad_sq = None, 0, None

    @property
    def drift(self) -> float:
        """This process's largest δ̂·‖x_m − x_r‖ / ‖ĝ_r‖ in the current round (0 at the anchor)."""
        if self.y is None or self.ghat is None or self.delta_hat is None:
            return 0.0
        gnorm = float(torch.linalg.vector_norm(self.ghat)) or 1.0
        dist = torch.linalg.vector_norm(self.y - self._center(), dim=-1).to(torch.float64)
        return float((self.delta_hat * dist).max()) / gnorm

    @property
    def sync_steps(self) -> float | None:
        """A sync's measured cost in local steps, t_sync/t_step (``link_aware``; ``None`` before the first sync)."""
        if not self.options.resolved_link_aware or self.sync_seconds is None or not self.step_seconds:
            return None
        return self.sync_seconds / self.step_seconds

    def _time_step(self) -> None:
        """Record the interval since the last step when that step was silent (its cost without a sync)."""
        if not self.options.resolved_link_aware:
            return
        now = self.clock()
        if self._entered is not None and self._entered_silent:
            self._intervals.append(now - self._entered)
        self._entered, self._entered_silent = now, not self.communicates()

    def _time_round(self) -> None:
        """After a sync: fold this round's sync time and median silent step into the smoothed times.

        The first sync is left out: one sample starts the smoothed cost, and the first is a slow one (on credit
        over ``edge`` the hub's took 0.108 s against a median of 0.065 s over the later ones, with faster steps
        in the first round: a = 40 against a typical 20; session 14); folded in at half weight it held the
        measured cost high for several rounds, each of them longer for it.
        """
        if not self.options.resolved_link_aware:
            return
        if self.timed_rounds < (2 if self.overlap else 1):  # overlap: the first joined exchange is the warm-up
            self.timed_rounds, self._intervals, self._round_sync = self.timed_rounds + 1, [], 0.0
            return
        self.timed_rounds += 1
        ema = 0.5  # a round's times are noisy (stragglers, validation between steps); half-weight smoothing
        sync = self._round_sync
        self.sync_seconds = sync if self.sync_seconds is None else (1 - ema) * self.sync_seconds + ema * sync
        local = statistics.median(self._intervals) if self._intervals else None
        if self.overlap and self._round_seconds is not None and self.history_h:
            # Under overlap the exchange is hidden where the round's steps take as long, all of them (slow ones and
            # the sync step's work before the join included, validation left out): its step is the round's training
            # time from the launch to the join per step, not the median silent step.
            local = self._round_seconds / self.history_h[-1]
        if local is not None:
            self.step_seconds = local if self.step_seconds is None else (1 - ema) * self.step_seconds + ema * local
        self._intervals, self._round_sync, self._round_seconds = [], 0.0, None

    # ------------------------------------------------------------------------------- one step
    def _step(self) -> None:
        self._time_step()
        if self.phase == "anchor":
            rows = self._start()
            if self.lagged:  # silent: this round's anchor gradients travel with its sync
                grads = self.anchor_grads = self.oracle.grads(self.anchor if self.base is None else rows)
                self._accumulate(grads)
                direction = grads if self.corr is None or self.in_update_space else grads + self.corr
            else:
                started = self.clock()
                self.transport.begin_round()
                direction = self._anchor_round().expand_as(rows)  # ∇F_m(x_r) = ĝ_r
                self._round_sync += self.clock() - started
            self.y = self._corrected(self._descend(rows, direction, self._theta_rows(rows)))
            self.k, self.phase = 1, "local"
        else:
            y = self._need(self.y, "y")
            raw = self.oracle.grads(y)
            self._accumulate(raw)
            g = raw if self.corr is None else raw + self.corr  # no correction before the first lagged sync
            theta = self._theta_rows(y)
            prox = None if theta is None else (y - self._center()) / theta
            if prox is not None:
                g = g + prox
            if self.options.sync == "gated" and self.ghat is not None:  # fixed rounds need no counts
                self._gate(y, g, theta)  # the corrected gradient ∇F_m, also in update space
            if self.in_update_space:
                g = raw if prox is None else raw + prox
            self.y = self._corrected(self._descend(y, g, theta))
            self.k += 1
        if self.k >= self.H and self.overlap:
            started = self.clock()
            if self._launched_clock is not None:  # the round since the last launch, validation left out
                self._round_seconds = started - self._launched_clock - self.exchange.paused
            self._sync_overlapped()
            self._launched_clock = self.clock()
            self._round_sync += self.exchange.seconds if self.options.resolved_link_aware else self.clock() - started
            self._time_round()
        elif self.k >= self.H:
            started = self.clock()
            self.transport.begin_round()
            if self.lagged:
                self._sync_lagged()
            else:
                self._sync()
            self._round_sync += self.clock() - started
            self._time_round()

    def _descend(self, y: Tensor, g: Tensor, theta: Tensor | float | None) -> Tensor:
        """One local step from ``y`` along ``g``; ``theta`` is :meth:`_theta_rows`, which sets plain steps' length."""
        rule = self.shared_rule
        if rule is not None:  # Adam with the second moment shared by every rank, frozen within the round
            lr = optimizer_lr(self.oracle.optimizer)  # type: ignore[attr-defined]
            self.pre_t += 1
            y_next, self.pre_m, self.pre_u = rule.step(
                y, g, lr=lr, m=self.pre_m, u=self.pre_u, v=self.pre_v, t=self.pre_t
            )
            return y_next
        if getattr(self.oracle, "descend", None) is None:
            return y - self._row_steps(theta) * g
        return torch.stack([descend(self.oracle, y[i], g[i], self.lr) for i in range(y.shape[0])])

    def prox_theta(self) -> Tensor | None:
        """``prox_rho``: per row, θ_m = 1/(2ρ·δ̂_m) from the row's own estimate, at least the user's SGD step.

        ``None`` without ``prox_rho`` or before the row's first estimate. θ_m follows δ̂ (state), so it moves at every
        sync with it and a resumed run recomputes it under its own options. Over the user's SGD a pull η/θ_m > 2 per
        step diverges, and a raw δ̂ holds the minibatch noise and can be large: θ_m is held at least the optimizer's
        step along a steady gradient, η/(1 − momentum), read when used (a scheduler moves η).
        """
        rho = self.options.prox_rho
        if rho is None or self.delta_hat is None:
            return None
        theta = 1.0 / (2.0 * float(rho) * self.delta_hat.clamp(min=torch.finfo(torch.float64).tiny))
        floor = self._sgd_step()
        return theta if floor is None else theta.clamp(min=floor)

    def _sgd_step(self) -> float | None:
        """The user's SGD step along a steady gradient, the largest lr/(1 − momentum) over its parameter groups.

        ``None`` without a user's optimizer, or under Adam-type ones (whose step does not scale the prox pull so).
        Momentum ≥ 1 (SGD's steps then grow without bound) is infinite: no prox pull at all.
        """
        optimizer = getattr(self.oracle, "optimizer", None)
        if optimizer is None or self.shared_rule is not None or not linear_steps(optimizer):
            return None
        steps = []
        for group in optimizer.param_groups:
            lr = group["lr"]
            lr = float(lr.item() if isinstance(lr, Tensor) else lr)
            momentum = float(group.get("momentum", 0.0) or 0.0)
            steps.append(lr / (1.0 - momentum) if momentum < 1.0 else math.inf)
        return max(steps, default=None)

    def _theta_rows(self, like: Tensor) -> Tensor | float | None:
        """θ of the prox term in force: ``theta`` (one for all rows), each row's θ_m (``prox_rho``, (R, 1)), or None."""
        theta = self.prox_theta()
        if theta is not None:
            return theta.to(device=like.device, dtype=like.dtype).unsqueeze(-1)
        return self.theta

    def _row_steps(self, theta: Tensor | float | None) -> Tensor | float:
        """The local step of plain gradient steps: ``lr``, or under ``prox_rho`` each row's, its θ_m's curvature added.

        With L known, a step s/L becomes s/(L + 1/θ_m) (the subproblem's smoothness); without it, 1/(1/lr + 1/θ_m).
        With ``correction="update"`` the step stays ``lr`` on every row: the update-space corrections e_m stand still
        at the optimum only if every row takes the same step (they sum to zero).
        """
        if not isinstance(theta, Tensor) or self.in_update_space:  # a fixed θ is in ``lr`` already
            return self.lr
        inverse = 1.0 / theta
        if self.L is not None:
            return self.lr * self.L / (self.L + inverse)
        return 1.0 / (1.0 / self.lr + inverse)

    def _corrected(self, y_next: Tensor) -> Tensor:
        """``correction="update"``: the optimizer's step, then this rank's update-space correction e_m."""
        if self.in_update_space and self.update_corr is not None:
            return y_next - self.update_corr
        return y_next

    def _gate(self, y: Tensor, g: Tensor, theta: Tensor | float | None) -> None:
        """Mark the rows whose round is done at ``y`` (after ``k`` steps): local solve accurate, or drifted.

        Solved (inexact DANE / S-DANE's criterion): ‖∇F_m(y)‖ ≤ gate_tol·‖y − x_r‖/θ, so the round's outer
        step is as good as an exact prox step; more local steps would not help. Without a prox term θ is
        1/(2δ̂), and a rank whose drift δ̂·‖y − x_r‖ reaches ``gate``·‖ĝ_r‖ is done too (its correction is
        stale). With neither θ nor δ̂ yet: ‖∇F_m(y)‖ ≤ gate_tol·‖ĝ_r‖. A prox term from the estimate (``prox_rho``)
        keeps the drift clause: the correction goes stale whatever holds the steps near the start, and without it
        the rounds on credit lengthened from a median of 8 steps to 31 (session 21).
        """
        gnorm = torch.linalg.vector_norm(self._need(self.ghat, "ghat"))
        residual = torch.linalg.vector_norm(g, dim=-1)
        dist = torch.linalg.vector_norm(y - self._center(), dim=-1)
        delta = None if self.delta_hat is None else self.delta_hat.to(device=y.device, dtype=y.dtype)
        if isinstance(theta, Tensor) and delta is not None:  # prox_rho: solved, or drifted (its correction is stale)
            solved = residual <= self.options.gate_tol * dist / theta[:, 0]
            done = solved | (delta * dist >= self.options.gate * gnorm)
        elif theta is not None:
            done = residual <= self.options.gate_tol * dist / theta
        elif delta is not None:
            done = (residual <= self.options.gate_tol * 2 * delta * dist) | (delta * dist >= self.options.gate * gnorm)
        else:
            done = residual <= self.options.gate_tol * gnorm
        self.done_at = torch.where((self.done_at == 0) & done.cpu(), self.k, self.done_at)

    def _anchor_round(self) -> Tensor:
        """Every worker's gradient at the anchor → ĝ_r on every process; corrections; δ̂."""
        t = self.transport
        grads = self.oracle.grads(self.anchor)
        gathered = t.gather(grads, tag="grad") if self.grad_estimate is None else self._gather_grads_compressed(grads)
        mean = torch.empty_like(self.anchor) if gathered is None else gathered.mean(dim=0)
        if self.downlink_compressor is None:
            (ghat,) = t.broadcast(mean, tag="anchor_grad")
        else:
            (ghat,) = self._compressed_downlink(ghat=mean)
        squares = self._broadcast_squares(self._mean_squares(gathered))
        if self.options.delta is None and self.prev_anchor is not None:
            self._estimate_delta(grads, ghat, self.noise_var)
        self.prev_anchor, self.prev_ghat, self.prev_grads = self.anchor, ghat, grads
        self.prev_noise = self.noise_var
        self._set_correction(ghat, grads)
        self._observe(ghat, squares)
        return ghat

    def _observe(self, ghat: Tensor, squares: Tensor | None) -> None:
        """``preconditioner="shared"``: the shared second moment after a new ĝ (the same on every process)."""
        rule = self.shared_rule
        if rule is None or squares is None:
            return
        self.pre_v = rule.observe(self.pre_v, squares, ghat, self.anchor, steps=self.pre_t - self.pre_seen)
        self.pre_seen = self.pre_t

    def _mean_squares(self, received: Tensor | None) -> Tensor | None:
        """``preconditioner="shared"``: on the hub the ranks' mean squared gradient, elsewhere a buffer for it."""
        if self.shared_rule is None:
            return None
        if not self.transport.is_hub:
            return torch.empty_like(self.anchor)
        return self._need(received, "received").square().mean(dim=0)

    def _broadcast_squares(self, squares: Tensor | None) -> Tensor | None:
        """The hub's :meth:`_mean_squares` to every process, in its own broadcast (tag ``"precond"``)."""
        if squares is None:
            return None
        (squares,) = self.transport.broadcast(squares, tag="precond")
        return squares

    def _estimate_delta(self, grads: Tensor, ghat: Tensor, noise: Tensor | None = None) -> None:
        """δ̂ from the change of this rank's correction between the last two anchors.

        ‖(∇f_m(x_r) − ∇f_m(x_{r−1})) − (ĝ_r − ĝ_{r−1})‖ / ‖x_r − x_{r−1}‖ is at most δ with exact gradients. With
        minibatches it also holds the batches' noise, which does not shrink with the step, so the raw δ̂ errs high
        and rounds short: the safe side. ``delta_estimate="debiased"`` subtracts the noise's expected share of the
        squared change, (1 − 1/M)·(v_r + v_{r−1}) for M ranks with gradient noise v (``noise``, this rank's, taken
        for every rank's), before the square root. δ̂ is a maximum that forgets, ``max(estimate, 0.9 δ̂)``, so one
        spike does not pin the rounds short for good. Under ``overlap`` each rank's gradients come from its own start
        and path, not the anchor, so the raw δ̂ also holds the spread of the ranks' paths; the round's spread that
        ``debiased`` subtracts includes the gradient's change along the path, and takes much of it out too.
        """
        step = float(torch.linalg.vector_norm(self.anchor - self._need(self.prev_anchor, "prev_anchor")))
        if step == 0.0:
            return
        change = (grads - self._need(self.prev_grads, "prev_grads")) - (ghat - self._need(self.prev_ghat, "prev_ghat"))
        squared = torch.linalg.vector_norm(change, dim=-1, dtype=torch.float64).square().cpu()
        if noise is not None:
            before = noise if self.prev_noise is None else self.prev_noise
            share = 1.0 - 1.0 / self.transport.num_workers
            squared = (squared - share * (noise + before)).clamp(min=0.0)
        estimate = squared.sqrt() / step
        self.delta_hat = estimate if self.delta_hat is None else torch.maximum(0.9 * self.delta_hat, estimate)

    def _sync(self) -> None:
        """Compressed model changes → the hub's outer step → the new anchor everywhere; the next H."""
        t = self.transport
        change, previous = self.anchor - self._need(self.y, "y"), self.anchor
        received = self._gather_change(change)
        target = torch.empty_like(self.anchor)
        if t.is_hub:
            target = self._outer_step(self._need(received, "received").mean(dim=0))
        if self.downlink_compressor is None:
            (self.anchor,) = t.broadcast(target, tag="anchor")
        else:
            self.anchor = self._compressed_anchor(target)
        self._record_round(change, previous)
        self.history_h = [*self.history_h, self.H]
        if self.options.sync == "gated":
            self.H = self._next_length(t.agree(self.done_at, tag="gate"), cost=self._hub_cost())
        self.noise_var = self._round_noise()  # the next anchor gradient's: one minibatch of this round's spread
        self._reset_round_sums()
        self.y, self.k, self.phase = None, 0, "anchor"
        self.done_at = torch.zeros_like(self.done_at)

    def _hub_cost(self) -> float | None:
        """``correction="fresh"``: the hub's :attr:`sync_steps` on every process (one broadcast, tag ``"gate"``)."""
        if not self.options.resolved_link_aware:
            return None
        cost = self.sync_steps
        (sent,) = self.transport.broadcast(self.anchor.new_full((1,), -1.0 if cost is None else cost), tag="gate")
        value = float(sent.item())
        return None if value < 0 else value

    def _sync_lagged(self) -> None:
        """One gather (model changes, anchor gradients, gate counts) and one broadcast (anchor, ĝ, next H).

        The corrections of the next round are ĝ_r − ∇f_m(x_r), one anchor old (SCAFFOLD's lag): they differ
        from the fresh ones by O(δ‖x_{r+1} − x_r‖) and save the anchor round's two collectives.
        """
        t = self.transport
        grads = self._round_grads(self.anchor)
        change = self.anchor - self._need(self.y, "y")
        counts = self.done_at.to(device=grads.device, dtype=grads.dtype).unsqueeze(-1)
        dense = isinstance(self.compressor, Identity) and self.error_memory is None and self.grad_estimate is None
        if dense:  # one dense message per worker: [Δ_m, ∇f_m(x_r), count], values at ``message_dtype``
            d, wire = self.dim, self.wire_dtype
            shift = None
            if wire is not None:  # the gradients travel as changes to the shift both ends hold (overlap's scheme)
                shift = self.wire_shift if self.wire_shift is not None else torch.zeros_like(grads)
            sent = grads if shift is None else grads - shift
            message = round_values(torch.cat([change, sent, counts], dim=-1), 2 * d, wire)
            gathered = t.gather(pack(message, 2 * d, wire), tag="sync")
            if shift is not None:  # from here on the change and gradients are the ones the hub averages
                change, grads = message[:, :d], shift + message[:, d : 2 * d]
                self.wire_shift = grads
            received_change = received_grads = received_counts = None
            if gathered is not None:
                rows = unpack(gathered, 2 * d, grads.dtype)
                received_change, received_grads, received_counts = rows[:, :d], rows[:, d : 2 * d], rows[:, -1]
                if shift is not None:
                    received_grads = self.hub_shift = received_grads + (
                        self.hub_shift if self.hub_shift is not None else 0.0
                    )
        else:
            received_change = self._gather_change(change)
            if self.grad_estimate is None:
                gathered = t.gather(torch.cat([grads, counts], dim=-1), tag="grad")
                received_grads = None if gathered is None else gathered[:, : self.dim]
                received_counts = None if gathered is None else gathered[:, -1]
            else:
                received_grads = self._gather_grads_compressed(grads)
                flags = t.agree(self.done_at, tag="gate")
                received_counts = flags.to(grads.dtype)
        target, ghat, length = torch.empty_like(self.anchor), torch.empty_like(self.anchor), self.anchor.new_zeros(1)
        mean_change = torch.empty_like(self.anchor) if self.in_update_space else None
        squares = self._mean_squares(received_grads)
        if t.is_hub:
            averaged_change = self._need(received_change, "received").mean(dim=0)
            mean_change = averaged_change if self.in_update_space else None
            target = self._outer_step(averaged_change)
            ghat = self._need(received_grads, "received").mean(dim=0)
            counts_all = self._need(received_counts, "received").round().to(torch.int64).cpu()
            length = self.anchor.new_full((1,), float(self._next_length(counts_all, cost=self.sync_steps)))
        if self.downlink_compressor is None:  # one message: [x_{r+1}, ĝ_r, (Δ̄,) (mean squared gradient,) next H]
            extra = tuple(x for x in (mean_change, squares) if x is not None)
            target, ghat, *rest = t.broadcast(target, ghat, *extra, length, tag="anchor")
            new_anchor, length = target, rest[-1]
            if mean_change is not None:
                mean_change, *rest = rest
            squares = rest[0] if squares is not None else None
        else:
            new_anchor, ghat = self._compressed_downlink(target, ghat)
            (length,) = t.broadcast(length, tag="gate")
            squares = self._broadcast_squares(squares)
            if mean_change is not None:  # dense: the e_m sum to zero only if every rank subtracts the same Δ̄
                (mean_change,) = t.broadcast(mean_change, tag="update_corr")
        if mean_change is not None:
            self._update_correction(mean_change, change if dense else self._need(self._own_change, "own_change"))
        noise = self._round_noise()
        if self.options.delta is None and self.prev_anchor is not None:
            self._estimate_delta(grads, ghat, noise)
        self.prev_anchor, self.prev_ghat, self.prev_grads = self.anchor, ghat, grads
        self.noise_var = self.prev_noise = noise
        self._set_correction(ghat, grads)
        self._observe(ghat, squares)
        previous, self.anchor = self.anchor, new_anchor
        self._record_round(change, previous)
        self.history_h = [*self.history_h, self.H]
        if self.options.sync == "gated":
            self.H = int(length.item())
        self.y, self.k, self.phase, self.anchor_grads = None, 0, "anchor", None
        self._reset_round_sums()
        self.done_at = torch.zeros_like(self.done_at)

    # ------------------------------------------------------------------------------- overlap
    def _start(self) -> Tensor:
        """Where this process's rows start the round: the anchor, or under ``overlap`` their merged iterates."""
        if self.base is not None:
            return self.base
        return self.anchor.expand(self.transport.workers.numel(), -1)

    def _center(self) -> Tensor:
        """What the drift and the prox term measure from: the anchor, or under ``overlap`` the round's start."""
        return self.anchor if self.base is None else self.base

    @property
    def agrees_in_band(self) -> bool:
        """Whether faults travel in the method's own messages (``overlap``) instead of a per-round agreement."""
        return self.overlap

    def _sync_overlapped(self) -> None:
        """Send this round's message, take the last round's reply, and go on without waiting for this one.

        Round r's message [Δ_m, g_m, count, fault, stop] (Δ_m = b_m − y_m, this round's progress from its start
        b_m) leaves in the background. The reply to round r − 1's message, [Δ̄, ĝ, next H, fault, stop], is taken
        now, one round late; every rank applies the outer step to it, x_r = outer(x_{r−1}, Δ̄), the same op on the
        same values as the hub, so all hold the same anchor and outer state (as DiLoCo's ranks each run the outer
        optimizer on the all-reduced change). The rank starts the next round where the outer step would put the
        anchor if every rank's change were its own, b_m ← outer(x_r, Δ_m) (``eager="full"``; after Kale et al., 2025,
        "Eager Updates For Overlapped Communication and Computation in DiLoCo"): its progress of this round counts
        at once, with the outer momentum's weight. Under plain averaging that is x_r + (y_m − b_m). With
        ``eager="share"``, b_m ← outer(x_r, Δ_m/M), Kale et al.'s own weighting; with ``eager="once"``,
        b_m ← outer(x_r, Δ_m/g), g the outer step's gain on Δ (:meth:`_eager_change`). The next round's correction is
        ĝ − g_m of the joined round.

        With ``message_dtype`` the values travel rounded (:mod:`lit_commeff.transport.wire`), and a rank's
        gradients travel as their change from a shift s_m that the rank and the hub both hold, the gradients the hub
        reconstructed last round: it sends q_m = round(g_m − s_m) and both ends take g_m' = s_m + q_m (DIANA's
        shifts; EF21's estimate with a bf16 compressor). The shards' gradients at the optimum differ and do not
        vanish, so rounding them outright left the corrections an error that does not vanish either: a floor near
        1e-10 on the tests' label-sorted ridge, which the shifts remove (``test_overlap_bf16_messages_*``).
        """
        t = self.transport
        y, start, finished = self._need(self.y, "y"), self._start(), self.H
        grads = self._round_grads(start)
        change = start - y
        bad = torch.zeros(change.shape[0], dtype=torch.bool, device=change.device)
        if not (all_finite(change) and all_finite(grads)):  # a row's round is lost: it reports it and sends zeros
            bad = ~(torch.isfinite(change).all(dim=-1) & torch.isfinite(grads).all(dim=-1))
            change = torch.where(bad.unsqueeze(-1), torch.zeros_like(change), change)
            grads = torch.where(bad.unsqueeze(-1), torch.zeros_like(grads), grads)
        noise = self._round_noise()  # before the reply: it needs the outbox's noise, this round's goes with the outbox
        fault = (bad | self.outbound_fault).to(change.dtype)
        flags = torch.stack([fault, torch.full_like(fault, float(self.outbound_stop))], dim=-1)
        counts = self.done_at.to(device=change.device, dtype=change.dtype).unsqueeze(-1)
        self.inbound = None
        if self.outbox is not None:
            if not self.exchange.in_flight:  # resumed from a checkpoint written while it was in flight
                self._launch()
            t.begin_round()
            self._apply_reply(self.exchange.join(t.ledger))
        if self.wire_dtype is not None:  # the gradients travel as changes to the shift both ends hold (below)
            shift = self.wire_shift if self.wire_shift is not None else torch.zeros_like(grads)
            grads = torch.where(bad.unsqueeze(-1), grads, grads - shift)
        # kept as the hub will read it: the next correction ĝ − g_m' uses the gradients the hub averaged
        message = round_values(torch.cat([change, grads, counts, flags], dim=-1), 2 * self.dim, self.wire_dtype)
        self.history_h = [*self.history_h, finished]
        self.outbox, self.outbox_cost, self.outbox_h, self.outbox_noise = message, self.sync_steps, finished, noise
        self._launch()
        self.base = self._outer_target(self._eager_change(change), self.anchor, self.momentum, self.prev_mean)[0]
        self.y, self.k, self.phase, self.anchor_grads = None, 0, "anchor", None
        self._reset_round_sums()
        self.done_at = torch.zeros_like(self.done_at)

    def _eager_change(self, change: Tensor) -> Tensor:
        """The change a rank's next round starts from while the average is in flight (``eager``).

        ``full``: its own change Δ_m stands for the average. ``share``: Δ_m/M, its share of the average, the other
        ranks' changes counting once their average arrives (Kale et al., 2025's eager update: every change is
        applied once, the others' a round late). Where the shards differ, Δ_m leans toward the rank's own shard.
        ``once``: Δ_m/g, g being the outer step's gain on Δ (:meth:`_outer_gain`): the start is the outer step's
        look-ahead plus the rank's own change, applied once. Under ``full`` a rank's deviation from the average,
        Δ_m − Δ̄, offsets its next start by g·(Δ_m − Δ̄); its next round's local steps undo a fraction K ≤ 1 of that
        offset, which is its next deviation, so deviations scale by g·K a round: DiLoCo's g = 0.7·1.9 = 1.33
        diverged with stiff local steps (K near 1) on every heterogeneous ridge tried (session 19). ``once`` keeps
        g·K ≤ 1; its start's mean trails the anchor-to-be by (g − 1)·Δ̄ until the average arrives.
        """
        eager = self.options.resolved_eager
        if eager == "full":
            return change
        if eager == "once":
            return change / self._outer_gain()
        return change / self.transport.num_workers

    def _outer_gain(self) -> float:
        """The outer step's derivative in Δ: outer(x, Δ) = outer(x, 0) − gain·Δ (both outer steps are affine in Δ).

        Nesterov: b' = μb + Δ, x' = x − lr(μb' + Δ), so lr·(1 + μ); extrapolation: x̄ = x − Δ, x' = x̄ + β(x̄ − x̄_prev),
        so 1 + β once there is an x̄_prev.
        """
        if self.options.outer == "nesterov":
            return self.outer_lr * (1.0 + self.outer_momentum)
        return 1.0 + (self.beta if self.prev_mean is not None else 0.0)

    def _launch(self) -> None:
        """Start the exchange of :attr:`outbox` from the current outer state (the same inputs after a resume)."""
        message, cost, current, known = (
            self._need(self.outbox, "outbox"),
            self.outbox_cost,
            self.outbox_h,
            self._drift_known(),
        )
        anchor, momentum, prev_mean, shifts = self.anchor, self.momentum, self.prev_mean, self.hub_shift
        self.exchange.launch(
            lambda transport: self._exchange(
                transport, message, anchor, momentum, prev_mean, cost, current, known, shifts
            )
        )

    def _exchange(
        self,
        t: Transport,
        message: Tensor,
        anchor: Tensor,
        momentum: Tensor | None,
        prev_mean: Tensor | None,
        cost: float | None,
        current: int,
        known: bool,
        shifts: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """One gather and one broadcast, run off the training thread: reads only its arguments.

        Returns the reply every rank receives and, on the hub under ``message_dtype``, every rank's gradients as
        reconstructed from ``shifts`` (the next shifts, if the round is not void).

        Values travel at ``message_dtype``, headers bit for bit (:mod:`lit_commeff.transport.wire`).
        The hub averages the changes and gradients, and voids the round (Δ̄ = 0 and the fault: no rank applies
        it) if any message reports a fault or is not finite, or the outer step it leads to is not; the reply names
        the first faulty rank (+1, 0: none) and carries rank 0's stop bit, so every rank learns both with the
        reply, with no agreement of its own.
        """
        d, wire, dtype = self.dim, self.wire_dtype, message.dtype
        gathered = t.gather(pack(message, 2 * d, wire), tag="sync")
        reply = pack(torch.zeros(2 * d + 3, dtype=dtype, device=message.device), 2 * d, wire)
        if t.is_hub:
            rows = unpack(self._need(gathered, "gathered"), 2 * d, dtype)
            bad = [w for w in range(rows.shape[0]) if rows[w, 2 * d + 1] > 0 or not all_finite(rows[w])]
            stop = rows[t.hub, 2 * d + 2]
            mean_change, ghat, length = torch.zeros_like(anchor), torch.zeros_like(anchor), float(current)
            if wire is not None:
                received = rows[:, d : 2 * d] + (shifts if shifts is not None else 0.0)
                rows = torch.cat([rows[:, :d], received, rows[:, 2 * d :]], dim=-1)
            if not bad:  # the averages as every rank will read them
                means = round_values(rows[:, : 2 * d].mean(dim=0), 2 * d, wire)
                mean_change, ghat = means[:d], means[d:]
                target = self._outer_target(mean_change, anchor, momentum, prev_mean)[0]
                if all_finite(target) and all_finite(ghat):
                    counts = rows[:, 2 * d].round().to(torch.int64).cpu()
                    length = float(self._length(counts, cost=cost, current=current, known=known))
                else:
                    bad, mean_change, ghat = [t.hub], torch.zeros_like(anchor), torch.zeros_like(anchor)
            tail = rows.new_tensor([length, float(bad[0] + 1) if bad else 0.0, float(stop)])
            reply = pack(torch.cat([mean_change, ghat, tail]), 2 * d, wire)
        (reply,) = t.broadcast(reply, tag="anchor")
        return unpack(reply, 2 * d, dtype), rows[:, d : 2 * d] if t.is_hub and wire is not None else None

    def _apply_reply(self, joined: tuple[Tensor, Tensor | None]) -> None:
        """Take a joined reply: the outer step on every rank (anchor, momentum), ĝ, corrections, δ̂, the next H."""
        d, (reply, received) = self.dim, joined
        length, fault, stop = (float(v) for v in reply[2 * d :].tolist())
        self.inbound = (int(fault) - 1 if fault > 0 else None, stop > 0)
        if fault > 0:  # void: the anchor, outer state, ĝ, corrections and H stay as they were
            self.voided_rounds += 1
            return
        sent = self._need(self.outbox, "outbox")
        mean_change, ghat, grads = reply[:d], reply[d : 2 * d], sent[:, d : 2 * d]
        if self.wire_dtype is not None:  # the shifts move to the gradients both ends reconstructed
            grads = self.wire_shift = (self.wire_shift if self.wire_shift is not None else 0.0) + grads
            self.hub_shift = received
        if self.options.delta is None and self.prev_anchor is not None:
            self._estimate_delta(grads, ghat, self.outbox_noise)
        self.prev_anchor, self.prev_ghat, self.prev_grads = self.anchor, ghat, grads
        self.prev_noise = self.outbox_noise
        self._set_correction(ghat, grads)
        previous = self.anchor
        self.anchor, self.momentum, self.prev_mean = self._outer_target(
            mean_change, self.anchor, self.momentum, self.prev_mean
        )
        self._record_round(sent[:, :d], previous)
        if self.options.sync == "gated":
            self.H = int(length)

    def close(self, *, timeout: float | None = 60.0) -> None:
        """End of training: wait for the exchange still in flight and book its bytes (its reply goes unused).

        Every rank launched it, so it completes; a checkpoint keeps its message, and a resumed run sends it again.
        """
        exchange = self.exchange
        if exchange.in_flight and exchange.close(timeout=timeout) and len(exchange.records):
            self.transport.begin_round()
            exchange.records.replay(self.transport.ledger)

    def _round_grads(self, start: Tensor) -> Tensor:
        """The gradients a lagged sync sends: the round's mean (``averaged``) or those at its ``start``.

        A first step dropped by the non-finite guard (``"skip"``) left no start gradients: they are evaluated now.
        """
        if self.averaged and self.grad_sum is not None:
            return self.grad_sum / self.grad_count
        return self.anchor_grads if self.anchor_grads is not None else self.oracle.grads(start)

    def _set_correction(self, ghat: Tensor, grads: Tensor) -> None:
        """Keep ĝ and the corrections c_m = ĝ − g_m; with ``correction_memory`` their average over rounds.

        Each round's c_m sum to zero over the ranks, so an average of them with the same weights on every rank does
        too: the averaged model change still sees no net correction.
        """
        fresh = ghat - grads
        memory = self.options.resolved_correction_memory
        self.ghat = ghat
        self.corr = fresh if memory == 0 or self.corr is None else torch.lerp(fresh, self.corr, memory)

    def _update_correction(self, mean_change: Tensor, own: Tensor) -> None:
        """``correction="update"``: e_m ← e_m + (Δ̄ − Δ_m)/k after a round of k steps (SCAFFOLD's option II).

        Δ_m is the change as the hub received it (after compression), so the e_m sum to zero over the ranks.
        """
        step = (mean_change - own) / max(self.k, 1)
        self.update_corr = step if self.update_corr is None else self.update_corr + step

    def _record_round(self, change: Tensor, previous_anchor: Tensor) -> None:
        """Keep :attr:`last_round` (this process's first row)."""
        ghat = 0.0 if self.ghat is None else float(torch.linalg.vector_norm(self.ghat))
        own = None if self.corr is None else self.corr[0]
        corr = 0.0 if own is None else float(torch.linalg.vector_norm(own))
        moved = 0.0
        if own is not None and self._recorded_corr is not None:
            moved = float(torch.linalg.vector_norm(own - self._recorded_corr))
        self._recorded_corr = own
        self.last_round = {
            "change": float(torch.linalg.vector_norm(change[0])),
            "anchor_move": float(torch.linalg.vector_norm(self.anchor - previous_anchor)),
            "correction": corr / ghat if ghat > 0 else 0.0,
            "correction_change": moved / ghat if ghat > 0 else 0.0,
        }

    def state_refs(self) -> dict[str, Any]:
        # the sync's mode, checked on load: resumed in the other mode a run would drop, or wait for, a message in flight
        return {**super().state_refs(), "overlap": self.overlap}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = state.get("overlap")
        if saved is None:  # written before session 17: only overlap leaves a merged start or a message in flight
            saved = state.get("base") is not None or state.get("outbox") is not None
        if bool(saved) != self.overlap:
            flag = str(bool(saved)).lower()
            raise ValueError(
                f"overlap: the checkpoint was written with overlap={flag} but this run has "
                f"overlap={str(self.overlap).lower()} (`None` turns it on over gloo: for SGD since session 17, for "
                f"Adam since session 25); resume "
                f"with strategy.overlap={flag}."
            )
        # checkpoints written before an option existed hold none of its state (shared preconditioner, averaged
        # or update-space correction, link_aware's timings): start those from their initial values
        defaults = dict.fromkeys(
            (
                "pre_m", "pre_u", "pre_v", "grad_sum", "step_seconds", "sync_seconds", "update_corr", "grad_sq",
                "noise_var", "prev_noise",
            )
        ) | dict.fromkeys(("pre_t", "pre_seen", "grad_count", "outbox_h", "voided_rounds"), 0)  # fmt: skip
        defaults |= dict.fromkeys(("base", "outbox", "outbox_cost", "outbox_noise", "wire_shift", "hub_shift"))
        # before session 14 the first sync was folded in: a checkpoint with a timing already has its warm-up behind it
        defaults["timed_rounds"] = 0 if state.get("sync_seconds") is None else 2
        super().load_state_dict({**defaults, **state})

    def _compressed_anchor(self, target: Tensor) -> Tensor:
        """The new anchor every process holds after the hub sends ``C(target − anchor)`` (bit for bit the same)."""
        return self._compressed_downlink(target)[0]

    def _compressed_downlink(self, target: Tensor | None = None, ghat: Tensor | None = None) -> tuple[Tensor, ...]:
        """One compressed broadcast of the new anchor and/or ĝ, each as a change to what every process holds.

        The anchor moves by ``C(target − anchor)``; ĝ by ``C(ĝ − ĝ_held)`` (EF21-P: what the compressor drops
        stays in the next round's difference). Every process ends with the same values bit for bit.
        """
        held = self.ghat_held if self.ghat_held is not None else torch.zeros_like(self.anchor)
        changes = [x for x in (target, ghat) if x is not None]
        bases = [b for b, x in ((self.anchor, target), (held, ghat)) if x is not None]
        steps = iter(
            self.transport.broadcast_compressed(
                *[x - b for x, b in zip(changes, bases, strict=True)],
                compressor=self._need(self.downlink_compressor, "downlink_compressor"),
                step=self.round,
                key=f"{self.name}/down" if target is not None else f"{self.name}/down_g",
                tag="anchor_compressed",
            )
        )
        out = []
        if target is not None:
            out.append(self.anchor + next(steps))
        if ghat is not None:
            self.ghat_held = held + next(steps)
            out.append(self.ghat_held)
        return tuple(out)

    def _gather_grads_compressed(self, grads: Tensor) -> Tensor | None:
        """The EF21-compressed gather of the anchor gradients: every estimate on the hub (``None`` elsewhere)."""
        estimate = self._need(self.grad_estimate, "grad_estimate")
        own, received = self.transport.gather_compressed(
            estimate.compensate(grads),
            self._need(self.grad_compressor, "grad_compressor"),
            step=self.round,
            key=f"{self.name}/grad",
            tag="grad_compressed",
        )
        estimate.update(own)
        if not self.transport.is_hub:
            return None
        estimate.update_aggregate(self._need(received, "received"))
        return estimate.aggregate

    def _gather_change(self, change: Tensor) -> Tensor | None:
        """The compressed gather of the model changes (error feedback for biased compressors)."""
        t = self.transport
        if self.error_memory is not None:
            if self.error_memory.rows is None:
                self.error_memory.reset(change)
            sent = self.error_memory.compensate(change)
            own, received = t.gather_compressed(sent, self.compressor, step=self.round, key=self.name, tag="delta")
            self.error_memory.update(sent, own)
            self._own_change = own
            return received
        own, received = t.gather_compressed(change, self.compressor, step=self.round, key=self.name, tag="delta")
        self._own_change = own
        return received

    def _outer_step(self, mean_change: Tensor) -> Tensor:
        """The hub's new anchor from the averaged model change Δ̄."""
        target, self.momentum, self.prev_mean = self._outer_target(
            mean_change, self.anchor, self.momentum, self.prev_mean
        )
        return target

    def _outer_target(
        self, mean_change: Tensor, anchor: Tensor, momentum: Tensor | None, prev_mean: Tensor | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """The outer step as a function: (new anchor, new Nesterov buffer, new x̄_prev); reads no state."""
        if self.options.outer == "nesterov":
            target, momentum = nesterov_outer_step(
                anchor, mean_change, momentum, lr=self.outer_lr, momentum=self.outer_momentum
            )
            return target, momentum, prev_mean
        mean = anchor - mean_change
        target = mean if prev_mean is None else mean + self.beta * (mean - prev_mean)
        return target, momentum, mean

    def _next_length(self, done_at: Tensor, *, cost: float | None = None) -> int:
        """The next round's H from every worker's count (0: not done in this round) and a sync's ``cost`` in steps.

        The drift gate's choice H_drift is the first worker's count (the smallest): a stale correction on one rank
        biases the average, and where the local solves finish together the smallest count is as good as the
        largest (a9a, both splits: the same rounds). The largest count instead let a rank that never saw drift
        keep the rounds long while others drifted: without a prox term on label-sorted a9a that diverged. No
        worker done: twice this round, except under ``link_aware`` before the gate can measure drift (no δ̂ or θ
        yet), where the round keeps its length. H_drift is held within [``min_inner_steps``, ``inner_steps``], the
        rounds the drift gate alone would choose; with ``cost`` (``link_aware``) the round lasts √(H_drift·cost)
        instead (under ``overlap``: ``cost``, see :meth:`_length`), within the same bounds. (Unbounded, a rank done
        after one step gave √cost, under ``min_inner_steps`` on every B3 workload: session 13.)
        """
        return self._length(done_at, cost=cost, current=self.H, known=self._drift_known())

    def _length(self, done_at: Tensor, *, cost: float | None, current: int, known: bool) -> int:
        """:meth:`_next_length` as a function of the round's length ``current`` and whether drift was ``known``.

        Under ``overlap`` with ``cost`` (the whole exchange's time in steps of the round's own training time) a
        round lasts a, within the bounds: a round of H steps takes max(H, a) steps' time instead of H + a, so a
        round shorter than a waits for the exchange and one longer only drifts more; a round's progress
        H/(1 + H/H_drift) grows with H, so rounds of a make the most of the time whatever H_drift is. √(H_drift·a)
        kept them shorter than the exchange: credit and churn ``by_group`` over ``edge`` waited at the join (B3
        session 28: rounds of a reached the target 1.11× and 1.21× faster by the medians, ``docs/gated-dane.md``).
        Session 15's rounds of a (15–50 steps, full-precision messages and the ``full`` start then) missed credit's
        seed 0; with bf16 messages and the ``once`` start they lasted 9–12 steps by the medians there and reached it.
        """
        lo, hi = self.options.min_steps, self.options.inner_steps
        done = done_at[done_at > 0]
        if done.numel():
            drift = int(done.min())
        elif self.options.resolved_link_aware and not known:
            # No rank could be gated on drift yet (no δ̂ or θ): "not done" says nothing about the shards, and
            # doubling, then multiplying by the link's cost, made credit's third round 29 steps (session 14).
            drift = current
        else:
            drift = 2 * current
        drift = min(hi, max(lo, drift))
        if cost is None:
            length = drift
        elif self.overlap:  # a round of H takes max(H, a) steps' time, so rounds shorter than a wait for nothing
            length = round(cost)
        else:
            length = round(math.sqrt(drift * cost))
        return min(hi, max(lo, length))

    def _drift_known(self) -> bool:
        """Whether this round's gate could measure drift: a prox term θ or a similarity estimate δ̂ was in force."""
        return self.theta is not None or self.delta_hat is not None


__all__ = ["GatedDANE"]
