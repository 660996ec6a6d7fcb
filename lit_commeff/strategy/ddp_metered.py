"""Lightning's DDP with every gradient all-reduce counted: the dense baseline, metered like the other methods."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.trainer.states import TrainerFn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from typing_extensions import override

from lit_commeff.ledger import CommLedger, Direction
from lit_commeff.strategy.base import CommStrategy
from lit_commeff.strategy.metering import CommMetering, dense_dtype_of

log = logging.getLogger(__name__)

#: DDPStrategy options that would replace or bypass the metered hook (their traffic would go uncounted).
_HOOK_OPTIONS = ("ddp_comm_state", "ddp_comm_hook", "ddp_comm_wrapper", "model_averaging_period")


class BucketMessage(NamedTuple):
    """One all-reduce a communication hook issued for a gradient bucket.

    Attributes:
        tag: Ledger tag (``"dense"``, ``"uncompressed"``, ``"powersgd_p"``, …).
        nbytes: ``numel * element_size`` of the tensor handed to the all-reduce.
    """

    tag: str
    nbytes: int


class _BucketRecord(NamedTuple):
    bucket: int  # the bucket's index (not `index`, which would shadow tuple.index)
    messages: list[BucketMessage]
    seconds: float


class _MeteredHookState:
    """The state DDP passes to the metered hook: the inner hook, its state, and the strategy that counts."""

    def __init__(self, strategy: MeteredDDPStrategy, inner_state: object, inner_hook: Callable) -> None:
        self.strategy = strategy
        self.inner_state = inner_state
        self.inner_hook = inner_hook

    def run(self, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        strategy = self.strategy
        context = strategy._before_bucket(bucket)
        start = time.perf_counter()
        future = self.inner_hook(self.inner_state, bucket)

        def count(done: torch.futures.Future[torch.Tensor]) -> torch.Tensor:
            value = done.value()  # re-raises a failed collective
            seconds = time.perf_counter() - start
            messages = strategy._bucket_messages(bucket, context)
            # list.append is atomic: gloo completes futures on its own threads. The main thread moves
            # the records into the ledger after the optimizer step, when DDP has waited for every bucket.
            strategy._pending.append(_BucketRecord(bucket.index(), messages, seconds))
            return value

        return future.then(count)


def _metered_hook(name: str) -> Callable:
    """A DDP comm hook that runs ``state.run``; DDP logs its ``__qualname__`` (``metered(<inner hook>)``)."""

    # No annotations: DDP compares them with dist.GradBucket, and this module's annotations are strings.
    def hook(state, bucket):
        return state.run(bucket)

    hook.__name__ = hook.__qualname__ = f"metered({name})"
    return hook


class MeteredDDPStrategy(CommStrategy):
    """Plain DDP (``DistributedDataParallel``, gradient all-reduce) with exact byte accounting.

    The model is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel` as by Lightning's
    ``"ddp"`` strategy, and a communication hook is registered on every backend, CPU/gloo included
    (Lightning registers hooks only on CUDA). The hook runs torch's ``allreduce_hook`` — the same
    arithmetic as DDP without a hook, so the trajectory is DDP's — and counts, for each gradient bucket,
    the bytes of the tensor it hands to the all-reduce (``bucket.buffer()``: ``numel * element_size``),
    tag ``"dense"``. One optimizer step is one ledger round; per-rank bytes per step are the bytes of
    every trainable parameter's gradient in the parameters' dtype (DDP's buckets hold exactly those).
    On the wire (the metering's ``comm/wire_*``) each rank of the ring sends and receives
    ``2 (M - 1) / M`` of them per step, the dense reference every method's ratios are taken against.

    Each bucket is recorded as one all-reduce message, so a model spread over several buckets sends
    several messages per round; ``comm_time_s`` adds each bucket's time from the hook call to the end
    of its all-reduce (buckets overlap with the backward pass and with each other).

    Subclasses change what is communicated by overriding :meth:`comm_hook` and say what was sent
    through :meth:`_before_bucket` / :meth:`_bucket_messages`.

    Lightning's ``ddp_comm_state``, ``ddp_comm_hook``, ``ddp_comm_wrapper`` and ``model_averaging_period``
    are rejected (they would replace the metered hook or communicate outside it). Everything else is
    passed to :class:`~lit_commeff.strategy.base.CommStrategy` and ``DistributedDataParallel``
    (e.g. ``bucket_cap_mb``, ``find_unused_parameters``, ``static_graph``).

    Args:
        **kwargs: Process, launcher and ``DistributedDataParallel`` options of
            :class:`~lit_commeff.strategy.base.CommStrategy`.
    """

    strategy_name: ClassVar[str] = "ddp_metered"

    def __init__(self, **kwargs: Any) -> None:
        given = [k for k in _HOOK_OPTIONS if kwargs.get(k) is not None]
        if given:
            raise ValueError(
                f"{given[0]}: {type(self).__name__} registers its own metered communication hook, so "
                f"{', '.join(given)} cannot be used; use PowerSGDStrategy for PowerSGD, or Lightning's DDPStrategy "
                "for other hooks (their traffic is then not counted)."
            )
        super().__init__(**kwargs)
        self._pending: list[_BucketRecord] = []

    # ------------------------------------------------------------------------------- subclass API
    def comm_hook(self) -> tuple[object, Callable]:
        """The inner DDP communication hook and its state (default: torch's ``allreduce_hook``, world group)."""
        return None, allreduce_hook

    def _before_bucket(self, bucket: dist.GradBucket) -> Any:
        """Called before the inner hook with each bucket; its result is passed to :meth:`_bucket_messages`."""
        return None

    def _bucket_messages(self, bucket: dist.GradBucket, context: Any) -> list[BucketMessage]:
        """The all-reduces the inner hook issued for ``bucket`` (called once its future completed)."""
        buffer = bucket.buffer()
        return [BucketMessage("dense", buffer.numel() * buffer.element_size())]

    # ------------------------------------------------------------------------------- setup
    @override
    def _register_ddp_hooks(self) -> None:
        assert isinstance(self.model, DistributedDataParallel)
        inner_state, inner_hook = self.comm_hook()
        state = _MeteredHookState(self, inner_state, inner_hook)
        name = getattr(inner_hook, "__qualname__", repr(inner_hook))
        self.model.register_comm_hook(state, _metered_hook(name))
        log.debug("%s: metered DDP communication hook registered around %s", type(self).__name__, name)

    @override
    def setup(self, trainer: pl.Trainer) -> None:
        self._pending = []
        super().setup(trainer)
        if trainer.state.fn != TrainerFn.FITTING:
            return
        params = [p for p in self._module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("model: the LightningModule has no trainable parameters (requires_grad=True) to train.")
        ledger = CommLedger(
            dim=sum(p.numel() for p in params), num_workers=self.world_size, dense_dtype=dense_dtype_of(params)
        )
        self.metering = CommMetering(ledger, method=self.strategy_name)

    # ------------------------------------------------------------------------------- training
    @override
    def optimizer_step(
        self,
        optimizer: Optimizer,
        closure: Callable[[], Any],
        model: pl.LightningModule | torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.metering is None:
            return super().optimizer_step(optimizer, closure, model, **kwargs)
        self.metering.ledger.begin_round()
        output = super().optimizer_step(optimizer, closure, model, **kwargs)
        self._flush_pending()
        self.metering.log_comm_metrics(self.lightning_module)
        return output

    def _flush_pending(self) -> None:
        """Move the buckets' records (collectives already complete) into the open ledger round."""
        records, self._pending = self._pending, []
        ledger = self._built(self.metering, "metering").ledger
        senders = list(range(self.world_size))
        for record in sorted(records, key=lambda r: r.bucket):
            last = len(record.messages) - 1
            for i, message in enumerate(record.messages):
                ledger.record(
                    Direction.ALLREDUCE,
                    nbytes=message.nbytes,
                    sender=senders,
                    seconds=record.seconds if i == last else 0.0,
                    tag=message.tag,
                )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s: step all-reduced %d buckets, %d B from this rank",
                type(self).__name__,
                len(records),
                sum(m.nbytes for r in records for m in r.messages),
            )


__all__ = ["BucketMessage", "MeteredDDPStrategy"]
