"""DiLoCo / local SGD: H local optimizer steps per rank, then one all-reduce of the parameter change."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from lit_commeff.algorithms.local_sgd import nesterov_outer_step
from lit_commeff.ledger import CommLedger
from lit_commeff.options import DiLoCoOptions
from lit_commeff.strategy.base import CommStrategy, reject_ddp_kwargs, trainable_parameters
from lit_commeff.strategy.metering import CommMetering, dense_dtype_of
from lit_commeff.transport import DistributedTransport

log = logging.getLogger(__name__)


class DiLoCoStrategy(CommStrategy):
    """DiLoCo: local training with a Nesterov outer step on the averaged parameter change.

    DiLoCo (Douillard et al., "DiLoCo: Distributed Low-Communication Training of Language Models",
    2023, arXiv:2311.08455) — local SGD with an outer optimizer. The model is not wrapped in
    ``DistributedDataParallel``: at setup every rank takes rank 0's parameters and buffers (one
    broadcast, counted as downlink, tag ``"setup"``) and keeps them as the global parameters ``θ``. Each
    rank then takes ``inner_steps`` (H) steps of the optimizer from ``configure_optimizers`` on its own
    batches (Lightning's closure: autocast, gradient clipping, LR schedulers apply). Every H-th step all
    ranks all-reduce the outer gradient ``Δ = θ − θ_local`` as one flat tensor and average it, take one
    step of ``SGD(lr=outer_lr, momentum=outer_momentum, nesterov=True)`` on ``θ`` with gradient ``Δ``
    (plain SGD if ``outer_momentum == 0``) and load the new ``θ`` into the model on every rank. Floating
    point buffers (e.g. BatchNorm running statistics) are averaged at the same time. The paper's defaults:
    ``outer_lr=0.7``, ``outer_momentum=0.9``; with ``inner_steps=1``, ``outer_lr=1``, ``outer_momentum=0``
    and an SGD inner optimizer it is synchronous data-parallel SGD.

    What is counted: one ledger round per optimizer step; a sync step records the all-reduce of Δ
    (tag ``"delta"``, its ``numel * element_size``, in the parameters' dtype) and of the buffers (tag
    ``"buffers"``); other steps record nothing. The setup broadcast is a round of its own.

    Between syncs each rank's model holds its local parameters; validation, the checkpoint's weights
    and the model after ``fit`` are θ (with the buffers of the last sync), the same on every rank. The
    checkpoint also stores, per rank: θ, the outer
    optimizer's state, the local step counter, this rank's local parameters and buffers, and this rank's
    inner optimizer state (Lightning would restore rank 0's on every rank), so stopping and resuming, also
    between syncs, repeats the uninterrupted run exactly on CPU.

    Constraints, rejected at setup with what to do instead: manual optimization, more than one
    optimizer, ``accumulate_grad_batches > 1`` (raise the batch size or ``inner_steps``), fp16 mixed
    precision with a gradient scaler (use ``"bf16-mixed"`` or ``"32-true"``). The trainable parameters
    must share one dtype.

    Args:
        options: :class:`~lit_commeff.options.DiLoCoOptions` (``inner_steps``, H, local optimizer steps
            between two syncs; ``outer_lr``; ``outer_momentum``, Nesterov, in ``[0, 1)``); by default built
            from the keyword options.
        **kwargs: The options' fields as keywords, then the process and launcher options of
            :class:`~lit_commeff.strategy.base.CommStrategy` (``start_method``, ``process_group_backend``,
            ``timeout``, …). ``DistributedDataParallel`` options are rejected: the model is not wrapped.

    Raises:
        OptionError: An option out of range, or a DDP option.
    """

    strategy_name: ClassVar[str] = "diloco"
    #: The options object of the method; its fields are this constructor's keyword options.
    options_cls: ClassVar[type[DiLoCoOptions]] = DiLoCoOptions

    def __init__(self, *, options: DiLoCoOptions | None = None, **kwargs: Any) -> None:
        #: The method's options (checked when built).
        self.options = self.options_cls.take(options, kwargs)
        reject_ddp_kwargs(type(self).__name__, kwargs, self.options_cls.names())
        super().__init__(**kwargs)
        self.inner_steps = self.options.inner_steps
        self.outer_lr = float(self.options.outer_lr)
        self.outer_momentum = float(self.options.outer_momentum)
        self.local_steps = 0
        self._params: list[Tensor] = []
        self._buffers: list[Tensor] = []
        self._global: Tensor | None = None
        self._global_buffers: list[Tensor] = []
        self._stashed: tuple[Tensor, list[Tensor]] | None = None
        self._momentum: Tensor | None = None  # the outer step's Nesterov buffer
        self.transport: DistributedTransport | None = None

    # ------------------------------------------------------------------------------- setup
    @override
    def configure_ddp(self) -> None:
        # No DDP wrapper; every rank starts from rank 0's parameters and buffers (in setup, once the ledger exists).
        module = self._module
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_model([p for _, p in named], [n for n, _ in named])

    @override
    def setup(self, trainer: pl.Trainer) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        if fitting:
            self._check_training_setup(
                trainer,
                accumulate_fix="optimizer steps count towards inner_steps, so raise the batch size or inner_steps",
            )
        super().setup(trainer)
        if not fitting:
            return
        if len(self.optimizers) != 1:
            raise ValueError(
                f"configure_optimizers: {type(self).__name__} needs exactly one (inner) optimizer, got "
                f"{len(self.optimizers)}; put every parameter group into one optimizer."
            )
        module = self._module
        params, _ = trainable_parameters(module, self.optimizers[0])
        ledger = CommLedger(
            dim=sum(p.numel() for p in params), num_workers=self.world_size, dense_dtype=dense_dtype_of(params)
        )
        self.metering = CommMetering(ledger, method=self.strategy_name)
        self.transport = transport = DistributedTransport(
            dim=ledger.dim, dtype=dense_dtype_of(params), device=self.root_device, hub=0, ledger=ledger
        )
        ledger.begin_round()
        transport.broadcast_parameters([*module.parameters(), *module.buffers()], tag="setup")
        self._params = params
        self._buffers = [b for b in module.buffers() if b.is_floating_point()]
        self._global = self._flat_params().clone()
        self._global_buffers = [b.detach().clone() for b in self._buffers]
        self._momentum = None
        self.local_steps = 0
        log.debug(
            "%s: rank %d ready: d=%d over %d ranks, outer sync every %d steps",
            type(self).__name__,
            self.global_rank,
            ledger.dim,
            self.world_size,
            self.inner_steps,
        )

    # ------------------------------------------------------------------------------- training
    def _flat_params(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    @torch.no_grad()
    def _load(self, flat: Tensor, buffers: list[Tensor]) -> None:
        offset = 0
        for p in self._params:
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        for b, value in zip(self._buffers, buffers, strict=True):
            b.copy_(value)

    def _show_global(self) -> None:
        """Put θ (and the buffers of the last sync) into the model, keeping this rank's local state aside."""
        if self._global is None or self._stashed is not None:
            return
        self._stashed = (self._flat_params().clone(), [b.detach().clone() for b in self._buffers])
        self._load(self._global, self._global_buffers)

    def _restore_local(self) -> None:
        if self._stashed is not None:
            self._load(*self._stashed)
            self._stashed = None

    @override
    def on_validation_start(self) -> None:
        # Validate the model DiLoCo produces (θ, the same on every rank), not each rank's local replica.
        super().on_validation_start()
        self._show_global()

    @override
    def on_validation_end(self) -> None:
        self._restore_local()
        super().on_validation_end()

    @override
    def lightning_module_state_dict(self) -> dict[str, Any]:
        # The checkpoint's weights are θ; each rank's local replica travels in its per-rank state.
        self._show_global()
        try:
            # copy: the local replica comes back into these tensors below; non-tensor extra state
            # (a module's get_extra_state(), e.g. a target transform) is kept as it is
            return {
                k: v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
                for k, v in super().lightning_module_state_dict().items()
            }
        finally:
            self._restore_local()

    @override
    def on_train_end(self) -> None:
        # The trained model is θ: local steps since the last sync are not part of it (as in the paper).
        if self._global is not None:
            self._load(self._global, self._global_buffers)
        super().on_train_end()

    @override
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        metering = self._built(self.metering, "metering")
        metering.ledger.begin_round()
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self.local_steps += 1
        if self.local_steps % self.inner_steps == 0:
            self._sync()
            if log.isEnabledFor(logging.DEBUG):
                ledger = metering.ledger
                log.debug(
                    "%s: outer sync after %d local steps (rank %d); all-reduce total %d B",
                    type(self).__name__,
                    self.local_steps,
                    self.global_rank,
                    ledger.allreduce_bytes,
                )
        metering.log_comm_metrics(self._module)
        return output

    @override
    def next_step_communicates(self) -> bool:
        return (self.local_steps + 1) % self.inner_steps == 0  # the next step ends with the outer sync

    @torch.no_grad()
    def _sync(self) -> None:
        """All-reduce Δ = θ − θ_local, take the outer step on θ, load θ; average the floating-point buffers."""
        transport = self._built(self.transport, "transport")
        global_params = self._built(self._global, "global parameters")
        delta = transport.all_reduce((global_params - self._flat_params()).unsqueeze(0), op="mean", tag="delta")
        self._global, self._momentum = nesterov_outer_step(
            global_params, delta, self._momentum, lr=self.outer_lr, momentum=self.outer_momentum
        )
        self._load(self._global, [b.detach() for b in self._buffers])
        for dtype in dict.fromkeys(b.dtype for b in self._buffers):
            group = [b for b in self._buffers if b.dtype == dtype]
            flat = transport.all_reduce(torch.cat([b.reshape(1, -1) for b in group], dim=1), op="mean", tag="buffers")
            offset = 0
            for b in group:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()
        self._global_buffers = [b.detach().clone() for b in self._buffers]

    # ------------------------------------------------------------------------------- state
    @override
    def rank_state_dict(self) -> dict[str, Any]:
        if self._global is None:
            return {}
        return {
            "global": self._global.detach().clone(),
            "outer_momentum_buffer": None if self._momentum is None else self._momentum.clone(),
            "local_steps": self.local_steps,
            "local_params": self._flat_params().clone(),
            "buffers": [b.detach().clone() for b in self._module.buffers()],
            "global_buffers": [b.clone() for b in self._global_buffers],
            "inner_optimizer": self.optimizers[0].state_dict(),
        }

    @override
    def load_rank_state_dict(self, state: Mapping[str, Any]) -> None:
        if self._global is None or not state:
            return
        if state["global"].shape != self._global.shape:
            raise ValueError(
                f"model: the checkpoint's DiLoCo state has {state['global'].numel()} parameters but this model has "
                f"{self._global.numel()}; resume with the same model."
            )
        with torch.no_grad():
            self._global.copy_(state["global"])
            local = state["local_params"].to(self._global.device)
            offset = 0
            for p in self._params:
                p.copy_(local[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
            for b, saved in zip(self._module.buffers(), state["buffers"], strict=True):
                b.copy_(saved)
            self._global_buffers = [b.clone() for b in state["global_buffers"]]
        if "outer_momentum_buffer" in state:
            buffer = state["outer_momentum_buffer"]
        else:  # written when the outer step was a torch.optim.SGD (the same arithmetic): its momentum buffer
            buffer = state["outer_optimizer"]["state"].get(0, {}).get("momentum_buffer")
        self._momentum = None if buffer is None else buffer.to(self._global.device).clone()
        self.optimizers[0].load_state_dict(state["inner_optimizer"])
        self.local_steps = int(state["local_steps"])


__all__ = ["DiLoCoStrategy"]
