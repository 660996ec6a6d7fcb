"""OLGA and EF-OLGA: accelerated, compressed, similarity-exploiting distributed optimisation."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from lit_commeff.algorithms.base import Algorithm, LocalOracle
from lit_commeff.algorithms.memory import EF21Estimate, EF21PDownlink, ErrorFeedback
from lit_commeff.algorithms.params import OlgaParams, olga_params, paper_omega
from lit_commeff.compression.seeding import SHARED_WORKER, generator
from lit_commeff.ledger import Direction
from lit_commeff.options import EFOLGAOptions, OLGAOptions, OptionError
from lit_commeff.transport import Transport

_AVERAGING = ("anchor_acc", "y_acc")  # phases of an averaged dense round (anchor_batches > 1)


class OLGA(Algorithm):
    """OLGA: accelerated, compressed, similarity-exploiting distributed optimisation.

    Bylinkin & Beznosikov, AAAI'25, "Accelerated Methods with Compressed Communications for
    Distributed Optimization Problems under Data Similarity", arXiv 2412.16414, Algorithms 1 and 2).

    Outer loop (Katyusha-X style acceleration): ``x = τ z + (1 − τ) y``, an inner epoch from ``x``,
    a dense round at the epoch's output ``y``, then the z-step
    ``z ← (z + αμ y − α G) / (1 + αμ)`` with ``G = p (∇(f_1 − f)(x) − ∇(f_1 − f)(y) + (x − y)/θ)``.
    Inner epoch of ``N ~ Geom(p)`` compressed rounds (N on {1, 2, …}, the same on every process):
    worker m sends ``Q(∇f_m(x_k) − ∇f_1(x_k) − ∇f_m(x_0) + ∇f_1(x_0))``, small under similarity, and
    the hub solves ``x_{k+1} = argmin <t_k, x − x_k> + ||x − x_k||²/(2θ) + f_1(x)`` with
    ``t_k = mean_m Q(·) − ∇f_1(x_0) + ∇f(x_0)``. Per outer iteration: 2 dense rounds + N compressed.

    Rounds, as one :meth:`step` each (``phase`` says which comes next):
    ``anchor`` (broadcast x and ∇f_1(x); dense gather of ∇f_m(x)), ``inner`` (broadcast x_k and
    ∇f_1(x_k), except in the first, which reuses the anchor's; compressed gather), ``y`` (broadcast y;
    dense gather of ∇f_m(y); outer update). Hub-only tensors are ``None`` on other processes.

    Parameters follow :func:`~lit_commeff.algorithms.params.olga_params`: presets ``theory``
    (Corollary 1), ``similarity`` (θ = 1/(2δ)) and ``auto`` (θ = 1/(2δ̂) with the running maximum of
    ``δ̂_m = ||∇(f_m − f)(y) − ∇(f_m − f)(x)|| / ||y − x||`` measured from the dense rounds, starting
    from ``delta0``). As in the paper's experiments the formulas take ω = d/K for RandK (our
    ``omega(d) + 1``); pass ``omega=`` to override.

    Args:
        transport: Message transport (hub = worker 0).
        oracle: Local gradients and the hub's prox solver.
        x0: Starting point ``y_0 = z_0``.
        options: The method's options, :class:`~lit_commeff.options.OLGAOptions` (EF-OLGA:
            :class:`~lit_commeff.options.EFOLGAOptions`), checked when built.
        omega: Compressor constant fed to the formulas (default: the paper's convention).
        estimate_delta: Track δ̂ from the dense rounds (default: under ``auto`` and with a gate, which
            need it; it costs one extra ``(M, d)`` block on the hub).
        worker_slices: Simulator only (a transport holding every worker, e.g.
            :class:`~lit_commeff.transport.SimulatorTransport`): run every round over slices of this many
            workers and keep no ``(M, d)`` block. Each slice's gradients are evaluated (the oracle's
            ``grads_slice``), its inner-round differences recomputed from ∇f_m(x_0) instead of kept from the
            anchor, compressed and decoded, and only their sum kept; dense rounds keep only the mean gradient.
            Memory is O(worker_slices · d) beyond the problem, for one more gradient evaluation per worker per
            inner round. The messages, their seeds and the ledger are the same as without it; the iterates
            differ only by the order of the sums over workers (float rounding). Needs the plain method: no
            error feedback, ``dense_compressor``, ``downlink_compressor``, δ̂ estimate (``auto``, ``gate``),
            ``diagnostics``, ``same_batch``, ``local_steps`` or ``anchor_batches`` > 1.
        **kwargs: Instead of ``options``: its fields, over the paper's defaults
            (``OLGAOptions.paper_defaults``: θ from the preset, ``accelerate=True``, ``output="y"``).

    Options (the fields of ``OLGAOptions``; their defaults live there):
        compressor: Unbiased compressor Q for the inner rounds (an instance or a registered name).
        mu: Strong-convexity constant μ of f.
        delta: Hessian similarity δ (required by ``theory`` and ``similarity`` unless θ is given).
        preset: ``theory``, ``similarity`` or ``auto``.
        delta0: ``auto`` only: δ used before the first estimate (e.g. the smoothness L, a safe
            upper bound).
        p, theta, tau, alpha: Explicit values override the preset.
        gate: Similarity gate (our extension, off by default): after each inner round the hub ends the
            epoch early when ``δ̂ · ||x_k − x_0|| ≥ gate · ||∇f(x_0)||`` (the drift makes the anchor stale)
            and broadcasts the decision (one scalar, tag ``gate``); the geometric draw stays the cap.
        diagnostics: Record per-round norms in :attr:`diagnostics` (a few vector norms per round).
        same_batch: SVRG-style differences for minibatch oracles (our extension): each process evaluates
            ``∇f_m(x_k) − ∇f_m(x_0)`` on one batch and the hub broadcasts its own same-batch difference in
            place of ``∇f_1(x_k)``. Full-batch iterates are unchanged; with minibatches the batch noise
            cancels inside each difference. Costs one more gradient per process per inner round (two on
            the hub).
        accelerate: Katyusha-X momentum (the paper's method). ``False`` (our extension for non-convex
            training) takes x_{k+1} = y_{k+1}: then the y round's dense gradients are the next epoch's
            anchor, so each outer iteration has one dense round instead of two (three for EF-OLGA, whose
            error round only feeds the momentum step), and z, τ and α are unused.
        output: ``"y"`` (the paper's output, which changes once per outer iteration) or ``"last"`` (our
            extension for training: the newest iterate every process holds, i.e. x_k after each inner
            round and y after each y round; at the end of an epoch both are y).
        local_steps: H ≥ 1 (our extension): training steps per inner round. In each of a round's H steps every
            process adds its gradient at the round's centre x_k on that step's batch to a running average,
            and the hub takes its prox steps (the oracle's ``prox_from``; an exact solver solves once per
            round) with the round's correction. Only the first step of rounds k ≥ 1 communicates: the hub
            sends x_k, its last iterate, and its own average at x_{k−1}; the others send the compressed
            difference of their averages at x_{k−1}, so the correction the hub uses in round k is
            ∇(f − f_1)(x_{k−1}), one round stale (an error of at most δ·||x_k − x_{k−1}||). Round 0 of an
            epoch uses the anchor's exact correction and does not communicate. Needs ``gate=None`` and
            ``same_batch=False``.
        dense_compressor: Compress the gradient gathers of the anchor and y rounds too (our extension;
            ``None``, the default, keeps them dense as in the paper). EF21-style (Richtárik et al., 2021):
            each worker keeps an estimate ``h_m`` of its gradient, sends ``C(∇f_m − h_m)`` with this
            contractive (biased) compressor, and both ends add the message to ``h_m``; the hub uses the
            estimates wherever the paper uses the gathered gradients. The hub's own row stays exact.
            EF-OLGA's error round stays dense.
        downlink_compressor: Compress the hub's broadcast in inner rounds k ≥ 1 too (our extension; ``None``, the
            default, sends x_k and ∇f_1(x_k) dense, as the paper does). EF21-P-style (Gruntkowska, Tyurin &
            Richtárik, ICML'23, "EF21-P and Friends"): every process holds a point ``w`` and an estimate ``v``
            of the hub's gradient there; the hub sends ``C(x_k − w)`` and ``C(∇f_1(w') − v)`` with this
            contractive (biased) compressor in one broadcast, and everyone adds them. Workers evaluate their
            gradients at ``w``, the hub keeps its exact x_k for the prox, and the hub removes ``v``'s error from
            its correction exactly (its own row carries ``∇f_1(w) − v``), so the correction is ∇(f − f_1)(w):
            an error of at most δ·||x_k − w||. The model holds ``w``. Anchors and y rounds stay dense and reset
            ``w`` and ``v``. Needs ``local_steps=1`` and ``same_batch=False``.
        anchor_batches: K ≥ 1 (our extension): training steps, and so minibatches, each anchor gradient averages
            (1, the default: one batch, as the paper's full-batch method needs no more). The anchor round's first
            step broadcasts x; in it and the next K − 1 steps every process adds its gradient at x on that step's
            batch, silently except in the last, which gathers the averages and starts the epoch. The anchor's gradient
            is the control variate of a whole inner epoch, the SVRG snapshot gradient: a K-batch average has 1/K
            of a batch's noise, so the compressed differences carry less of it. Without acceleration the y round
            is the next anchor and is averaged the same way; with it the y round feeds only the momentum step
            and stays one batch. The same collectives and bytes as K = 1, over K − 1 more steps.
        seed: Seed of the epoch lengths and compressor draws.

    Raises:
        OptionError: An option out of range or a combination that cannot work (field, value and fix).
    """

    name: ClassVar[str] = "olga"
    error_feedback: ClassVar[bool] = False
    options_cls: ClassVar[type[OLGAOptions]] = OLGAOptions
    _state: ClassVar[tuple[str, ...]] = (
        "phase", "outer", "inner_k", "inner_n", "y", "z", "x", "x0", "G0", "g1_0", "gf0", "dx", "xk", "g1k", "last",
        "delta_hat", "p", "theta", "tau", "alpha", "local_k", "tk", "xloc",
        "acc", "acc_n", "dense_point", "dense_acc", "dense_n", "dense_k",
    )  # fmt: skip
    _memory: ClassVar[tuple[str, ...]] = ("error_memory", "grad_estimate", "downlink_estimate")

    def __init__(
        self,
        *,
        transport: Transport,
        oracle: LocalOracle,
        x0: Tensor,
        options: OLGAOptions | None = None,
        omega: float | None = None,
        estimate_delta: bool | None = None,
        worker_slices: int | None = None,
        **kwargs: Any,
    ) -> None:
        options = self.options_cls.of(options, defaults=self.options_cls.paper_defaults, **kwargs)
        #: The options in force (ranges and combinations were checked when it was built).
        self.options = options
        super().__init__(transport=transport, oracle=oracle, x0=x0, seed=options.seed)
        compressor = options.built_compressor
        dense_compressor = options.built_dense_compressor
        downlink_compressor = options.built_downlink_compressor
        self.anchor_batches = options.anchor_batches
        self.local_steps = options.local_steps
        self.downlink_compressor = downlink_compressor
        self.dense_compressor = dense_compressor
        self.output_kind = options.output
        self.same_batch = options.same_batch
        self.accelerate = options.accelerate
        #: Norms of the last inner round (``None`` unless ``diagnostics``): ghat_norm, compression_error
        #: (relative, this process's workers), and on the hub correction_norm, anchor_grad_norm, prox_step, drift.
        self.diagnostics: dict[str, float] | None = {} if options.diagnostics else None
        self.compressor = compressor
        self.preset = preset = options.preset
        self.gate = gate = options.gate
        self.estimate_delta = preset == "auto" or gate is not None if estimate_delta is None else bool(estimate_delta)
        if gate is not None and not self.estimate_delta:
            raise OptionError(
                "estimate_delta", estimate_delta, "turns off the δ̂ estimate the similarity gate needs", "leave it on"
            )
        self._overrides = {"p": options.p, "theta": options.theta, "tau": options.tau, "alpha": options.alpha}
        d = x0.numel()
        constant = compressor.beta(d) if self.error_feedback else compressor.omega(d)
        default = constant if self.error_feedback else paper_omega(constant)
        self._omega = float(omega) if omega is not None else default
        self._gamma = compressor.gamma(d, x0.dtype)
        self._mu = float(options.mu)
        self._delta = options.delta
        self.delta_hat: float | None = None
        self._resolve(options.delta0 if preset == "auto" else options.delta)
        hub = transport.is_hub
        x = x0.detach().clone()
        self.y = x.clone()  # every process: y is broadcast at each y round, so all ranks can hold it
        self.last = x.clone()  # the newest point broadcast to every process (x_k of inner rounds, y)
        self.z = x.clone() if hub else None
        self.x: Tensor | None = None
        self.x0 = x.clone()
        self.xk = x.clone()
        self.g1_0 = torch.zeros_like(x)
        self.g1k = torch.zeros_like(x)
        self.G0: Tensor | None = None
        self.gf0: Tensor | None = None
        self.dx: Tensor | None = None
        # EF-OLGA: the residuals e of this process's workers (reset each epoch), and on the hub their mean ē
        self.error_memory = ErrorFeedback() if self.error_feedback else None
        self.phase = "anchor"
        self.outer = 0
        self.inner_k = 0
        self.inner_n = 0
        # local_steps > 1: local steps done in the current inner round, and the hub's subproblem in progress
        self.local_k = 0
        self.tk: Tensor | None = None
        self.xloc: Tensor | None = None
        self.acc: Tensor | None = None  # this process's gradient sum at the round's centre
        self.acc_n = 0
        # dense_compressor: the EF21 estimates h_m of this process's workers' gradients, and every row on the hub
        self.grad_estimate = (
            EF21Estimate(
                rows=torch.zeros(transport.workers.numel(), d, dtype=x.dtype, device=x.device),
                aggregate=torch.zeros(transport.num_workers, d, dtype=x.dtype, device=x.device) if hub else None,
            )
            if dense_compressor is not None
            else None
        )
        # downlink_compressor: the EF21-P point w and estimate v of ∇f_1(w) every process holds, and on the hub
        # its exact gradient at w
        self.downlink_estimate = EF21PDownlink(x) if downlink_compressor is not None else None
        # anchor_batches > 1: the dense round being averaged (phase anchor_acc or y_acc), its point, this
        # process's gradient sum there, the gradients in it and the steps taken
        self.dense_point: Tensor | None = None
        self.dense_acc: Tensor | None = None
        self.dense_n = 0
        self.dense_k = 0
        self.worker_slices = self._check_worker_slices(worker_slices, oracle)

    def _check_worker_slices(self, worker_slices: int | None, oracle: LocalOracle) -> int | None:
        """``worker_slices`` checked: the transport must hold every worker, the oracle evaluate slices."""
        if worker_slices is None:
            return None
        if isinstance(worker_slices, bool) or not isinstance(worker_slices, int) or worker_slices < 1:
            raise OptionError("worker_slices", worker_slices, "is not a slice size", "use an int >= 1, or None")
        t = self.transport
        if getattr(t, "ledger", None) is None or t.workers.numel() != t.num_workers:
            raise OptionError(
                "worker_slices", worker_slices, f"needs a transport holding every worker ({type(t).__name__} "
                f"holds {t.workers.numel()} of {t.num_workers})", "use it with SimulatorTransport / sim.run only",
            )  # fmt: skip
        if not hasattr(oracle, "grads_slice"):
            raise OptionError(
                "worker_slices", worker_slices, f"needs an oracle with grads_slice(x, start, stop); "
                f"{type(oracle).__name__} has none", "use ProblemOracle",
            )  # fmt: skip
        o = self.options
        unsupported = {
            "error feedback (EF-OLGA)": self.error_feedback, "dense_compressor": o.dense_compressor is not None,
            "downlink_compressor": o.downlink_compressor is not None,
            "estimate_delta (auto, gate)": self.estimate_delta,
            "diagnostics": bool(o.diagnostics), "same_batch": o.same_batch, "local_steps > 1": o.local_steps > 1,
            "anchor_batches > 1": o.anchor_batches > 1,
        }  # fmt: skip
        on = [name for name, flag in unsupported.items() if flag]
        if on:
            raise OptionError(
                "worker_slices", worker_slices, f"streams only the plain method, not with {', '.join(on)}",
                "turn those off, or leave worker_slices=None",
            )  # fmt: skip
        return worker_slices

    # ------------------------------------------------------------------------------- parameters
    def _resolve(self, delta: float | None) -> None:
        params = olga_params(
            preset="similarity" if self.preset == "auto" else self.preset,
            mu=self._mu,
            delta=delta if delta is not None else math.nan,
            num_workers=self.transport.num_workers,
            omega=self._omega,
            gamma=self._gamma,
            error_feedback=self.error_feedback,
            **self._overrides,
        )
        self.p, self.theta, self.tau, self.alpha = params.p, params.theta, params.tau, params.alpha

    @property
    def params(self) -> OlgaParams:
        """The hyper-parameters in force."""
        return OlgaParams(p=self.p, theta=self.theta, tau=self.tau, alpha=self.alpha, mu=self._mu)

    def hyperparameters(self) -> dict[str, float]:
        out = self.params.as_dict()
        out["omega_used"] = self._omega
        if self.delta_hat is not None:
            out["delta_hat"] = self.delta_hat
        return out

    def output(self) -> Tensor:
        return self.y if self.output_kind == "y" else self.last

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "last" not in state:  # a checkpoint from before output='last' existed
            state = {**state, "last": state["y"]}
        if "local_k" not in state:  # from before local_steps existed (always between inner rounds)
            state = {**state, "local_k": 0, "tk": None, "xloc": None, "acc": None, "acc_n": 0}
        if state["phase"] == "local" and self.local_steps == 1:
            raise ValueError(
                "local_steps: the checkpoint was written inside the local steps of an inner round "
                "(local_steps > 1); resume with the same local_steps."
            )
        saved = state.get("downlink_estimate", self.downlink_estimate)  # a missing key is reported by the base
        if (saved is None) != (self.downlink_estimate is None):
            raise ValueError(
                "downlink_compressor: the checkpoint was written with downlink_compressor "
                f"{'off' if saved is None else 'on'}; resume with the same setting."
            )
        if "dense_k" not in state:  # from before anchor_batches existed (never inside an averaged dense round)
            state = {**state, "dense_point": None, "dense_acc": None, "dense_n": 0, "dense_k": 0}
        saved = state.get("grad_estimate", self.grad_estimate)
        if (saved is None) != (self.grad_estimate is None):
            raise ValueError(
                "dense_compressor: the checkpoint was written with dense_compressor "
                f"{'off' if saved is None else 'on'}; resume with the same setting."
            )
        super().load_state_dict(state)

    # ------------------------------------------------------------------------------- rounds
    def communicates(self) -> bool:
        if self.phase in _AVERAGING:  # silent but in the last of the K steps, which gathers
            return self.dense_k + 1 >= self.anchor_batches
        return self.phase != "local"

    def round_kind(self) -> str:
        return self.phase  # anchor, inner, error, y, local, or an averaged dense round's anchor_acc / y_acc

    def _step(self) -> None:
        if self.phase == "local":
            self._round_local()
            return
        if self.phase in _AVERAGING and not self.communicates():
            self._add_dense_grads()
            return
        self.transport.begin_round()
        {
            "anchor": self._round_anchor,
            "inner": self._round_inner,
            "error": self._round_error,
            "y": self._round_y,
            "anchor_acc": self._finish_anchor,
            "y_acc": self._finish_y,
        }[self.phase]()

    def _hub_row(self, block: Tensor) -> Tensor:
        t = self.transport
        return block[t.hub_row] if t.is_hub else torch.zeros_like(block[0])

    def _epoch_length(self) -> int:
        if self.p >= 1.0:
            return 1
        g = generator(self.seed, self.outer, SHARED_WORKER, key=f"{self.name}/epoch")
        return int(torch.empty(1, dtype=torch.float64).geometric_(self.p, generator=g).item())

    def _round_anchor(self) -> None:
        t = self.transport
        if t.is_hub:
            self.x = self.tau * self._need(self.z, "z") + (1 - self.tau) * self.y if self.accelerate else self.y
        (x,) = t.broadcast(self._need(self.x, "x") if t.is_hub else torch.zeros_like(self.x0), tag="point")
        if self.worker_slices is not None:
            self._begin_epoch_streamed(x, self._streamed_mean_grad(x))
            return
        grads = self.oracle.grads(x)
        if self.anchor_batches > 1:
            self._start_averaging(x, grads, "anchor_acc")
            return
        self._begin_epoch(x, grads, self._gather_grads(grads))

    # ------------------------------------------------------------------------------- averaged anchors (K > 1)
    # The anchor round's first step broadcasts the point; it and the next K − 1 steps add this process's
    # gradient there on their batches, and the last of them gathers the K-batch averages. Only the first and
    # the last step communicate: the same messages as one batch, spread over K steps.

    def _start_averaging(self, point: Tensor, grads: Tensor, phase: str) -> None:
        self.dense_point, self.dense_acc, self.dense_n, self.dense_k = point, grads, 1, 1
        self.phase = phase

    def _add_dense_grads(self) -> None:
        """A step of an averaged dense round: this process's gradient at its point on this step's batch."""
        self.dense_acc = self._need(self.dense_acc, "dense_acc") + self.oracle.grads(
            self._need(self.dense_point, "dense_point")
        )  # rebound, never in place
        self.dense_n += 1
        self.dense_k += 1

    def _averaged_grads(self) -> tuple[Tensor, Tensor]:
        """The last step of an averaged dense round: its point, and this process's K-batch average there."""
        self._add_dense_grads()
        point, grads = (
            self._need(self.dense_point, "dense_point"),
            self._need(self.dense_acc, "dense_acc") / self.dense_n,
        )
        self.dense_point, self.dense_acc, self.dense_n, self.dense_k = None, None, 0, 0
        return point, grads

    def _finish_anchor(self) -> None:
        x, grads = self._averaged_grads()
        self._begin_epoch(x, grads, self._gather_grads(grads))

    def _finish_y(self) -> None:
        y, grads = self._averaged_grads()
        self._y_update(y, grads)

    def _gather_grads(self, grads: Tensor) -> Tensor | None:
        """The anchor and y rounds' gradient gather: dense, or EF21-style estimates with ``dense_compressor``."""
        t = self.transport
        if self.dense_compressor is None:
            return t.gather(grads, tag="dense")
        estimate = self._need(self.grad_estimate, "grad_estimate")
        own, received = t.gather_compressed(
            estimate.compensate(grads),
            self.dense_compressor,
            step=self.round,
            key=f"{self.name}/dense",
            tag="dense_compressed",
        )
        estimate.update(own)
        if not t.is_hub:
            return None
        estimate.update_aggregate(self._need(received, "received"))
        return estimate.aggregate  # callers only read it, and the next round rebinds it rather than changing it

    def _begin_epoch(self, x: Tensor, grads: Tensor, gathered: Tensor | None) -> None:
        """Make ``x`` (with every worker's gradient there) the anchor x_0 of a new inner epoch."""
        t = self.transport
        (g1,) = t.broadcast(self._hub_row(grads), tag="hub_grad")
        self.x0, self.G0, self.g1_0 = x, grads, g1
        self.xk, self.g1k = x, (torch.zeros_like(g1) if self.same_batch else g1)
        if self.downlink_estimate is not None:  # the dense anchor broadcast: every process holds x_0 exactly
            self.downlink_estimate.reset(x, g1, g1 if t.is_hub else None)
        if t.is_hub:
            gathered = self._need(gathered, "gathered")
            self.gf0 = gathered.mean(dim=0)
            if self.estimate_delta:
                self.dx = gathered - self.gf0  # ∇(f_m − f)(x) for δ̂
        if self.error_memory is not None:
            self.error_memory.reset(grads)
        self.inner_n = self._epoch_length()
        self.inner_k = 0
        self.phase = "inner"
        if self.local_steps > 1:
            # Round 0 needs no message: at the anchor the correction ∇f(x_0) − ∇f_1(x_0) is known exactly.
            self._start_round(self._need(self.gf0, "gf0") - self.g1_0 if t.is_hub else None)
            self.phase = "local"

    def _round_inner(self) -> None:
        t = self.transport
        if self.local_steps > 1:
            self._round_inner_local()
            return
        if self.worker_slices is not None:
            self._round_inner_streamed()
            return
        if self.inner_k > 0 and self.downlink_compressor is not None:
            self._send_point()
        elif self.inner_k > 0:
            self.xk, self.g1k = t.broadcast(self.xk, self.g1k, tag="point")
            self.last = self.xk
        # where the workers' gradients are taken: x_k, or with a compressed downlink the shared point w
        point = self.xk if self.downlink_estimate is None else self.downlink_estimate.point
        if self.same_batch:
            # ĝ = [∇f_m(x_k) − ∇f_m(x_0)] on this round's batch − the hub's same-batch difference (g1k holds
            # it here): batch noise cancels inside each bracket, so ĝ ≈ (∇²f_m − ∇²f_1)(x_k − x_0).
            ghat = self.oracle.grads(self.xk).sub_(self.oracle.grads(self.x0)).sub_(self.g1k)
        else:
            # ĝ = ∇f_m(x_k) − ∇f_1(x_k) − ∇f_m(x_0) + ∇f_1(x_0), in place on the fresh gradient block
            ghat = self.oracle.grads(point).sub_(self._need(self.G0, "G0")).add_(self.g1_0 - self.g1k)
        hub_row = self.downlink_estimate.hub_error() if self.downlink_estimate is not None and t.is_hub else None
        t_k = self._send_differences(ghat, hub_row=hub_row)
        if t.is_hub:
            x_prev = self.xk
            self.xk = self.oracle.prox(self.xk, self._need(t_k, "t_k"), self.theta)
            if self.same_batch:  # the hub's difference ∇f_1(x_{k+1}) − ∇f_1(x_0) on one batch
                self.g1k = self.oracle.hub_grad(self.xk) - self.oracle.hub_grad(self.x0)
            elif self.downlink_compressor is None:  # with it, the next round takes ∇f_1 at the point it sends
                self.g1k = self.oracle.hub_grad(self.xk)
            if self.diagnostics is not None:
                self.diagnostics.update(
                    prox_step=float(torch.linalg.vector_norm(self.xk - x_prev)),
                    drift=float(torch.linalg.vector_norm(self.xk - self.x0)),
                )
        self._end_round()

    def _send_point(self) -> None:
        """The compressed broadcast of an inner round (``downlink_compressor``): every process moves w and v."""
        t = self.transport
        c = self._need(self.downlink_compressor, "downlink_compressor")
        down = self._need(self.downlink_estimate, "downlink_estimate")
        key = f"{self.name}/down"
        if t.is_hub:
            # message 0 is C(x_k − w): the hub knows w' before sending, and sends ∇f_1(w') against v with it
            dx = down.point_message(self.xk)
            g1w = self.oracle.hub_grad(down.point + c.roundtrip(dx, step=self.round, worker=t.hub, key=f"{key}/0"))
            messages = (dx, down.grad_message(g1w))
        else:
            messages = (torch.zeros_like(down.point), torch.zeros_like(down.point))
        dw, dv = t.broadcast_compressed(*messages, compressor=c, step=self.round, key=key, tag="point_compressed")
        down.apply(dw, dv)
        self.g1k = down.grad  # what the workers subtract; the hub corrects for v's error exactly
        self.last = down.point
        if t.is_hub and self.diagnostics is not None:
            self.diagnostics.update(point_error=float(torch.linalg.vector_norm(self.xk - down.point)))

    def _send_differences(self, ghat: Tensor, hub_row: Tensor | None = None) -> Tensor | None:
        """The compressed gather of ``ĝ`` (``(R, d)``, overwritten); the hub gets its correction t_k.

        ``hub_row`` (``downlink_compressor``): the hub's own ``∇f_1(w) − v``, sent uncompressed in its row and
        taken out of the correction again, which leaves ∇(f − f_1)(w) exact up to the workers' compression.
        """
        t = self.transport
        if t.is_hub:
            ghat[t.hub_row] = 0 if hub_row is None else hub_row  # without it, zero by definition
        if self.error_memory is not None:
            v = self.error_memory.compensate(self.theta * ghat)
            own, received = t.gather_compressed(v, self.compressor, step=self.round, key=self.name)
            self.error_memory.update(v, own)
        else:
            v = ghat
            own, received = t.gather_compressed(ghat, self.compressor, step=self.round, key=self.name)
        if self.diagnostics is not None:  # this process's workers (the hub's own row is zero)
            self.diagnostics.update(
                ghat_norm=float(torch.linalg.vector_norm(ghat, dim=-1).max()),
                compression_error=float((torch.linalg.vector_norm(own - v, dim=-1)
                                         / torch.linalg.vector_norm(v, dim=-1).clamp_min(1e-30)).max()),
            )  # fmt: skip
        if not t.is_hub:
            return None
        gf0 = self._need(self.gf0, "gf0")
        g = self._need(received, "received").mean(dim=0)
        if self.error_feedback:
            g = g / self.theta
        if self.diagnostics is not None:
            self.diagnostics.update(
                correction_norm=float(torch.linalg.vector_norm(g)),
                anchor_grad_norm=float(torch.linalg.vector_norm(gf0)),
            )
        g = g - self.g1_0 + gf0
        return g if hub_row is None else g - hub_row

    def _end_round(self) -> None:
        """Count an inner round; after the epoch's last, the error or y round comes next."""
        self.inner_k += 1
        self.phase = "inner"
        if self.gate is not None and self._gate_closes():
            self.inner_n = self.inner_k
        if self.inner_k >= self.inner_n:
            # ē only enters the momentum step, so without acceleration EF-OLGA needs no error round
            self.phase = "error" if self.error_feedback and self.accelerate else "y"

    # ------------------------------------------------------------------------------- local steps (H > 1)
    # An inner round of H steps around the centre x_k. Every step, every rank adds its gradient at x_k on
    # that step's batch to ``acc``, and the hub takes S prox steps on its batch with correction ``tk``.
    # Only the first step of rounds k >= 1 communicates: the hub sends x_k (its last iterate) and its own
    # averaged gradient at x_{k-1}; the ranks send the compressed difference of their averages at x_{k-1},
    # and the hub's new correction is ∇(f − f_1)(x_{k-1}): one round stale, an error of at most
    # δ·||x_k − x_{k-1}|| under δ-similarity, while every rank's H batches reach it.

    def _start_round(self, correction: Tensor | None) -> None:
        self.acc, self.acc_n, self.local_k = None, 0, 0
        if self.transport.is_hub:
            self.tk, self.xloc = correction, self.xk

    def _round_inner_local(self) -> None:
        """Rounds k ≥ 1, first step: exchange the last round's averages, then this step's local work."""
        t = self.transport
        # this rank's gradients at x_{k-1}, averaged over the round's batches; if the guard dropped every step
        # of that round here, the anchor's gradient is the last one this rank has
        avg = self.acc / self.acc_n if self.acc is not None else self._need(self.G0, "G0").clone()
        x_prev = self.xk
        self.xk, g1avg = t.broadcast(
            self._need(self.xloc, "xloc") if t.is_hub else self.xk, self._hub_row(avg), tag="point"
        )
        self.last = self.xk
        # ĝ = ∇̄f_m(x_{k-1}) − ∇̄f_1(x_{k-1}) − ∇f_m(x_0) + ∇f_1(x_0)
        t_k = self._send_differences(avg - self._need(self.G0, "G0") + (self.g1_0 - g1avg))
        self._start_round(t_k)
        if t.is_hub and self.diagnostics is not None:
            self.diagnostics.update(
                prox_step=float(torch.linalg.vector_norm(self.xk - x_prev)),
                drift=float(torch.linalg.vector_norm(self.xk - self.x0)),
            )
        self._round_local()

    def _round_local(self) -> None:
        """A step of an inner round's local work (the only work, in a local step: no process communicates)."""
        g = self.oracle.grads(self.xk)
        self.acc = g if self.acc is None else self.acc + g
        self.acc_n += 1
        if self.transport.is_hub:
            prox_from = getattr(self.oracle, "prox_from", None)
            if prox_from is not None:
                self.xloc = prox_from(self.xloc, self.xk, self.tk, self.theta)
            elif self.local_k == 0:  # an exact solver: once per round
                self.xloc = self.oracle.prox(self.xk, self._need(self.tk, "tk"), self.theta)
        self._advance_local()

    def skip_local_step(self) -> None:
        """Count a local step whose work was dropped (the non-finite guard undid it on this process).

        Keeps every process on the shared schedule, so the next communicating step is the same step everywhere.
        """
        if self.communicates():
            raise RuntimeError(f"{self.name}: skip_local_step() called in phase {self.phase!r}, not in a local step.")
        if self.phase in _AVERAGING:  # the average leaves this batch out; the round's first gradient is in it
            self.dense_k += 1
        else:
            self._advance_local()
        self.round += 1

    def _advance_local(self) -> None:
        self.local_k += 1
        self.phase = "local"
        if self.local_k < self.local_steps:
            return
        self.local_k = 0
        self._end_round()
        if self.phase != "inner" and self.transport.is_hub:  # the epoch ends at the hub's last iterate
            self.xk = self._need(self.xloc, "xloc")

    def _gate_closes(self) -> bool:
        """Similarity gate: the hub decides whether the epoch ends now and tells every process (tag ``gate``)."""
        t = self.transport
        flag = torch.zeros(1, dtype=self.x0.dtype, device=self.x0.device)
        if t.is_hub and self.delta_hat is not None:
            drift = float(torch.linalg.vector_norm(self.xk - self.x0)) * self.delta_hat
            gate, gf0 = self._need(self.gate, "gate"), self._need(self.gf0, "gf0")
            flag.fill_(float(drift >= gate * float(torch.linalg.vector_norm(gf0))))
        (flag,) = t.broadcast(flag, tag="gate")
        return bool(flag.item() > 0)

    def _round_error(self) -> None:
        memory = self._need(self.error_memory, "error_memory")
        gathered = self.transport.gather(self._need(memory.rows, "error_memory.rows"), tag="dense")
        if self.transport.is_hub:
            memory.aggregate = self._need(gathered, "gathered").mean(dim=0)  # ē
        self.phase = "y"

    def _round_y(self) -> None:
        t = self.transport
        (y,) = t.broadcast(self.xk, tag="point")
        self.last = y
        if self.worker_slices is not None:
            gfy = self._streamed_mean_grad(y)
            self._outer_step(y, gfy, self.oracle.hub_grad(y))
            self.outer += 1
            self.phase = "anchor"
            if not self.accelerate:
                self.x = y
                self._begin_epoch_streamed(y, gfy)
            return
        grads = self.oracle.grads(y)
        if self.anchor_batches > 1 and not self.accelerate:  # this round is the next anchor: average it too
            self._start_averaging(y, grads, "y_acc")
            return
        self._y_update(y, grads)

    def _y_update(self, y: Tensor, grads: Tensor) -> None:
        """The y round's gather and the outer step (with momentum) or the next epoch (without)."""
        t = self.transport
        gathered = self._gather_grads(grads)
        if t.is_hub:
            gathered = self._need(gathered, "gathered")
            gfy = gathered.mean(dim=0)
            self._outer_step(y, gfy, gathered[t.hub])
            if self.estimate_delta:
                self._update_delta_hat(y, gathered - gfy)
        else:
            self.y = y
        self.outer += 1
        self.phase = "anchor"
        if not self.accelerate:  # x_{k+1} = y: this round's dense gradients are the next epoch's anchor
            self.x = y
            self._begin_epoch(y, grads, gathered)

    def _outer_step(self, y: Tensor, gfy: Tensor, g1y: Tensor) -> None:
        """The hub's outer step at y from ∇f(y) and ∇f_1(y): the momentum z-step (with acceleration); y is kept."""
        if self.accelerate:
            t_k = (self.g1_0 - self._need(self.gf0, "gf0")) - (g1y - gfy)
            y_tilde = y - self._need(self.error_memory.aggregate, "ē") if self.error_memory is not None else y
            big_g = self.p * (t_k + (self._need(self.x, "x") - y_tilde) / self.theta)
            am = self.alpha * self._mu
            self.z = (self._need(self.z, "z") + am * y - self.alpha * big_g) / (1 + am)
        else:
            big_g = torch.zeros_like(y)
        if self.diagnostics is not None:
            self.diagnostics.update(
                outer_G_norm=float(torch.linalg.vector_norm(big_g)),
                outer_step=float(torch.linalg.vector_norm(y - self.y)),
                z_minus_y=float(torch.linalg.vector_norm(self._need(self.z, "z") - y)),
            )
        self.y = y

    # ------------------------------------------------------------------------------- worker slices (simulator)
    # With ``worker_slices`` every round walks the workers in slices and keeps no (M, d) block: the same
    # messages, seeds and ledger records as SimulatorTransport.gather / gather_compressed make for the whole
    # block (the transport's sender order, the compressor's roundtrip_block with the same worker ids).

    def _sender_slices(self) -> list[list[int]]:
        t = self.transport
        senders = [w for w in range(t.num_workers) if w != t.hub]
        size = self._need(self.worker_slices, "worker_slices")
        return [senders[a : a + size] for a in range(0, len(senders), size)]

    def _slice_rows(self, x: Tensor, ids: list[int]) -> Tensor:
        """Gradients at ``x`` of the workers ``ids`` (consecutive ids, but for a hub inside the run)."""
        start, stop = ids[0], ids[-1] + 1
        grads = self.oracle.grads_slice(x, start, stop)  # type: ignore[attr-defined]
        if stop - start != len(ids):  # the hub sits inside this run of ids: drop its row
            grads = grads[torch.as_tensor(ids, device=grads.device) - start]
        return grads

    def _streamed_mean_grad(self, x: Tensor) -> Tensor:
        """The dense gather's mean ∇f(x), slice by slice; booked as SimulatorTransport.gather books it."""
        t = self.transport
        total = self.oracle.hub_grad(x).clone()
        row_bytes = total.numel() * total.element_size()
        for ids in self._sender_slices():
            total += self._slice_rows(x, ids).sum(dim=0)
        t.ledger.record(Direction.UPLINK, sender=[w for w in range(t.num_workers) if w != t.hub], nbytes=row_bytes,
                        tag="dense")  # fmt: skip
        return total.div_(t.num_workers)

    def _begin_epoch_streamed(self, x: Tensor, gf: Tensor) -> None:
        """:meth:`_begin_epoch` with the mean gradient only: no anchor block (inner rounds recompute ∇f_m(x_0))."""
        (g1,) = self.transport.broadcast(self.oracle.hub_grad(x), tag="hub_grad")
        self.x0, self.G0, self.g1_0 = x, None, g1
        self.xk, self.g1k = x, g1
        self.gf0 = gf
        self.inner_n = self._epoch_length()
        self.inner_k = 0
        self.phase = "inner"

    def _round_inner_streamed(self) -> None:
        """An inner round over worker slices: ĝ_m recomputed, compressed, decoded and summed slice by slice."""
        t = self.transport
        if self.inner_k > 0:
            self.xk, self.g1k = t.broadcast(self.xk, self.g1k, tag="point")
            self.last = self.xk
        shift = self.g1_0 - self.g1k
        total = torch.zeros_like(self.xk)  # the hub's own row is zero by definition
        senders: list[int] = []
        sizes: list[int] = []
        for ids in self._sender_slices():
            ghat = self._slice_rows(self.xk, ids).sub_(self._slice_rows(self.x0, ids)).add_(shift)
            decoded, chunk_sizes = self.compressor.roundtrip_block(ghat, step=self.round, workers=ids, key=self.name)
            total += decoded.sum(dim=0)
            senders += ids
            sizes += chunk_sizes
        t.ledger.record(Direction.UPLINK, sender=senders, nbytes=sizes, tag="compressed")
        t_k = total.div_(t.num_workers) - self.g1_0 + self._need(self.gf0, "gf0")
        self.xk = self.oracle.prox(self.xk, t_k, self.theta)
        self.g1k = self.oracle.hub_grad(self.xk)
        self._end_round()

    def _update_delta_hat(self, y: Tensor, dy: Tensor) -> None:
        step = float(torch.linalg.vector_norm(y - self._need(self.x, "x")))
        if step == 0.0:
            return
        estimate = float(torch.linalg.vector_norm(dy - self._need(self.dx, "dx"), dim=1).max()) / step
        self.delta_hat = estimate if self.delta_hat is None else max(self.delta_hat, estimate)
        if self.preset == "auto" and self._overrides["theta"] is None and self.delta_hat > 0:
            self._resolve(self.delta_hat)


class EFOLGA(OLGA):
    """EF-OLGA: OLGA with a biased compressor and error feedback (same paper, Algorithms 3 and 4).

    Inner rounds send ``C(e + θ ĝ)`` and keep ``e ← e + θ ĝ − C(e + θ ĝ)`` (e reset each epoch); the
    hub uses ``t_k = mean C(·)/θ − ∇f_1(x_0) + ∇f(x_0)``. After the epoch one dense round gathers
    ``ē = mean e`` and the outer step uses ``ỹ = y − ē`` in G. Per outer iteration: 3 dense rounds +
    N compressed. ``theory`` is Theorem 2: p = 1/β, θ = p^{3/2}/(24δ) (Corollary 2 prints 12; 24 is
    the safe bound), τ = min{√(μθ/p)/18, 1/18} (Corollary 2 prints it without √μ; this mirrors
    Corollary 1), α = θ/(36pτ). The formulas take β of the compressor (d/K for TopK).
    """

    name: ClassVar[str] = "ef_olga"
    error_feedback: ClassVar[bool] = True
    options_cls: ClassVar[type[OLGAOptions]] = EFOLGAOptions
