"""``Trainer(strategy="gated_dane")``: every rank trains on its similarity-corrected subproblem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lit_commeff.algorithms.gated_dane import GatedDANE
from lit_commeff.algorithms.preconditioner import linear_steps
from lit_commeff.options import GatedDANEOptions
from lit_commeff.strategy.hub import HubAlgorithmStrategy
from lit_commeff.strategy.metering import log_rank_zero
from lit_commeff.strategy.oracle import LightningOracle
from lit_commeff.transport import DistributedTransport
from lit_commeff.transport.background import ThreadedExchange


class GatedDANEStrategy(HubAlgorithmStrategy):
    """Gated DANE: corrected local steps of the user's optimizer on every rank; compressed, gated, accelerated sync.

    The method (:class:`~lit_commeff.algorithms.gated_dane.GatedDANE`, which cites DANE, SCAFFOLD, S-DANE,
    DiLoCo and the OLGA paper) in Lightning: one training step is one local step of the optimizer from
    ``configure_optimizers`` on this rank's batch (its learning rate, momentum and schedule apply), along the
    minibatch gradient plus the rank's correction ĝ_r − ∇f_m(x_r) (plus (x − x_r)/θ with a prox term). The
    first step of a round also gathers every rank's gradient at the anchor x_r and broadcasts their mean ĝ_r;
    the last one gathers the (compressed) model changes, takes the outer step on the hub (rank 0) and
    broadcasts the new anchor. Under ``sync="gated"`` the round's length follows the ranks' drift, weighed
    against the link's measured cost (``link_aware``). Between
    syncs each rank's optimizer works on its own local iterate; the model Lightning validates and checkpoints
    is the anchor, the same on every rank. Per rank, the checkpoint holds the algorithm's state (local
    iterate, correction, error-feedback residuals, round position) and the optimizer's state, so a run
    stopped mid-round resumes exactly on CPU.

    With ``overlap`` (by default on over gloo where the options allow it; see
    :meth:`~lit_commeff.options.GatedDANEOptions.resolve_overlap`) the sync runs in a background thread over a
    process group of its own, its values in bfloat16, and its reply is taken one round later
    (:meth:`~lit_commeff.algorithms.gated_dane.GatedDANE._sync_overlapped`); the non-finite guard's faults and
    rank 0's SIGTERM then travel in the method's messages, with no agreement of their own, and the exchange still
    in flight when training ends is waited for (and its bytes booked) at teardown. Under Adam its rounds start from a
    floor of 2 steps and do not weigh the link. Without overlap (``overlap=false``) the sync's one gather still
    travels in bfloat16 over gloo unless ``message_dtype="model"``
    (:meth:`~lit_commeff.options.GatedDANEOptions.resolve_lightning`); the new anchor comes back exactly.

    Note:
        Under Adam-type optimizers the outer step defaults to plain averaging (``outer_lr=1``,
        ``outer_momentum=0``): each rank's normaliser keeps the corrected steps from cancelling, and DiLoCo's
        Nesterov momentum amplified what was left (throughput GRU, seed 2: validation MAE 111). With plain
        averaging all three seeds reached DDP's plateau, 7.8× sooner than DDP, but at about half DiLoCo's speed
        on ``edge``, since the rounds stay short (B3 session 12, ``docs/gated-dane.md``). Under SGD the default
        stays DiLoCo's Nesterov step, which made it 2.7× faster on credit than plain averaging.

    Logged besides ``comm/*``, from rank 0 (no extra collective): ``gated_dane/H`` (the current round's length,
    the same on every rank), ``gated_dane/drift`` (rank 0's δ̂·‖x_m − x_r‖/‖ĝ_r‖), ``gated_dane/delta_hat``
    (rank 0's similarity estimate), from the last sync ``gated_dane/change`` (rank 0's ‖Δ_m‖),
    ``gated_dane/anchor_move`` (‖x_{r+1} − x_r‖: several times ‖Δ_m‖ when the outer momentum amplifies what the
    ranks' changes leave after cancelling) and ``gated_dane/correction`` (‖c_0‖/‖ĝ‖), and, with ``link_aware``,
    ``gated_dane/sync_steps`` (rank 0's measured cost of a sync in local steps, which the next round's length
    weighs against the drift), ``gated_dane/step_seconds`` (its smoothed local step time: a whole training step
    without a sync), under ``overlap`` ``gated_dane/exchange_seconds`` (rank 0's last joined exchange, from its
    launch to its end in the background), ``gated_dane/exchange_wait_seconds`` (how long joining it blocked the
    training thread: the part the round's local steps did not hide) and ``gated_dane/exchange_hidden_seconds``
    (how much longer it would have blocked had no validation pass run while the exchange was in flight), with their
    running totals over every join ``gated_dane/exchange_wait_total_seconds`` and
    ``gated_dane/exchange_hidden_total_seconds``, and, with ``prox_rho``, ``gated_dane/theta`` (rank 0's θ_m from
    its estimate).

    Args:
        options: :class:`~lit_commeff.options.GatedDANEOptions`; by default built from the keyword options.
        **kwargs: Its fields as keywords, then those of
            :class:`~lit_commeff.strategy.hub.HubAlgorithmStrategy`.
    """

    strategy_name: ClassVar[str] = "gated_dane"
    options_cls: ClassVar[type[GatedDANEOptions]] = GatedDANEOptions
    options: GatedDANEOptions

    def __init__(self, *, options: GatedDANEOptions | None = None, **kwargs: Any) -> None:
        super().__init__(options=options, **kwargs)
        self._exchange_group: dist.ProcessGroup | None = None

    @override
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> GatedDANE:
        # overlap=None: on over gloo where the options allow it (under Adam: rounds from a floor of 2 that do not
        # weigh the link, and off where the options ask for longer rounds); message_dtype=None: bf16 over gloo
        # wherever the round has one dense message. MLflow's `strategy.overlap`, `strategy.min_inner_steps`,
        # `strategy.link_aware` and `strategy.resolved.message_bits` show what was decided.
        linear = linear_steps(oracle.optimizer)
        options = self.options.resolve_lightning(
            linear_steps=linear, backend=dist.get_backend(), model_bits=torch.finfo(x0.dtype).bits
        )
        warning = None if linear else options.adaptive_overlap_warning(type(oracle.optimizer).__name__)
        if warning is not None:
            rank_zero_warn(f"lit_commeff: {warning}")
        algorithm = GatedDANE(transport=transport, oracle=oracle, x0=x0, options=options)
        if algorithm.overlap:
            # A process group of its own: the background exchange's collectives never interleave with the
            # training thread's (Lightning's broadcasts, the guard's silent-step checks, validation's reductions).
            self._exchange_group = dist.new_group(backend=dist.get_backend(), timeout=self._timeout)
            background = DistributedTransport(
                dim=transport.ledger.dim,
                dtype=x0.dtype,
                device=self.root_device,
                hub=transport.hub,
                group=self._exchange_group,
                downlink=transport.downlink,  # type: ignore[arg-type]
            )
            algorithm.exchange = ThreadedExchange(background)
        return algorithm

    @override
    def teardown(self) -> None:
        if isinstance(self.algorithm, GatedDANE):
            self.algorithm.close()  # the last exchange completes on every rank before its group goes
        group, self._exchange_group = getattr(self, "_exchange_group", None), None
        if group is not None and dist.is_initialized():
            dist.destroy_process_group(group)
        super().teardown()

    @override
    def on_validation_start(self) -> None:
        # The exchange in flight runs on through validation, which B3's training time leaves out: count what of it
        # the pause hides (see `pause_hidden_seconds`).
        super().on_validation_start()
        if isinstance(self.algorithm, GatedDANE):
            self.algorithm.exchange.pause()

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if isinstance(self.algorithm, GatedDANE):
            self.algorithm.exchange.resume()

    def pause_hidden_seconds(self) -> float:
        """Seconds of background exchanges that validation passes hid from this rank's training time.

        Training time (``train_seconds`` of :class:`~lit_commeff.tracking.history.CommHistory`, B3's time to
        target) leaves validation out, but an overlapped exchange in flight runs on through it: had training gone
        on instead, the next join would have waited for that part. :class:`CommHistory` adds this total back, so
        an overlapped run is not timed faster for validating while its exchange is in flight.
        """
        algorithm = self.algorithm
        return algorithm.exchange.hidden_total if isinstance(algorithm, GatedDANE) else 0.0

    @override
    def log_diagnostics(self, module: Any) -> None:
        # Rank 0's own values: a sync_dist reduction here would add two collectives (a round trip each on a slow
        # link) to every logged step, which cost more than the method's own syncs on `edge` (B3, credit).
        algorithm = self.algorithm
        if not isinstance(algorithm, GatedDANE) or self.global_rank != 0:  # rank 0's alone: the others' are dropped
            return
        values = {"gated_dane/H": float(algorithm.H), "gated_dane/drift": algorithm.drift}
        values.update({f"gated_dane/{name}": value for name, value in algorithm.last_round.items()})
        cost = algorithm.sync_steps
        if cost is not None:
            values["gated_dane/sync_steps"] = cost
        if algorithm.step_seconds is not None:
            values["gated_dane/step_seconds"] = algorithm.step_seconds
        if algorithm.overlap:  # the last joined exchange: its time in the background, and what it blocked of it
            exchange = algorithm.exchange
            values["gated_dane/exchange_seconds"] = exchange.seconds
            values["gated_dane/exchange_wait_seconds"] = exchange.waited
            values["gated_dane/exchange_hidden_seconds"] = exchange.hidden
            # running totals: every join counts, not only the logged steps' (rounds vary in length)
            values["gated_dane/exchange_wait_total_seconds"] = exchange.waited_total
            values["gated_dane/exchange_hidden_total_seconds"] = exchange.hidden_total
        delta = self.delta_hat()
        if delta is not None:
            values["gated_dane/delta_hat"] = delta
        theta = algorithm.prox_theta()
        if theta is not None:  # prox_rho: this rank's θ_m from its estimate
            values["gated_dane/theta"] = float(theta[0])
        log_rank_zero(module, values)

    @override
    def delta_hat(self) -> float | None:
        algorithm = self.algorithm
        if not isinstance(algorithm, GatedDANE) or algorithm.delta_hat is None:
            return None
        return float(algorithm.delta_hat.max())

    @override
    def rank_state_dict(self) -> dict[str, Any]:
        state = super().rank_state_dict()
        if state and self.optimizers:
            # every rank's optimizer walks its own local iterate (Lightning would restore rank 0's everywhere)
            state["optimizer"] = self.optimizers[0].state_dict()
        return state

    @override
    def load_rank_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_rank_state_dict(state)
        if "optimizer" in state and self.optimizers:
            self.optimizers[0].load_state_dict(state["optimizer"])


__all__ = ["GatedDANEStrategy"]
