"""Strategies that run a hub algorithm of :mod:`lit_commeff.algorithms` over ``torch.distributed``."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from lit_commeff.algorithms import Algorithm
from lit_commeff.ledger import CommLedger
from lit_commeff.options import HubOptions
from lit_commeff.strategy import lightning_api
from lit_commeff.strategy.base import CommStrategy, reject_ddp_kwargs, trainable_parameters
from lit_commeff.strategy.flat import FlatParams
from lit_commeff.strategy.metering import CommMetering, dense_dtype_of, log_rank_zero
from lit_commeff.strategy.numeric import (
    Fault,
    GuardedTransport,
    NonFiniteGuard,
    Snapshot,
)
from lit_commeff.strategy.oracle import LightningOracle
from lit_commeff.transport import DistributedTransport
from lit_commeff.transport.distributed import resolve_downlink

log = logging.getLogger(__name__)


class HubAlgorithmStrategy(CommStrategy):
    """One Lightning training step = one communication round of a hub algorithm (hub = global rank 0).

    The algorithm's variable ``x`` is the flat vector of the optimizer's parameters (frozen parameters
    stay out and are never sent). Each rank draws its own batches (Lightning's DistributedSampler);
    every gradient the algorithm asks for is this rank's minibatch gradient at the point it names,
    computed by Lightning's closure (so autocast, gradient clipping and the backward hooks apply). The
    hub's own optimizer steps (prox subproblem, gradient steps) use the optimizer from
    ``configure_optimizers`` and its LR schedule. After each step every rank's model holds the method's
    output iterate, so validation, ``self.log(sync_dist=True)`` and checkpoints see the same weights on
    every rank.

    Floating-point buffers (e.g. BatchNorm running statistics) are broadcast from the hub after every
    step, as DDP does by default (``broadcast_buffers=True``), so every rank validates and saves the
    same model; their bytes are counted as downlink (tag ``buffers``). The initial parameters and
    buffers are broadcast from rank 0 at setup (tag ``setup``), as DDP does when it wraps a model.

    Non-finite values (``nonfinite``): every gradient, message and broadcast of a step is checked; if any
    rank meets a NaN or Inf, all ranks undo the step (algorithm, optimizer, parameters, buffers) and
    raise :class:`~lit_commeff.strategy.numeric.NonFiniteError` naming the step, the rank and the tensor
    (``"raise"``), or drop the round and go on, counted in ``comm/skipped_rounds`` (``"skip"``). The hub
    never broadcasts a non-finite value. The agreement costs two small collectives per step, a gather of
    one int32 flag per worker and the hub's downlink of all flags (control traffic, tag ``guard``);
    ``"off"`` removes the checks and those collectives. In the silent steps of OLGA's ``local_steps`` nothing
    is exchanged: a rank that meets a fault there undoes the step itself, and under ``"raise"`` reports it in
    the next communicating step's agreement, where every rank raises.

    The hub's messages reach the workers by the transport's scatter of one buffer (a star, one hop per
    worker) on gloo and by its broadcast on other backends (``downlink="auto"``). On gloo over links with
    latency the star is about 2.8x faster than gloo's broadcast tree, in which workers forward to workers
    over their own uplinks; NCCL's ring broadcast is the better choice for large messages on GPUs. The
    bytes each worker receives, and so the ledger, are the same either way.

    Not supported, rejected at setup with what to do instead: manual optimization, several optimizers,
    ``accumulate_grad_batches > 1`` (one step is one round: raise the batch size), fp16 mixed precision
    with a GradScaler (use ``"bf16-mixed"`` or ``"32-true"``).

    Args:
        options: The method's options, an instance of :attr:`options_cls` (e.g.
            :class:`~lit_commeff.options.OLGAOptions`); by default built from the keyword options. Its fields
            also read as attributes (``strategy.theta``).
        **kwargs: The fields of :attr:`options_cls` as keywords (``compressor``, ``compressor_options``,
            ``seed``, ``nonfinite``, ``downlink`` and the method's own; meanings and defaults in
            ``docs/strategies.md``), then the process and launcher options of
            :class:`~lit_commeff.strategy.base.CommStrategy`. ``DistributedDataParallel`` options are
            rejected, naming the argument: the model is not wrapped.

    Raises:
        OptionError: An option out of range, a combination that cannot work, or a DDP option.
    """

    strategy_name: ClassVar[str] = "hub"

    #: The options object of the method; its fields are this constructor's keyword options.
    options_cls: ClassVar[type[HubOptions]] = HubOptions

    def __init__(self, *, options: HubOptions | None = None, **kwargs: Any) -> None:
        self.options = self.options_cls.take(options, kwargs)
        reject_ddp_kwargs(type(self).__name__, kwargs, self.options_cls.names())
        self.compressor = self.options.built_compressor
        super().__init__(**kwargs)
        self.algorithm: Algorithm | None = None
        self.transport: DistributedTransport | None = None
        self._flat: FlatParams | None = None
        self._oracle: LightningOracle | None = None
        self._buffers: list[Tensor] = []
        self._guard: NonFiniteGuard | None = None
        self._pending: Fault | None = None  # a silent step's fault, reported at the next communicating step
        self.skipped_rounds = 0

    def __getattr__(self, name: str) -> Any:
        # Called only when normal lookup fails: the options' fields read as attributes (strategy.theta).
        options = self.__dict__.get("options")
        if options is not None and name in options.names():
            return getattr(options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------------------- subclass API
    def make_algorithm(self, *, transport: DistributedTransport, oracle: LightningOracle, x0: Tensor) -> Algorithm:
        """Build the algorithm for this run."""
        raise NotImplementedError

    def delta_hat(self) -> float | None:
        """The method's current similarity estimate, if it keeps one."""
        return None

    def log_diagnostics(self, module: Any) -> None:
        """Log the method's per-round diagnostics (called on the steps whose metrics are logged)."""

    # ------------------------------------------------------------------------------- setup
    @override
    def configure_ddp(self) -> None:
        # No DDP wrapper: this strategy communicates itself, in optimizer_step.
        pass

    @override
    def setup(self, trainer: pl.Trainer) -> None:
        super().setup(trainer)
        if trainer.state.fn != "fit":
            return
        self._require_world(self.world_size)
        self._check_training_setup(
            trainer, accumulate_fix="one training step is one communication round, so raise the batch size instead"
        )
        if len(self.optimizers) != 1:
            raise ValueError(
                f"configure_optimizers: {type(self).__name__} needs exactly one optimizer, got {len(self.optimizers)}; "
                "put every parameter group into one optimizer."
            )
        module = self._module
        optimizer: Optimizer = self.optimizers[0]
        params, names = trainable_parameters(module, optimizer)
        self._check_same_model(params, names)
        self._flat = flat = FlatParams(params)
        ledger = CommLedger(dim=flat.numel, num_workers=self.world_size, dense_dtype=dense_dtype_of(params), hub=0)
        transport_args: dict[str, Any] = {
            "dim": flat.numel,
            "dtype": flat.dtype,
            "device": self.root_device,
            "hub": 0,
            "ledger": ledger,
            "downlink": self.resolved_downlink(),
        }
        if self.nonfinite == "off":
            self._guard = None
            self.transport = DistributedTransport(**transport_args)
        else:
            self._guard = NonFiniteGuard(
                names=names, numels=flat.numels, rank=self.global_rank, world_size=self.world_size
            )
            self.transport = GuardedTransport(guard=self._guard, **transport_args)
        self.metering = CommMetering(ledger, method=self.strategy_name)
        self._sync_initial_state(module, ledger)
        self._buffers = [b for b in module.buffers() if b.is_floating_point()]
        self._oracle = LightningOracle(
            module=module,
            flat=flat,
            optimizer=optimizer,
            inner_steps=getattr(self, "inner_steps", 1),
            guard=self._guard,
        )
        self.algorithm = self.make_algorithm(transport=self.transport, oracle=self._oracle, x0=flat.get())
        log.debug(
            "%s: rank %d ready: %s over %d ranks, d=%d, downlink %s, nonfinite %s",
            type(self).__name__,
            self.global_rank,
            type(self.algorithm).__name__,
            self.world_size,
            self._flat.numel,
            transport_args["downlink"],
            self.nonfinite,
        )

    @override
    def next_step_communicates(self) -> bool:
        return self.algorithm is None or self.algorithm.communicates()

    @override
    def next_step_carries_sigterm(self) -> bool:
        # the guard's agreement (or the method's own message) carries rank 0's SIGTERM bit; silent steps wait
        in_band = bool(getattr(self.algorithm, "agrees_in_band", False))
        return (self._guard is not None or in_band) and self.next_step_communicates()

    def resolved_downlink(self) -> str:
        """The downlink collective in use: ``downlink``, with ``"auto"`` resolved from the backend."""
        return resolve_downlink(self.downlink)

    def _sync_initial_state(self, module: torch.nn.Module, ledger: CommLedger) -> None:
        """Start every rank from rank 0's parameters and buffers, as DDP does (counted, tag ``setup``)."""
        ledger.begin_round()
        self._built(self.transport, "transport").broadcast_parameters(
            [*module.parameters(), *module.buffers()], tag="setup"
        )

    # ------------------------------------------------------------------------------- training
    @override
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Any,
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        module = self._module
        model = model or module
        trainer = module.trainer
        precision = self.precision_plugin
        first = lightning_api.first_evaluation(precision, model, optimizer, closure)
        clip = lightning_api.gradient_clipper(precision, model, optimizer, trainer)
        oracle = self._built(self._oracle, "oracle")
        algorithm = self._built(self.algorithm, "algorithm")
        oracle.bind(closure, first, clip)
        guard = self._guard
        snapshot = None
        communicates = algorithm.communicates()  # False: a local step, no collective on any rank
        # the method's messages carry faults and rank 0's stop (Gated DANE's overlap): no agreement of our own
        in_band = communicates and bool(getattr(algorithm, "agrees_in_band", False))
        if in_band:
            algorithm.outbound_fault = self._pending is not None  # type: ignore[attr-defined]
            algorithm.outbound_stop = self.global_rank == 0 and lightning_api.sigterm_received(trainer)  # type: ignore[attr-defined]
        if guard is not None:
            guard.begin(trainer.global_step)
            if not in_band:  # an in-band step is never undone: its collectives are out
                snapshot = Snapshot.take(algorithm, optimizer, self._buffers)
        try:
            algorithm.step()
            if oracle.evaluations == 0:  # a round without local gradients (EF-OLGA's error round)
                oracle.evaluate()
            output = algorithm.output()
            if guard is not None:
                guard.check(output, "iterate")
            self._built(self._flat, "flat").set(output)  # the oracle moved the parameters; the model holds the output
            if self._buffers and communicates:  # as DDP does (broadcast_buffers=True): ranks hold the hub's buffers
                synced = self._built(self.transport, "transport").broadcast(*self._buffers, tag="buffers")
                with torch.no_grad():
                    for buffer, value in zip(self._buffers, synced, strict=True):
                        buffer.copy_(value)
            if in_band:
                self._settle_in_band(guard)
            elif guard is not None:
                snapshot = self._built(snapshot, "snapshot")
                if communicates:
                    self._settle(guard, snapshot, optimizer)
                else:
                    self._settle_local(guard, snapshot, optimizer)
        except RuntimeError as error:
            if is_peer_failure(error):
                raise CollectiveError(self._peer_failure_message(trainer.global_step, error)) from error
            raise
        finally:
            oracle.release()
        lightning_api.mark_optimizer_stepped(optimizer)  # workers take no optimizer step of their own
        if self._built(self.metering, "metering").log_comm_metrics(module, delta_hat=self.delta_hat()):
            self.log_diagnostics(module)
            if guard is not None:
                log_rank_zero(module, {"comm/skipped_rounds": float(self.skipped_rounds)})
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: step %d done on rank %d (%s, %d gradient evaluations)",
                type(self).__name__,
                trainer.global_step,
                self.global_rank,
                "communicating" if communicates else "silent",
                oracle.evaluations,
            )
        return oracle.first_loss

    def _peer_failure_message(self, step: int, error: RuntimeError) -> str:
        timeout = f"{self._timeout.total_seconds():g} s" if self._timeout is not None else "the default"
        reason = str(error).strip().splitlines()[0][:300]
        return (
            f"rank {self.global_rank}, step {step}: a collective did not complete ({reason}). A peer rank died or the "
            f"network to it was down for longer than the collective timeout ({timeout}; timeout_s in the CLI, "
            "timeout= in Python). Fix the peer or the link, then rerun the same command with ckpt_path=last to "
            "resume from the last checkpoint."
        )

    def _settle(self, guard: NonFiniteGuard, snapshot: Snapshot, optimizer: Optimizer) -> None:
        """Agree on faults; on one, undo the step on every rank, then raise or count the skip."""
        if self._pending is not None:  # a local step's fault under "raise": every rank stops here
            guard.fault = guard.fault or self._pending
            self._pending = None
        trainer = self._module.trainer
        faulty = guard.agree(
            self._built(self.transport, "transport"),
            stop=self.global_rank == 0 and lightning_api.sigterm_received(trainer),
        )
        self._stop_agreed = self._stop_agreed or guard.stop
        if not faulty:
            return
        algorithm = self._built(self.algorithm, "algorithm")
        snapshot.restore(algorithm, optimizer, self._buffers)
        self._built(self._flat, "flat").set(algorithm.output())
        if self.nonfinite == "raise":
            raise guard.error(faulty)
        self.skipped_rounds += 1
        where = str(guard.fault) if guard.fault is not None else f"step {guard.step}: reported by ranks {faulty}"
        rank_zero_warn(f"lit_commeff: round skipped (nonfinite='skip'): {where}")

    def _settle_in_band(self, guard: NonFiniteGuard | None) -> None:
        """A step whose messages carried the faults: nothing to undo, act on what the joined reply said.

        The step's collectives are out, so it cannot be undone: a fault of this rank's own in it was reported in
        its message (zeros, its round's progress dropped) and the hub voids that round. The reply joined in this
        step (one round late) says whether a round was voided and whether rank 0 asked to stop; every rank learns
        it in the same step, so under ``"raise"`` every rank raises here.
        """
        algorithm = self._built(self.algorithm, "algorithm")
        if guard is not None and guard.fault is not None:
            if self.nonfinite == "raise":
                self._pending = self._pending or guard.fault
            else:
                warnings.warn(
                    f"lit_commeff: round dropped on this rank (nonfinite='skip'): {guard.fault}", stacklevel=2
                )
        inbound = getattr(algorithm, "inbound", None)
        if inbound is None:
            return
        faulty, stop = inbound
        self._stop_agreed = self._stop_agreed or stop
        if faulty is None:
            return
        if guard is not None and self.nonfinite == "raise":
            guard.fault = self._pending or guard.fault
            self._pending = None
            raise guard.error([faulty])
        self.skipped_rounds += 1
        rank_zero_warn(f"lit_commeff: round voided by the hub (nonfinite='skip'): rank {faulty} reported a fault")

    def _settle_local(self, guard: NonFiniteGuard, snapshot: Snapshot, optimizer: Optimizer) -> None:
        """A silent (local) step touched no other rank: undo it here, and raise at the next communicating step.

        Under ``"skip"`` dropping it is this rank's own decision (the step's work is undone, the schedule goes
        on). Under ``"raise"`` the other ranks are already on their way to the next collective, so the fault
        is kept and reported in that step's agreement, where every rank undoes that step and raises.
        """
        if guard.fault is None:
            return
        algorithm = self._built(self.algorithm, "algorithm")
        snapshot.restore(algorithm, optimizer, self._buffers)
        algorithm.skip_local_step()  # stay on the shared schedule: the next communicating step is everyone's
        self._built(self._flat, "flat").set(algorithm.output())
        if self.nonfinite == "raise":
            self._pending = self._pending or guard.fault
            return
        self.skipped_rounds += 1
        warnings.warn(f"lit_commeff: silent step skipped on this rank (nonfinite='skip'): {guard.fault}", stacklevel=2)

    # ------------------------------------------------------------------------------- state
    @override
    def rank_state_dict(self) -> dict[str, Any]:
        if self.algorithm is None:
            return {}
        return {"algorithm": self.algorithm.state_dict(), "skipped_rounds": self.skipped_rounds}

    @override
    def load_rank_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.algorithm is None or "algorithm" not in state:
            return
        self.skipped_rounds = int(state.get("skipped_rounds", 0))
        self.algorithm.load_state_dict(state["algorithm"])
        self._built(self._flat, "flat").set(self.algorithm.output())

    def hyperparameters(self) -> dict[str, float]:
        """The algorithm's resolved hyper-parameters (after setup)."""
        return self.algorithm.hyperparameters() if self.algorithm is not None else {}


class CollectiveError(RuntimeError):
    """A collective failed because a peer died or could not be reached within the timeout."""


_PEER_FAILURE = ("Timed out", "timed out", "Connection closed by peer", "Connection reset", "Broken pipe")


def is_peer_failure(error: BaseException) -> bool:
    """Whether a collective's error means a lost peer or link (gloo/NCCL wording) rather than a bug."""
    return any(mark in str(error) for mark in _PEER_FAILURE)
