"""Strategies that run a hub algorithm of :mod:`lit_commeff.algorithms` over ``torch.distributed``."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from lit_commeff.algorithms import Algorithm
from lit_commeff.algorithms.base import check_positive
from lit_commeff.compression import Compressor, build
from lit_commeff.ledger import CommLedger, Direction
from lit_commeff.strategy.base import CommStrategy, trainable_parameters
from lit_commeff.strategy.flat import FlatParams
from lit_commeff.strategy.metering import CommMetering, dense_dtype_of
from lit_commeff.strategy.oracle import LightningOracle
from lit_commeff.transport import DistributedTransport

CompressorSpec = str | Compressor


def resolve_compressor(
    spec: CompressorSpec, options: Mapping[str, Any] | None, *, field: str = "compressor"
) -> Compressor:
    """A compressor from a registered name plus options, or an instance (options must then be empty)."""
    if isinstance(spec, Compressor):
        if options:
            raise ValueError(
                f"{field}_options: options {dict(options)} were given with a compressor instance; "
                "configure the instance itself or pass its registered name."
            )
        return spec
    if not isinstance(spec, str):
        raise ValueError(
            f"{field}: {field}={spec!r} is neither a compressor name nor a Compressor; use e.g. 'randk' or RandK(...)."
        )
    return build(spec, **dict(options or {}))


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

    Not supported, rejected at setup with what to do instead: manual optimization, several optimizers,
    ``accumulate_grad_batches > 1`` (one step is one round: raise the batch size), fp16 mixed precision
    with a GradScaler (use ``"bf16-mixed"`` or ``"32-true"``).

    Args:
        compressor: A registered compressor name (see :func:`lit_commeff.compression.available`) or an
            instance.
        compressor_options: Options for a compressor given by name, e.g. ``{"ratio": 0.01}``.
        seed: Seed of the method's randomness (epoch lengths, compressor draws); the same on every rank.
        **kwargs: Process and launcher options of :class:`~lit_commeff.strategy.base.CommStrategy`.
    """

    strategy_name: ClassVar[str] = "hub"

    def __init__(
        self,
        *,
        compressor: CompressorSpec = "randk",
        compressor_options: Mapping[str, Any] | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: seed={seed!r} is invalid; use an integer >= 0.")
        self.compressor = resolve_compressor(compressor, compressor_options)
        self.seed = seed
        super().__init__(**kwargs)
        self.algorithm: Algorithm | None = None
        self.transport: DistributedTransport | None = None
        self._flat: FlatParams | None = None
        self._oracle: LightningOracle | None = None
        self._buffers: list[Tensor] = []

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
        module = self.lightning_module
        optimizer: Optimizer = self.optimizers[0]
        params, names = trainable_parameters(module, optimizer)
        self._check_same_model(params, names)
        self._flat = FlatParams(params)
        ledger = CommLedger(
            dim=self._flat.numel, num_workers=self.world_size, dense_dtype=dense_dtype_of(params), hub=0
        )
        self.transport = DistributedTransport(
            dim=self._flat.numel, dtype=self._flat.dtype, device=self.root_device, hub=0, ledger=ledger
        )
        self.metering = CommMetering(ledger, method=self.strategy_name)
        self._sync_initial_state(module, ledger)
        self._buffers = [b for b in module.buffers() if b.is_floating_point()]
        self._oracle = LightningOracle(
            module=module, flat=self._flat, optimizer=optimizer, inner_steps=getattr(self, "inner_steps", 1)
        )
        self.algorithm = self.make_algorithm(transport=self.transport, oracle=self._oracle, x0=self._flat.get())

    def _sync_initial_state(self, module: torch.nn.Module, ledger: CommLedger) -> None:
        """Start every rank from rank 0's parameters and buffers, as DDP does (counted, tag ``setup``)."""
        tensors = [*module.parameters(), *module.buffers()]
        ledger.begin_round()
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        with ledger.measure(Direction.DOWNLINK, nbytes=nbytes, tag="setup"), torch.no_grad():
            for t in tensors:
                dist.broadcast(t.data, src=0)

    # ------------------------------------------------------------------------------- training
    @override
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Any,
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        model = model or self.lightning_module
        trainer = self.lightning_module.trainer
        precision = self.precision_plugin
        first = partial(precision._wrap_closure, model, optimizer, closure)
        clip = partial(
            precision._clip_gradients,
            model,
            optimizer,
            trainer.gradient_clip_val,
            gradient_clip_algorithm=trainer.gradient_clip_algorithm,
        )
        oracle = self._oracle
        oracle.bind(closure, first, clip)
        try:
            self.algorithm.step()
            if oracle.evaluations == 0:  # a round without local gradients (EF-OLGA's error round)
                oracle.evaluate()
            output = self.algorithm.output()
            self._flat.set(output)  # the oracle moved the parameters; the model holds the output iterate
            if self._buffers:  # as DDP does (broadcast_buffers=True): every rank holds the hub's buffers
                synced = self.transport.broadcast(*self._buffers, tag="buffers")
                with torch.no_grad():
                    for buffer, value in zip(self._buffers, synced, strict=True):
                        buffer.copy_(value)
        finally:
            oracle.release()
        optimizer._opt_called = True  # type: ignore[attr-defined]  # the LR scheduler's "step before optimizer" check
        if self.metering.log_comm_metrics(self.lightning_module, delta_hat=self.delta_hat()):
            self.log_diagnostics(self.lightning_module)
        return oracle.first_loss

    # ------------------------------------------------------------------------------- state
    @override
    def rank_state_dict(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm.state_dict()} if self.algorithm is not None else {}

    @override
    def load_rank_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.algorithm is None or "algorithm" not in state:
            return
        self.algorithm.load_state_dict(state["algorithm"])
        self._flat.set(self.algorithm.output())

    def hyperparameters(self) -> dict[str, float]:
        """The algorithm's resolved hyper-parameters (after setup)."""
        return self.algorithm.hyperparameters() if self.algorithm is not None else {}


def positive_int(name: str, value: Any) -> int:
    """Validate an integer option >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {name}={value!r} is invalid; use an integer >= 1.")
    return value


def optional_positive(name: str, value: float | None, *, upper: float | None = None) -> float | None:
    """Validate an optional positive float option."""
    return None if value is None else check_positive(name, value, upper=upper)
