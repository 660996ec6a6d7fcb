"""Every use of Lightning's (and torch's) private API in lit_commeff, in one place.

The strategies drive Lightning's training step themselves (one step is one communication round), which
needs a few attributes that Lightning and torch do not document: the precision plugin's closure wrapper
and gradient clipping, the loop closure's cached result, the training loop's per-step SIGTERM broadcast
and the SIGTERM handler's own broadcast, DDPStrategy's protected hooks and kwargs, and torch's
LR-scheduler flag. Each touch point is one function here. It checks, when called, that what it needs
exists, and otherwise raises :class:`LightningAPIError` naming the installed version, the attribute and
what to do.
``tests/test_lightning_api.py`` exercises every function against the installed Lightning, so an
upgrade that moves one of them fails there, with that message, rather than somewhere in a training run.
"""

from __future__ import annotations

import functools
import inspect
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import lightning
import torch
from torch.optim.lr_scheduler import LRScheduler

#: The Lightning release line these touch points are tested with (``tests/test_lightning_api.py``).
TESTED_LIGHTNING = "2.6"

#: Marks a SIGTERM check installed by :func:`replace_sigterm_broadcast`.
_MARK = "_lit_commeff"


class LightningAPIError(RuntimeError):
    """A private Lightning or torch attribute lit_commeff relies on is missing from the installed version."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _missing(owner: str, attribute: str, use: str) -> LightningAPIError:
    return LightningAPIError(
        f"{owner}.{attribute}: lit_commeff uses it ({use}), but lightning {lightning.__version__} (torch "
        f"{torch.__version__}) does not have it. lit_commeff is tested with lightning {TESTED_LIGHTNING}.x: "
        f"install it (pip install 'lightning=={TESTED_LIGHTNING}.*'), or file an issue with lit_commeff naming this "
        "Lightning version and this message."
    )


def _require(obj: Any, attribute: str, use: str) -> Any:
    try:
        return getattr(obj, attribute)
    except AttributeError:
        owner = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__name__
        raise _missing(owner, attribute, use) from None


# ----------------------------------------------------------------------------------- precision plugin
def first_evaluation(precision: Any, model: Any, optimizer: Any, closure: Callable[[], Any]) -> Callable[[], Any]:
    """The step's first closure call as Lightning makes it: ``Precision._wrap_closure``.

    Calling the result runs ``closure`` (training_step, zero_grad, backward), then the
    ``on_before_optimizer_step`` hooks and the Trainer's gradient clipping, and returns the closure's loss.

    Raises:
        LightningAPIError: The precision plugin has no ``_wrap_closure``.
    """
    wrap = _require(precision, "_wrap_closure", "the first gradient evaluation of a step, with Lightning's hooks")
    return functools.partial(wrap, model, optimizer, closure)


def gradient_clipper(precision: Any, model: Any, optimizer: Any, trainer: Any) -> Callable[[], None]:
    """The Trainer's gradient clipping (``gradient_clip_val``/``_algorithm``): ``Precision._clip_gradients``.

    Raises:
        LightningAPIError: The precision plugin has no ``_clip_gradients``.
    """
    clip = _require(precision, "_clip_gradients", "gradient clipping after the extra evaluations of a step")
    return functools.partial(
        clip, model, optimizer, trainer.gradient_clip_val, gradient_clip_algorithm=trainer.gradient_clip_algorithm
    )


# ----------------------------------------------------------------------------------- loop closure and logging
@contextmanager
def preserved_closure_result(closure: Any) -> Iterator[None]:
    """Keep the loop closure's cached result (``Closure._result``) across further calls of the closure.

    Lightning's loop reports the loss and outputs of the closure's last call; inside this block the
    closure may be called again (the hub's extra evaluations) and the first call's result is put back.

    Raises:
        LightningAPIError: The closure has no ``_result``.
    """
    if not hasattr(closure, "_result"):
        raise _missing(type(closure).__name__, "_result", "reporting the first evaluation's loss of a step")
    saved = closure._result
    try:
        yield
    finally:
        if saved is not None:
            closure._result = saved


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


@contextmanager
def silenced_logging(module: Any) -> Iterator[None]:
    """``module.log`` and ``module.log_dict`` do nothing inside this block (restored after it).

    Raises:
        LightningAPIError: The module's class has no ``log`` or ``log_dict`` method.
    """
    names = ("log", "log_dict")
    for name in names:
        if not callable(getattr(type(module), name, None)):
            raise _missing(type(module).__name__, name, "silencing logging during the extra evaluations of a step")
    shadowed = {name: vars(module)[name] for name in names if name in vars(module)}
    for name in names:
        setattr(module, name, _no_log)
    try:
        yield
    finally:
        for name in names:
            if name in shadowed:
                setattr(module, name, shadowed[name])
            else:
                delattr(module, name)


def attached_trainer(module: Any) -> Any | None:
    """The Trainer a LightningModule is attached to, or ``None`` (``LightningModule._trainer``).

    ``module.trainer`` raises when the module is not attached; this returns ``None`` instead.

    Raises:
        LightningAPIError: The module has no ``_trainer``.
    """
    return _require(module, "_trainer", "reading the Trainer's logging cadence")


def log_step_metrics(trainer: Any, metrics: dict[str, float], *, prog_bar: dict[str, float] | None = None) -> None:
    """This step's ``metrics`` handed to the Trainer's loggers in one call, without ``LightningModule.log``.

    ``self.log`` costs about 0.6 ms per value on CPU, and the strategies log some 30 values a logged step. The
    values go where Lightning's own step logging takes them: ``trainer.callback_metrics`` (as tensors, the form
    ``self.log`` leaves there) and, on the steps Lightning writes logs (``_LoggerConnector.should_update_logs``),
    every logger's ``log_metrics`` (then ``save``) at the step Lightning logs this step at
    (``_LoggerConnector.log_metrics``, ``_batches_that_stepped``) and ``trainer.logged_metrics``. ``prog_bar``
    values go to ``trainer.progress_bar_metrics`` only. Call it on rank 0, inside the training step: the loggers
    write there.

    Raises:
        LightningAPIError: The Trainer has no ``_logger_connector.log_metrics`` or ``should_update_logs``, or its
            fit loop no ``epoch_loop._batches_that_stepped``.
    """
    use = "logging a step's communication metrics in one call"
    connector = _require(trainer, "_logger_connector", use)
    log = _require(connector, "log_metrics", use)
    step = _require(_require(trainer, "fit_loop", use).epoch_loop, "_batches_that_stepped", use)
    values = {name: torch.tensor(float(value)) for name, value in metrics.items()}
    if _require(connector, "should_update_logs", use):
        log(values, step=int(step))
    trainer.callback_metrics.update(values)
    if prog_bar:
        trainer.progress_bar_metrics.update({name: float(value) for name, value in prog_bar.items()})


def uses_distributed_sampler(trainer: Any) -> bool:
    """``Trainer(use_distributed_sampler=...)``: whether Lightning wraps the dataloaders' samplers.

    Read from ``trainer._accelerator_connector`` (the Trainer has no public accessor).

    Raises:
        LightningAPIError: The Trainer has no ``_accelerator_connector.use_distributed_sampler``.
    """
    use = "checking that a data module which shards itself is not resharded"
    connector = _require(trainer, "_accelerator_connector", use)
    return bool(_require(connector, "use_distributed_sampler", use))


# ----------------------------------------------------------------------------------- SIGTERM
def sigterm_received(trainer: Any) -> bool:
    """Whether this process received SIGTERM during the run (``Trainer.received_sigterm``).

    Raises:
        LightningAPIError: The Trainer has no ``received_sigterm``.
    """
    return bool(_require(trainer, "received_sigterm", "carrying rank 0's SIGTERM in the strategy's own rounds"))


def replace_sigterm_broadcast(trainer: Any, wrap: Callable[[Callable[[], None]], Callable[[], None]]) -> bool:
    """Replace the training loop's per-step SIGTERM broadcast with ``wrap(lightning_broadcast)``.

    Lightning (2.6) calls ``trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor()`` before every
    training step when more than one process runs; it broadcasts rank 0's SIGTERM flag and raises
    ``SIGTERMException`` on every rank when it is set. ``wrap`` gets that function and returns the check
    to call instead (it may call Lightning's, or not).

    Returns:
        Whether the check was installed: ``False`` if ours is installed already, or if this Lightning
        (older than 2.6) broadcasts no SIGTERM flag per step, so there is nothing to replace.

    Raises:
        LightningAPIError: Lightning 2.6 or later without ``_broadcast_sigterm_tensor`` on the epoch loop.
    """
    loop = trainer.fit_loop.epoch_loop
    current = getattr(loop, "_broadcast_sigterm_tensor", None)
    if current is None:
        if _version(lightning.__version__) < (2, 6):
            return False
        raise _missing(type(loop).__name__, "_broadcast_sigterm_tensor", "sending SIGTERM with the strategy's rounds")
    if getattr(current, _MARK, False):
        return False
    check = wrap(current)
    setattr(check, _MARK, True)
    loop._broadcast_sigterm_tensor = check
    return True


def drop_sigterm_handler_broadcast(trainer: Any) -> bool:
    """Take the ``dist.broadcast`` out of Lightning's SIGTERM handler on this process.

    Lightning (2.6) registers ``_SignalConnector._sigterm_notifier_fn`` as the SIGTERM handler. It
    forwards the signal to the processes Lightning's launcher started, sets ``received_sigterm`` and, in a
    distributed run, calls ``dist.broadcast(src=0)`` from inside the handler, which only lines up with
    the other ranks' per-step broadcast. With that broadcast replaced by the strategy's own rounds
    (:func:`replace_sigterm_broadcast`), the handler's collective has no partner: rank 0 blocks in it (or
    a peer receives it in place of the step's data) until the collective timeout. The handler installed
    here does the rest of Lightning's work (forward, set the flag) and no collective.

    Returns:
        Whether Lightning's handler was found and replaced (``False`` when another handler is registered,
        e.g. outside ``Trainer.fit``, or ours is installed already).

    Raises:
        LightningAPIError: The Trainer has no ``_signal_connector`` with ``_sigterm_notifier_fn``.
    """
    use = "sending SIGTERM without a collective in the signal handler"
    connector = _require(trainer, "_signal_connector", use)
    lightning_notifier = _require(connector, "_sigterm_notifier_fn", use)
    handlers = getattr(signal.getsignal(signal.SIGTERM), "signal_handlers", None)
    if not isinstance(handlers, list) or lightning_notifier not in handlers:
        return False
    logger = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")

    def notifier(signum: int, frame: Any) -> None:
        logger.info(f"[rank: {trainer.global_rank}] Received SIGTERM: {signum}")
        if not connector.received_sigterm:
            launcher = trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        connector.received_sigterm = True

    handlers[handlers.index(lightning_notifier)] = notifier
    return True


# ----------------------------------------------------------------------------------- DDPStrategy
def ddp_kwargs(strategy: Any) -> dict[str, Any]:
    """The keyword arguments DDPStrategy passes to ``DistributedDataParallel`` (``DDPStrategy._ddp_kwargs``).

    The dict itself: changes reach the DDP wrapper built in ``_setup_model``.

    Raises:
        LightningAPIError: The strategy has no ``_ddp_kwargs`` dict.
    """
    kwargs = _require(strategy, "_ddp_kwargs", "sizing DDP's gradient buckets")
    if not isinstance(kwargs, dict):
        raise _missing(type(strategy).__name__, "_ddp_kwargs (a dict)", "sizing DDP's gradient buckets")
    return kwargs


def process_group_backend(strategy: Any) -> str:
    """The process group's backend, ``"gloo"``, ``"nccl"``, … (``DDPStrategy._get_process_group_backend``).

    Raises:
        LightningAPIError: The strategy has no ``_get_process_group_backend``.
    """
    return str(_require(strategy, "_get_process_group_backend", "choosing DDP buckets per backend")())


def check_overrides(cls: type) -> None:
    """Fail if a method ``cls`` marks ``@override`` no longer exists in any of its bases.

    The strategies override protected DDPStrategy hooks (``_configure_launcher``, ``_setup_model``,
    ``_register_ddp_hooks``); if Lightning renamed one, the override would silently never run.
    Checked once per class.

    Raises:
        LightningAPIError: Naming the first such method.
    """
    _check_overrides(cls)


@functools.cache
def _check_overrides(cls: type) -> None:
    for index, klass in enumerate(cls.__mro__):
        if _is_lightning(klass):
            continue  # lit_commeff's classes and their users' subclasses
        bases = cls.__mro__[index + 1 :]
        for name, value in vars(klass).items():
            if getattr(value, "__override__", False) and not any(name in vars(base) for base in bases):
                lightning_base = next((b for b in bases if _is_lightning(b)), object)
                raise _missing(lightning_base.__name__, name, f"{klass.__name__} overrides it")


def _is_lightning(klass: type) -> bool:
    return klass.__module__.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric", "torch", "builtins")


# ----------------------------------------------------------------------------------- torch
def powersgd_should_compress(rows: int, cols: int, rank: int, min_compression_rate: float) -> bool:
    """Whether torch's ``powerSGD_hook`` compresses a ``rows x cols`` gradient matrix at this rank.

    The hook's own rule (``powerSGD_hook._should_compress``), so the metered bytes follow what it sends.

    Raises:
        LightningAPIError: torch's PowerSGD hook module has no ``_should_compress``.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook

    rule = _require(powerSGD_hook, "_should_compress", "counting the bytes PowerSGD sends")
    return bool(rule(rows, cols, rank, min_compression_rate)[0])


# ----------------------------------------------------------------------------------- torch LR scheduler
@functools.cache
def _scheduler_reads_flag() -> bool:
    code = inspect.unwrap(LRScheduler.step).__code__
    return "_opt_called" in code.co_consts or "_opt_called" in code.co_names


def mark_optimizer_stepped(optimizer: torch.optim.Optimizer) -> None:
    """Tell torch's LR scheduler that the optimizer stepped this iteration (``optimizer._opt_called``).

    On ranks that take no optimizer step of their own (the hub methods' workers), the scheduler would
    otherwise warn that ``lr_scheduler.step()`` came before ``optimizer.step()``.

    Raises:
        LightningAPIError: torch's ``LRScheduler.step`` no longer reads ``_opt_called``.
    """
    if not _scheduler_reads_flag():
        raise _missing("torch.optim.lr_scheduler.LRScheduler.step", "_opt_called", "the scheduler's order check")
    optimizer._opt_called = True  # type: ignore[attr-defined]


__all__ = [
    "TESTED_LIGHTNING",
    "LightningAPIError",
    "attached_trainer",
    "check_overrides",
    "ddp_kwargs",
    "first_evaluation",
    "gradient_clipper",
    "mark_optimizer_stepped",
    "powersgd_should_compress",
    "preserved_closure_result",
    "process_group_backend",
    "replace_sigterm_broadcast",
    "sigterm_received",
    "silenced_logging",
    "uses_distributed_sampler",
]
