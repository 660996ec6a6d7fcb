"""What every lit_commeff strategy shares: the process group, the ledger, ``comm/*`` metrics, per-rank state."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import Accelerator
from lightning.pytorch.plugins.environments import ClusterEnvironment
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.distributed.constants import default_pg_timeout
from typing_extensions import override

from lit_commeff._state import need
from lit_commeff.options import OptionError
from lit_commeff.strategy import lightning_api
from lit_commeff.strategy import state as rank_state
from lit_commeff.strategy.checkpoint_io import AtomicCheckpointIO
from lit_commeff.strategy.metering import CommMetering
from lit_commeff.transport.objects import all_gather

StartMethod = Literal["popen", "spawn", "fork", "forkserver"]

log = logging.getLogger(__name__)


_T = TypeVar("_T")


class CommStrategy(DDPStrategy):
    """Base of the lit_commeff strategies: DDP's process-group, launcher and cluster machinery.

    Subclasses reuse :class:`~lightning.pytorch.strategies.DDPStrategy` for what it does well —
    launching processes (``popen`` re-runs the script like ``torchrun``; ``spawn``/``fork`` for notebooks
    and tests), cluster environments (torchrun, SLURM, …), ``init_process_group`` (gloo on CPU, NCCL on
    GPU), ``barrier``/``reduce`` for ``self.log(sync_dist=True)`` — and decide themselves what the
    training step communicates. Each owns a :class:`~lit_commeff.strategy.metering.CommMetering`
    (``self.metering``, created in ``setup``) and may keep state on every rank, saved into the
    Lightning checkpoint through :meth:`rank_state_dict` / :meth:`load_rank_state_dict`.

    Args:
        accelerator, parallel_devices, cluster_environment, checkpoint_io, precision_plugin: As for
            :class:`~lightning.pytorch.strategies.DDPStrategy` (normally set by the ``Trainer``); the
            default checkpoint writer is :class:`~lit_commeff.strategy.checkpoint_io.AtomicCheckpointIO`.
        process_group_backend: ``"gloo"``, ``"nccl"``, … (default: NCCL on CUDA, gloo on CPU).
        timeout: Collective timeout; a rank that dies makes the others fail after it.
        start_method: How processes are started: ``"popen"`` (default, like ``torchrun``), ``"spawn"``,
            ``"fork"`` or ``"forkserver"``.
    """

    strategy_name: ClassVar[str] = "comm"

    def __init__(
        self,
        *,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        cluster_environment: ClusterEnvironment | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
        start_method: StartMethod = "popen",
        **ddp_kwargs: Any,
    ) -> None:
        lightning_api.check_overrides(type(self))  # an overridden Lightning hook that was renamed would never run
        if start_method not in ("popen", "spawn", "fork", "forkserver"):
            raise ValueError(
                f"start_method: start_method={start_method!r} is unknown; use 'popen' (scripts, torchrun, SLURM), "
                "'spawn', 'fork' or 'forkserver' (notebooks, tests)."
            )
        super().__init__(
            accelerator=accelerator,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io if checkpoint_io is not None else AtomicCheckpointIO(),
            precision_plugin=precision_plugin,
            process_group_backend=process_group_backend,
            timeout=timeout,
            start_method=start_method,
            **ddp_kwargs,
        )
        self.metering: CommMetering | None = None
        self._pending_rank_state: dict[str, Any] | None = None
        self._stop_agreed = False  # rank 0's SIGTERM, learnt by every rank in a step's own round

    # ------------------------------------------------------------------------------- subclass API
    def _built(self, value: _T | None, what: str) -> _T:
        """``value``, something ``setup()`` builds (the algorithm, transport, metering, ...), read after it.

        Raises:
            RuntimeError: It is ``None``: the strategy was used before the Trainer set it up.
        """
        return need(
            value, what, owner=type(self).__name__, hint="setup() builds it; let the Trainer set the strategy up"
        )

    @property
    def _module(self) -> pl.LightningModule:
        """The LightningModule being trained (set by the Trainer before ``setup()``)."""
        return self._built(self.lightning_module, "lightning_module")

    def rank_state_dict(self) -> dict[str, Any]:
        """This rank's method state (tensors and plain types) for the checkpoint."""
        return {}

    def load_rank_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`rank_state_dict` (called at train start, after Lightning restored model and optimizers)."""

    def comm_summary(self) -> dict[str, Any]:
        """The run's communication totals (see :meth:`CommMetering.summary`); empty before ``fit``."""
        return self.metering.summary() if self.metering is not None else {}

    # ------------------------------------------------------------------------------- process group
    @override
    def setup_distributed(self) -> None:
        super().setup_distributed()
        log.debug(
            "%s: process group ready (backend %s, rank %d of %d)",
            type(self).__name__,
            lightning_api.process_group_backend(self),
            self.global_rank,
            self.world_size,
        )

    @override
    def teardown(self) -> None:
        log.debug("%s: teardown on rank %d", type(self).__name__, self.global_rank)
        stopped_by_sigterm = self._stopped_by_sigterm()
        super().teardown()
        if stopped_by_sigterm:
            self._close_process_group_after_sigterm()

    def _stopped_by_sigterm(self) -> bool:
        """Whether this fit is ending because of a SIGTERM (this rank's own, or rank 0's learnt in a round)."""
        trainer = getattr(self.lightning_module, "_trainer", None)
        return self._stop_agreed or (trainer is not None and bool(getattr(trainer, "received_sigterm", False)))

    def _close_process_group_after_sigterm(self) -> None:
        """Destroy the default process group: the fit ends in ``SystemExit`` and the process is leaving.

        A SIGTERM stop skips whatever the user's script does after ``fit`` (``destroy_process_group`` there
        included), so gloo's C++ worker threads would otherwise meet interpreter shutdown still joinable and
        abort the rank ("terminate called without an active exception", exit code -6) after a clean,
        checkpointed stop. Every rank stops after the same step (the flag rides the step's round), so every
        rank gets here. Torch asks for an explicit ``destroy_process_group`` once communication is over.
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            log.info("rank %d: SIGTERM stop, destroying the process group before exit", self.global_rank)
            torch.distributed.destroy_process_group()

    # ------------------------------------------------------------------------------- checkpoints
    def _full_rank_state(self) -> dict[str, Any]:
        out = {"method": self.rank_state_dict(), "rng": rank_state.rng_state()}
        if self.metering is not None:
            out["metering"] = self.metering.state_dict()
        return out

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: str | Path, storage_options: Any | None = None
    ) -> None:
        # Lightning calls this on every rank (rank 0 writes): the gather below is a collective.
        if self.metering is not None:
            states = rank_state.gather_states(self._full_rank_state(), device=self.root_device)
            if states is not None:
                checkpoint = {**checkpoint, rank_state.CHECKPOINT_KEY: rank_state.pack(self.strategy_name, states)}
                log.debug("%s: checkpoint %s carries the state of %d ranks", type(self).__name__, filepath, len(states))
        super().save_checkpoint(checkpoint, filepath, storage_options=storage_options)

    @override
    def load_checkpoint(self, checkpoint_path: str | Path, weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        entry = checkpoint.get(rank_state.CHECKPOINT_KEY)
        if entry is not None:
            self._pending_rank_state = rank_state.unpack(
                entry, strategy=self.strategy_name, rank=self.global_rank, world_size=self.world_size
            )
        log.debug(
            "%s: checkpoint %s loaded on rank %d (%s per-rank state)",
            type(self).__name__,
            checkpoint_path,
            self.global_rank,
            "with" if entry is not None else "without",
        )
        return checkpoint

    # ------------------------------------------------------------------------------- SIGTERM without a per-step round
    def next_step_communicates(self) -> bool:
        """Whether the next training step runs a collective of this strategy (default: every step does)."""
        return True

    def next_step_carries_sigterm(self) -> bool:
        """Whether the next step's own collectives carry rank 0's SIGTERM flag to every rank."""
        return False

    def _install_sigterm_check(self, trainer: Any) -> None:
        """Replace Lightning's per-step SIGTERM broadcast with one that rides on this strategy's own rounds.

        Lightning (2.6) broadcasts rank 0's SIGTERM flag from rank 0 before every training step, so that
        all ranks stop together. That is one more collective per step: on a 20 ms RTT link it costs as much
        as a strategy's whole round, and it puts a round back into every silent step of DiLoCo and of
        OLGA's ``local_steps``. Here the flag travels with the strategy's own rounds instead: inside the
        step's non-finite guard agreement where there is one (:meth:`next_step_carries_sigterm`), else by
        Lightning's broadcast only before steps that communicate anyway (:meth:`next_step_communicates`).
        Every rank knows the schedule, so every rank takes the same decision. Ranks that receive SIGTERM
        themselves still stop after their current step (Lightning's own local check); so a SIGTERM that
        reaches rank 0 alone in a silent step stops it there, and the others fail at the next round with a
        ``CollectiveError`` (``docs/reliability.md``). SLURM and torchrun signal every rank.
        """

        def wrap(lightning_check: Callable[[], None]) -> Callable[[], None]:
            def check() -> None:
                if self._stop_agreed:
                    # Rank 0's SIGTERM came with the last step's agreement: rank 0 stops after that step
                    # (Lightning's own check) and every other rank here, so nobody waits in a collective.
                    log.info("rank %d: stopping, rank 0 received SIGTERM (learnt in the last round)", self.global_rank)
                    raise SIGTERMException()
                if self.next_step_carries_sigterm() or not self.next_step_communicates():
                    return
                lightning_check()

            return check

        if lightning_api.replace_sigterm_broadcast(trainer, wrap):
            log.debug("%s: rank 0's SIGTERM flag now travels with the strategy's rounds", type(self).__name__)
        lightning_api.drop_sigterm_handler_broadcast(trainer)  # its collective would now have no partner

    @override
    def on_train_start(self) -> None:
        super().on_train_start()
        self._stop_agreed = False
        self._install_sigterm_check(self._module.trainer)
        pending, self._pending_rank_state = self._pending_rank_state, None
        if pending is None:
            return
        if self.metering is not None and "metering" in pending:
            self.metering.load_state_dict(pending["metering"])
        self.load_rank_state_dict(pending["method"])
        rank_state.set_rng_state(pending["rng"])
        log.debug("%s: rank %d resumed its method state, ledger and RNG", type(self).__name__, self.global_rank)

    @override
    def on_train_end(self) -> None:
        super().on_train_end()
        if self.metering is not None:
            self.metering.print_summary()

    # ------------------------------------------------------------------------------- helpers
    #: Fewest processes the method works with (checked before any process is started).
    min_world_size: ClassVar[int] = 2

    @override
    def _configure_launcher(self) -> None:
        # Runs in the launching process, before any worker process exists.
        self._require_world(self.num_nodes * self.num_processes)
        super()._configure_launcher()

    def _require_world(self, world_size: int) -> None:
        if world_size < self.min_world_size:
            raise ValueError(
                f"devices: {type(self).__name__} needs at least {self.min_world_size} processes, got world size "
                f"{world_size}; set Trainer(devices={self.min_world_size}) (or num_nodes) or use a single-device "
                "strategy."
            )

    def _check_training_setup(self, trainer: Any, *, accumulate_fix: str) -> None:
        """Reject Lightning settings a strategy that drives the optimizer itself cannot honour.

        Args:
            trainer: The Trainer being set up.
            accumulate_fix: What to do instead of gradient accumulation, for the message.
        """
        name = type(self).__name__
        if not self._module.automatic_optimization:
            raise ValueError(
                f"automatic_optimization: {name} drives the optimizer itself and needs automatic optimization; "
                "remove `self.automatic_optimization = False` from the LightningModule."
            )
        if trainer.accumulate_grad_batches != 1:
            raise ValueError(
                f"accumulate_grad_batches: {name} does not support accumulate_grad_batches="
                f"{trainer.accumulate_grad_batches}; {accumulate_fix} (Trainer(accumulate_grad_batches=1))."
            )
        if isinstance(self.precision_plugin, MixedPrecision) and self.precision_plugin.scaler is not None:
            raise ValueError(
                f"precision: {name} does not support fp16 mixed precision with a gradient scaler; use "
                "Trainer(precision='bf16-mixed') or '32-true'."
            )

    def _check_same_model(self, params: list[torch.Tensor], names: list[str]) -> None:
        """Fail on every rank if a rank runs other code or holds other trainable parameters than rank 0.

        Compared: the installed lit_commeff and torch versions, and the parameters' names, shapes and dtypes.
        """
        signature = "|".join(f"{n}:{tuple(p.shape)}:{p.dtype}" for n, p in zip(names, params, strict=True))
        local = torch.tensor(_fingerprint(signature, code_versions()), dtype=torch.int64, device=self.root_device)
        gathered = all_gather(local)  # uncounted: a setup check, not training traffic
        problem = compare_fingerprints([g.tolist() for g in gathered], n_tensors=len(params))
        if problem is not None:
            raise RuntimeError(problem)


#: Bytes of each version string in the fingerprint ranks compare at setup (longer strings are cut).
_VERSION_BYTES = 48


def code_versions() -> tuple[str, str]:
    """The installed ``(lit_commeff, torch)`` versions of this process, as ranks compare them at setup."""
    import lit_commeff  # the package imports this module: import it when called, not at import time

    return str(lit_commeff.__version__), str(torch.__version__)


def _fingerprint(signature: str, versions: tuple[str, str]) -> list[int]:
    """``[hash of the model signature, *bytes of each version string]``: what every rank sends at setup."""
    out = [_fnv1a(signature)]
    for text in versions:
        raw = text.encode()[:_VERSION_BYTES]
        out += list(raw) + [0] * (_VERSION_BYTES - len(raw))
    return out


def _decode(values: list[int]) -> str:
    return bytes(v for v in values if v).decode(errors="replace")


def compare_fingerprints(rows: list[list[int]], *, n_tensors: int) -> str | None:
    """Compare every rank's setup fingerprint with rank 0's; ``None`` if they agree, else the error message.

    Args:
        rows: Per rank, in rank order, the fingerprint (model hash, then the lit_commeff and torch version
            strings as bytes) that rank sent.
        n_tensors: Number of trainable tensors of this rank (for the message).

    Returns:
        The message naming the ranks that differ and what differs (code versions first: another version
        usually builds another model too), or ``None``.
    """
    decoded = [
        (row[0], *(_decode(row[1 + k * _VERSION_BYTES : 1 + (k + 1) * _VERSION_BYTES]) for k in range(2)))
        for row in rows
    ]
    _, lib0, torch0 = decoded[0]
    code = [r for r, (_, lib, tv) in enumerate(decoded) if (lib, tv) != (lib0, torch0)]
    if code:
        shown = "; ".join(f"rank {r}: lit_commeff {decoded[r][1]}, torch {decoded[r][2]}" for r in code[:4])
        more = f"; and {len(code) - 4} more" if len(code) > 4 else ""
        return (
            f"code: ranks {code} run other versions than rank 0 (rank 0: lit_commeff {lib0}, torch {torch0}; "
            f"{shown}{more}); install the same lit_commeff and torch on every node (e.g. pip install "
            f"lit_commeff=={lib0} torch=={torch0}) and start every rank from the same environment."
        )
    model = [r for r, (digest, _, _) in enumerate(decoded) if digest != decoded[0][0]]
    if model:
        return (
            f"model: ranks {model} hold trainable parameters whose names/shapes/dtypes differ from rank 0's "
            f"({n_tensors} tensors there); every rank must build the same model (same code, same config)."
        )
    return None


def _fnv1a(text: str) -> int:
    """A stable 63-bit hash of a string (Python's ``hash`` is salted per process)."""
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def trainable_parameters(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[list, list[str]]:
    """The optimizer's parameters in a fixed order, with their names in ``module``.

    Raises:
        ValueError: A parameter in the optimizer is not a parameter of the module, or is frozen.
    """
    names = {id(p): n for n, p in module.named_parameters()}
    params, seen = [], set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if id(p) not in names:
                raise ValueError(
                    "configure_optimizers: the optimizer holds a tensor that is not a parameter of the "
                    "LightningModule; optimise the module's own parameters."
                )
            if not p.requires_grad:
                raise ValueError(
                    f"configure_optimizers: parameter {names[id(p)]!r} is frozen (requires_grad=False) but is in the "
                    "optimizer; leave frozen parameters out of configure_optimizers."
                )
            params.append(p)
    if not params:
        raise ValueError("configure_optimizers: the optimizer has no parameters to train.")
    return params, [names[id(p)] for p in params]


def reject_ddp_kwargs(owner: str, kwargs: Mapping[str, Any], own: Sequence[str]) -> None:
    """Reject keyword arguments that would reach ``DistributedDataParallel`` in a strategy that does not use it.

    :class:`CommStrategy` passes keywords it does not know on to Lightning's ``DDPStrategy`` and so to
    ``DistributedDataParallel``; a strategy that never wraps the model (the hub strategies, DiLoCo) would
    drop them silently.

    Args:
        owner: The strategy's class name, for the message.
        kwargs: The keywords left after the strategy took its own options.
        own: The strategy's own option names, for the fix.

    Raises:
        OptionError: Naming the first keyword that is neither a process option nor one of ``own``.
    """
    process = [n for n in inspect.signature(CommStrategy.__init__).parameters if n not in ("self", "ddp_kwargs")]
    unused = sorted(set(kwargs) - set(process))
    if unused:
        raise OptionError(
            unused[0],
            kwargs[unused[0]],
            f"would have no effect: {owner} does not wrap the model in DistributedDataParallel",
            f"remove {unused} ({owner}'s own options are {', '.join(own)}; its process options are "
            f"{', '.join(process)})",
        )


__all__ = ["CommStrategy", "reject_ddp_kwargs", "trainable_parameters"]
