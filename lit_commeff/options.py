"""One options object per method: its fields, defaults, ranges and combination rules, in one place.

Each method's options are a frozen dataclass, checked once, in ``__post_init__``:

* the Lightning strategy builds it from its keyword arguments (``OLGAStrategy(theta=0.5)``) or takes it
  whole (``OLGAStrategy(options=OLGAOptions(theta=0.5))``);
* the algorithm takes it (``OLGA(..., options=...)``; keyword arguments build one with the paper's
  defaults, :attr:`OLGAOptions.paper_defaults`, as the simulator passes them);
* the CLI uses it as the Hydra structured config of the ``strategy`` group (:mod:`lit_commeff.cli.schema`),
  so ``conf/strategy/*.yaml`` states no default;
* the option tables of ``docs/strategies.md`` are generated from it (:func:`options_table`).

A bad value raises :class:`OptionError`, which carries the field, the value and the fix, so the CLI
prints it without parsing text. This module depends on :mod:`lit_commeff.compression` only (no
Lightning, no torch.distributed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from omegaconf import OmegaConf

from lit_commeff.compression import Compressor, Identity, build
from lit_commeff.compression.registry import accepts

__all__ = [
    "DOWNLINKS",
    "NONFINITE_POLICIES",
    "PRESETS",
    "STRATEGY_OPTIONS",
    "CompressedOptions",
    "DiLoCoOptions",
    "EFOLGAOptions",
    "GatedDANEOptions",
    "HubOptions",
    "OLGAOptions",
    "OptionError",
    "Options",
    "PowerSGDOptions",
    "check_nonfinite",
    "check_positive",
    "options_table",
    "render_tables",
    "require_biased",
    "require_unbiased",
    "resolve_compressor",
]

#: OLGA's parameter presets (see :func:`lit_commeff.algorithms.params.olga_params`).
PRESETS = ("theory", "similarity", "auto")
#: What a NaN/Inf in a step does (:mod:`lit_commeff.strategy.numeric`).
NONFINITE_POLICIES = ("raise", "skip", "off")
#: The hub's downlink collective (``"auto"``: scatter on gloo, broadcast otherwise).
DOWNLINKS = ("auto", "scatter", "broadcast")
#: Gated DANE ``overlap``'s wire dtypes for its messages' values (``message_dtype``; ``"model"``: the model's own).
MESSAGE_DTYPES: dict[str, str | None] = {"bf16": "bfloat16", "model": None}
#: Gated DANE ``eager``: how much of its own change an overlapped round starts from (all of it, its 1/M share, or
#: all of it without the outer step's gain).
EAGER_STARTS: tuple[str, ...] = ("full", "share", "once")

CompressorSpec = str | Compressor
_O = TypeVar("_O", bound="Options")


class OptionError(ValueError):
    """A method option that cannot work: its field, its value and how to fix it.

    ``str(error)`` is ``"<field>: <field>=<value!r> <problem>; <fix>."``; a rule about several options
    states them itself (``statement``), e.g. ``"compressor: EF-OLGA needs a biased contractive compressor
    ..., got unbiased RandK(...); use OLGA (strategy='olga') for unbiased compressors."``

    Attributes:
        field: The option to change.
        value: Its value.
        what: What is wrong: ``"<field>=<value!r> <problem>"``, or the statement of a combination rule.
        fix: What to do, without the final period.
    """

    def __init__(self, field: str, value: Any, problem: str, fix: str, statement: str | None = None) -> None:
        self.field = field
        self.value = value
        self.what = f"{field}={value!r} {problem}" if statement is None else statement
        self.fix = fix
        self._args = (field, value, problem, fix, statement)
        super().__init__(f"{field}: {self.what}; {fix}.")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across processes (the default passes str(self) only)
        return type(self), self._args


# ----------------------------------------------------------------------------------- value checks
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_positive(name: str, value: float, *, upper: float | None = None, closed_upper: bool = True) -> float:
    """A positive number (optionally bounded above), as a float."""
    bound = f"(0, {upper}]" if upper is not None else "(0, inf)"
    if (
        not _is_real(value)
        or not math.isfinite(value)
        or value <= 0
        or (upper is not None and (value > upper or (not closed_upper and value == upper)))
    ):
        raise OptionError(name, value, "is out of range", f"it must be in {bound}")
    return float(value)


def _optional_positive(name: str, value: float | None, *, upper: float | None = None) -> None:
    if value is not None:
        check_positive(name, value, upper=upper)


def _check_int(name: str, value: Any, *, minimum: int, fix: str) -> None:
    if not _is_int(value) or value < minimum:
        raise OptionError(name, value, "is invalid", fix)


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise OptionError(name, value, "is invalid", "use true or false")


def _check_choice(name: str, value: Any, choices: tuple[str, ...], fix: str) -> None:
    if value not in choices:
        raise OptionError(name, value, "is unknown", fix)


def check_nonfinite(policy: Any) -> str:
    """The ``nonfinite`` option: one of :data:`NONFINITE_POLICIES`."""
    _check_choice(
        "nonfinite",
        policy,
        NONFINITE_POLICIES,
        "use 'raise' (stop with the step, rank and tensor), 'skip' (drop the round everywhere and go on) or "
        "'off' (no checks, no extra round)",
    )
    return policy


def require_unbiased(compressor: Compressor, method: str, alternative: str, *, field: str = "compressor") -> None:
    """Reject a biased compressor for a method whose analysis needs unbiased compression."""
    if not compressor.unbiased:
        raise OptionError(
            field,
            compressor,
            "is biased",
            f"use {alternative} for biased compressors",
            statement=f"{method} needs an unbiased compressor (randk, qsgd, identity), got biased {compressor!r}",
        )


def require_biased(compressor: Compressor, method: str, alternative: str, *, field: str = "compressor") -> None:
    """Reject an unbiased (non-contractive) compressor for an error-feedback method."""
    if compressor.unbiased and not isinstance(compressor, Identity):
        raise OptionError(
            field,
            compressor,
            "is unbiased",
            f"use {alternative} for unbiased compressors",
            statement=f"{method} needs a biased contractive compressor (topk, sign, fp16, bf16, powersgd), got "
            f"unbiased {compressor!r}",
        )


#: Options of which a compressor takes exactly one: given one, the config's default of the other is dropped.
_EXCLUSIVE = (("k", "ratio"),)


def _config_defaults(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of ``compressor=<name>`` (``lit_commeff/conf/compressor/<name>.yaml``).

    A compressor named inside another option (``dense_compressor=topk``) starts from the same values as the
    top-level ``compressor`` group, instead of failing for want of its options.
    """
    path = Path(__file__).parent / "conf" / "compressor" / f"{name}.yaml"
    if not path.is_file():
        return {}
    config = OmegaConf.to_container(OmegaConf.load(path))
    if not isinstance(config, dict):
        return {}
    defaults = {str(k): v for k, v in config.items() if k not in ("_target_", "seed")}
    for pair in _EXCLUSIVE:
        if any(options.get(key) is not None for key in pair):
            for key in pair:
                defaults.pop(key, None)
    return defaults


def resolve_compressor(
    spec: CompressorSpec, options: Mapping[str, Any] | None, *, field: str = "compressor", seed: int | None = None
) -> Compressor:
    """A compressor from a registered name plus options, or an instance (options must then be empty).

    ``seed``: the method's seed, given to a named compressor that takes one unless its options set it (so one seed
    drives every random draw of a run, as in :func:`lit_commeff.sim.run`); an instance keeps its own.
    """
    if isinstance(spec, Compressor):
        if options:
            raise OptionError(
                f"{field}_options",
                dict(options),
                f"were given with a compressor instance ({spec!r})",
                "configure the instance itself or pass its registered name",
            )
        return spec
    if not isinstance(spec, str):
        raise OptionError(
            field, spec, "is neither a compressor name nor a Compressor", "use e.g. 'randk' or RandK(...)"
        )
    kwargs = {**_config_defaults(spec, options or {}), **dict(options or {})}
    if seed is not None and "seed" not in kwargs and accepts(spec, "seed"):
        kwargs["seed"] = seed
    return build(spec, **kwargs)


def _optional_compressor(
    options: Options, name: str, method: str, conflicts: tuple[tuple[bool, str, str], ...] = ()
) -> Compressor | None:
    """``options.<name>`` (with ``<name>_options``) as a biased compressor, or ``None``.

    ``conflicts``: ``(applies, statement, fix)`` of the options it cannot be combined with.
    """
    spec, extra = getattr(options, name), getattr(options, f"{name}_options")
    if spec is None:
        if extra:
            raise OptionError(
                f"{name}_options",
                extra,
                f"were given without {name}",
                f"name one (e.g. {name}='topk') or drop the options",
            )
        return None
    compressor = resolve_compressor(spec, extra, field=name, seed=getattr(options, "seed", None))
    require_biased(compressor, f"{name} ({method})", f"{name}=null", field=name)
    for applies, statement, fix in conflicts:
        if applies:
            raise OptionError(name, spec, "", fix, statement=statement)
    return compressor


# ----------------------------------------------------------------------------------- the base class
def _doc(doc: str) -> dict[str, str]:
    """A field's meaning (``metadata["doc"]``: the docs' option table)."""
    return {"doc": doc}


@dataclass(frozen=True)
class Options:
    """Base of the options objects: field names, the keyword-or-object constructor, the docs' rows."""

    #: The method, as its messages name it.
    method: ClassVar[str] = "method"
    #: Defaults of the algorithm used on its own (simulator, tests): the paper's, where they differ.
    paper_defaults: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(
        cls: type[_O], options: _O | None = None, /, *, defaults: Mapping[str, Any] | None = None, **given: Any
    ) -> _O:
        """``options`` itself, or one built from keyword options over ``defaults`` (not both)."""
        if options is None:
            return cls(**{**(defaults or {}), **given})
        if given:
            name = sorted(given)[0]
            raise OptionError(
                name,
                given[name],
                f"was given next to options={options!r}",
                f"set it in the options object (dataclasses.replace(options, {name}=...)) or drop options=",
            )
        if type(options) is not cls:
            raise OptionError(
                "options",
                options,
                f"is not {cls.__name__}",
                f"pass {cls.__name__}(...) (or keyword options) to this {cls.method}",
            )
        return options

    @classmethod
    def take(cls: type[_O], options: _O | None, kwargs: dict[str, Any]) -> _O:
        """A strategy's options: ``options``, or one built from this method's keywords, removed from ``kwargs``.

        What stays in ``kwargs`` is for the strategy's base class (process and launcher options).
        """
        names = set(cls.names())
        return cls.of(options, **{name: kwargs.pop(name) for name in [k for k in kwargs if k in names]})

    def check(self) -> None:
        """Validate ranges and combinations (subclasses extend it); raise :class:`OptionError`."""

    def __post_init__(self) -> None:
        self.check()

    def _cache(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # derived, not an option: outside __eq__/__repr__


# ----------------------------------------------------------------------------------- hub strategies
@dataclass(frozen=True)
class HubOptions(Options):
    """Options every hub strategy shares (:class:`~lit_commeff.strategy.hub.HubAlgorithmStrategy`)."""

    #: ``compressor=None``: this compressor name and options.
    default_compressor: ClassVar[tuple[str, Mapping[str, Any]]] = ("randk", {})

    compressor: Any = field(
        default=None,
        metadata=_doc(
            "what workers send: a registered name (`randk`, `topk`, ...) or an instance; `None`: the default"
        ),
    )
    compressor_options: dict[str, Any] | None = field(
        default=None, metadata=_doc("options of a named compressor, e.g. `{ratio: 0.05}`")
    )
    seed: int = field(
        default=0, metadata=_doc("seed of the epoch lengths and compressor draws (the same on every rank)")
    )
    nonfinite: str = field(
        default="raise",
        metadata=_doc(
            "NaN/Inf in a step: `raise` (undo the step on every rank, raise `NonFiniteError` naming step, rank and "
            "parameter), `skip` (undo it and go on; `comm/skipped_rounds`), `off` (no checks, no agreement "
            "collectives). See [reliability.md](reliability.md)"
        ),
    )
    downlink: str = field(
        default="auto",
        metadata=_doc(
            "the collective that carries the hub's messages: `auto` (scatter on gloo, broadcast otherwise), `scatter` "
            "(a star: one hop from the hub to each worker; on gloo over links with latency ~2.8× faster than gloo's "
            "broadcast tree, in which workers forward to workers), `broadcast` (the backend's tree/ring; "
            "bandwidth-optimal for large messages on NCCL). Same bytes per worker, same results"
        ),
    )

    @property
    def built_compressor(self) -> Compressor:
        """The compressor instance (built once, from ``compressor`` or the method's default)."""
        return self.__dict__["_compressor"]

    def check(self) -> None:
        super().check()
        if not _is_int(self.seed) or self.seed < 0:
            raise OptionError("seed", self.seed, "is invalid", "use an integer >= 0")
        check_nonfinite(self.nonfinite)
        _check_choice(
            "downlink",
            self.downlink,
            DOWNLINKS,
            "use 'auto' (scatter on gloo, broadcast otherwise), 'scatter' (a star: one hop from the hub to each "
            "worker) or 'broadcast' (the backend's tree/ring)",
        )
        if self.compressor is None:
            name, defaults = self.default_compressor
            compressor = resolve_compressor(name, {**defaults, **(self.compressor_options or {})}, seed=self.seed)
        else:
            compressor = resolve_compressor(self.compressor, self.compressor_options, seed=self.seed)
        self._cache("_compressor", compressor)


@dataclass(frozen=True)
class OLGAOptions(HubOptions):
    """OLGA's options (Bylinkin & Beznosikov, AAAI'25, Algorithms 1–2, and our neural-network extensions).

    The defaults are the neural-network ones, chosen in loopback runs on the credit MLP (3 seeds) and checked
    on the churn and throughput recipes, whose raw data were not kept (``docs/neural-adaptation.md`` says what
    the committed B3 data back): RandK 10 %, θ = 1, S = 2, no momentum,
    p = 1/γ of the compressor. The algorithm used on its own takes the paper's instead
    (:attr:`paper_defaults`: θ from the preset, momentum on, output ``y``). Each field's meaning is in its
    ``metadata["doc"]`` and in ``docs/strategies.md``; the algorithm's docstring
    (:class:`~lit_commeff.algorithms.olga.OLGA`) gives the mathematics.
    """

    method: ClassVar[str] = "OLGA"
    error_feedback: ClassVar[bool] = False
    default_compressor: ClassVar[tuple[str, Mapping[str, Any]]] = ("randk", {"ratio": 0.1})
    paper_defaults: ClassVar[Mapping[str, Any]] = {"theta": None, "accelerate": True, "output": "y"}

    theta: float | None = field(
        default=1.0, metadata=_doc("θ > 0, the hub's prox step; `None` to take it from `preset`")
    )
    p: float | None = field(
        default=None, metadata=_doc("end-of-epoch probability in (0, 1]; `None`: 1/γ of the compressor")
    )
    inner_steps: int = field(
        default=2,
        metadata=_doc(
            "S ≥ 1, optimizer steps of the hub per prox solve (S = 2 was chosen over S = 1 on the credit MLP in runs "
            "whose raw data were not kept)"
        ),
    )
    mu: float = field(default=0.0, metadata=_doc("μ ≥ 0 of the momentum (z) step (0 for neural networks)"))
    preset: str = field(
        default="similarity",
        metadata=_doc(
            "with `theta=None`: `theory` (Corollary 1; needs `delta`), `similarity` (θ = 1/(2δ); needs `delta`), "
            "`auto` (θ = 1/(2δ̂), needs `delta0`)"
        ),
    )
    delta: float | None = field(
        default=None, metadata=_doc("Hessian similarity δ for the `theory` and `similarity` presets")
    )
    delta0: float | None = field(
        default=None, metadata=_doc("starting δ of the `auto` preset (a safe upper bound such as the smoothness L)")
    )
    tau: float | None = field(default=None, metadata=_doc("momentum weight τ ∈ (0, 1]; `None`: the paper's formula"))
    alpha: float | None = field(default=None, metadata=_doc("z step α > 0; `None`: the paper's formula"))
    gate: float | None = field(
        default=None,
        metadata=_doc(
            "similarity gate: end an inner epoch early when δ̂·‖x_k − x_0‖ ≥ gate·‖∇f(x_0)‖ (one broadcast scalar per "
            "inner round, tag `gate`); the geometric draw remains the cap. `None`: no gate"
        ),
    )
    same_batch: bool = field(
        default=False,
        metadata=_doc(
            "SVRG-style inner differences: each rank computes ∇f_m(x_k) − ∇f_m(x_0) on its current batch and the hub "
            "broadcasts its own same-batch difference; cancels minibatch noise in what is compressed (one more "
            "forward/backward per inner round, two on the hub); full-batch iterates unchanged"
        ),
    )
    accelerate: bool = field(
        default=False,
        metadata=_doc(
            "Katyusha-X momentum (default off for OLGA, on for EF-OLGA). `False` sets x = y and makes the y round's "
            "dense gradients the next anchor (one dense round per outer iteration; EF-OLGA also drops its error "
            "round); μ, τ, α are then unused"
        ),
    )
    output: str = field(
        default="last",
        metadata=_doc(
            "what the model holds after each step (validation, checkpoints): `last`, the newest iterate every rank "
            "holds, updated every round; or `y`, the paper's output, updated once per outer iteration"
        ),
    )
    dense_compressor: Any = field(
        default=None,
        metadata=_doc(
            "also compress the anchor and y rounds' gradient gathers, EF21-style: each rank keeps an estimate h_m of "
            "its gradient and sends C(∇f_m − h_m) with this biased compressor (e.g. `topk`); the hub uses the "
            "estimates where the paper uses the gathered gradients. `None` keeps the paper's dense rounds. See "
            "[neural-adaptation.md](neural-adaptation.md)"
        ),
    )
    dense_compressor_options: dict[str, Any] | None = field(
        default=None, metadata=_doc("options of a named `dense_compressor`, e.g. `{ratio: 0.1}`")
    )
    downlink_compressor: Any = field(
        default=None,
        metadata=_doc(
            "also compress the hub's broadcast in inner rounds, EF21-P-style: every rank holds a point w and an "
            "estimate v of the hub's gradient there, and the hub sends C(x_k − w) and C(∇f_1(w) − v) with this biased "
            "compressor (e.g. `topk`). Workers take their gradients at w; the hub keeps its exact x_k and removes v's "
            "error from its correction. The model holds w. Needs `local_steps=1`, `same_batch=false`. See "
            "[neural-adaptation.md](neural-adaptation.md)"
        ),
    )
    downlink_compressor_options: dict[str, Any] | None = field(
        default=None, metadata=_doc("options of a named `downlink_compressor`, e.g. `{ratio: 0.1}`")
    )
    local_steps: int = field(
        default=1,
        metadata=_doc(
            "H ≥ 1 training steps per inner round, of which only the first communicates. In every step each rank adds "
            "its gradient at the round's centre x_k to a running average and the hub takes its S optimizer steps on "
            "its subproblem; the next round sends the compressed difference of the averages (a one-round-stale "
            "correction that uses every batch). The model holds x_k until the next round. Needs `gate=None`, "
            "`same_batch=false`. See [neural-adaptation.md](neural-adaptation.md) and "
            "[benchmarks.md](benchmarks.md)"
        ),
    )
    anchor_batches: int = field(
        default=1,
        metadata=_doc(
            "K ≥ 1 minibatches per anchor gradient: the anchor round takes K training steps at the anchor point; the "
            "first broadcasts it, the last gathers every rank's K-batch average, and the steps between are silent "
            "(the model does not move). The anchor gradient is the control variate of a whole inner epoch, so its "
            "batch noise reaches every compressed difference; the average has 1/K of it. Without `accelerate` the y "
            "round is the next anchor and is averaged too. Same collectives and bytes as K = 1. See "
            "[neural-adaptation.md](neural-adaptation.md)"
        ),
    )
    diagnostics: bool = field(
        default=False,
        metadata=_doc(
            "log `olga/*` norms each logged step: `ghat_norm`, `compression_error` (relative; largest over ranks), and "
            "the hub's `correction_norm`, `anchor_grad_norm`, `prox_step`, `drift` (‖x_k − x_0‖), `outer_G_norm`, "
            "`outer_step`, `z_minus_y`"
        ),
    )

    @property
    def built_dense_compressor(self) -> Compressor | None:
        """The ``dense_compressor`` instance, or ``None``."""
        return self.__dict__["_dense_compressor"]

    @property
    def built_downlink_compressor(self) -> Compressor | None:
        """The ``downlink_compressor`` instance, or ``None``."""
        return self.__dict__["_downlink_compressor"]

    def check(self) -> None:
        super().check()
        if self.error_feedback:
            require_biased(self.built_compressor, self.method, "OLGA (strategy='olga')")
        else:
            require_unbiased(self.built_compressor, self.method, "EF-OLGA (strategy='ef_olga')")
        _check_choice("preset", self.preset, PRESETS, f"use one of {list(PRESETS)}")
        _optional_positive("theta", self.theta)
        _optional_positive("p", self.p, upper=1.0)
        _check_int("inner_steps", self.inner_steps, minimum=1, fix="use an integer >= 1")
        if not _is_real(self.mu) or not math.isfinite(self.mu) or self.mu < 0:
            raise OptionError("mu", self.mu, "is out of range", "use a finite value >= 0 (0 for neural networks)")
        for name in ("delta", "delta0", "alpha", "gate"):
            _optional_positive(name, getattr(self, name))
        _optional_positive("tau", self.tau, upper=1.0)
        for name in ("same_batch", "accelerate", "diagnostics"):
            _check_bool(name, getattr(self, name))
        _check_choice(
            "output",
            self.output,
            ("y", "last"),
            "use 'last' (the newest iterate, every round) or 'y' (the paper's output, once per outer iteration)",
        )
        _check_int("local_steps", self.local_steps, minimum=1, fix="use an integer >= 1 (1: none)")
        _check_int("anchor_batches", self.anchor_batches, minimum=1, fix="use an integer >= 1 (1: one batch)")
        local = self.local_steps > 1
        if local and self.same_batch:
            raise OptionError(
                "same_batch",
                self.same_batch,
                "",
                "pass same_batch=false or local_steps=1",
                statement=f"local_steps={self.local_steps} averages each rank's gradients over the round's batches "
                "instead",
            )
        if local and self.gate is not None:
            raise OptionError(
                "gate",
                self.gate,
                f"needs a collective after every inner round, which local_steps={self.local_steps} would put inside "
                "the silent local steps",
                "pass gate=null or local_steps=1",
            )
        dense = _optional_compressor(self, "dense_compressor", "EF21-style estimates")
        downlink = _optional_compressor(
            self,
            "downlink_compressor",
            "EF21-P-style estimates",
            (
                (
                    local,
                    f"local_steps={self.local_steps} already sends the hub's point once per round",
                    "pass downlink_compressor=null or local_steps=1",
                ),
                (
                    self.same_batch,
                    "same_batch broadcasts the hub's same-batch difference, which has no shared estimate to compress "
                    "against",
                    "pass downlink_compressor=null or same_batch=false",
                ),
            ),
        )
        self._cache("_dense_compressor", dense)
        self._cache("_downlink_compressor", downlink)
        if self.theta is None:
            if self.preset == "auto" and self.delta0 is None:
                raise OptionError(
                    "delta0",
                    None,
                    "",
                    "pass delta0 (a safe upper bound such as the smoothness L), or pass theta",
                    statement="preset='auto' without theta needs a starting similarity delta0",
                )
            if self.preset != "auto" and self.delta is None:
                raise OptionError(
                    "delta",
                    None,
                    "",
                    "pass delta, pass theta, or use preset='auto' with delta0",
                    statement=f"preset={self.preset!r} needs the similarity constant delta when theta is not given",
                )


@dataclass(frozen=True)
class EFOLGAOptions(OLGAOptions):
    """EF-OLGA's options (same paper, Algorithms 3–4).

    OLGA's, with a biased compressor (default TopK 1 %) and momentum on by default (chosen in loopback
    runs, ``docs/neural-adaptation.md``).
    """

    method: ClassVar[str] = "EF-OLGA"
    error_feedback: ClassVar[bool] = True
    default_compressor: ClassVar[tuple[str, Mapping[str, Any]]] = ("topk", {"ratio": 0.01})

    accelerate: bool = field(default=True, metadata=OLGAOptions.__dataclass_fields__["accelerate"].metadata)


@dataclass(frozen=True)
class CompressedOptions(HubOptions):
    """The ``compressed`` strategy's options: DIANA for unbiased compressors, EF21 for biased ones."""

    method: ClassVar[str] = "compressed"
    default_compressor: ClassVar[tuple[str, Mapping[str, Any]]] = ("topk", {"ratio": 0.01})

    alpha: float | None = field(
        default=None,
        metadata=_doc("DIANA's shift step in (0, 1]; `None`: 1/(ω + 1) with ω = d/K for RandK. EF21 (biased) has none"),
    )

    def check(self) -> None:
        super().check()
        _optional_positive("alpha", self.alpha, upper=1.0)
        if self.alpha is not None and not self.built_compressor.unbiased:
            raise OptionError(
                "alpha",
                self.alpha,
                f"is DIANA's shift step, but {self.built_compressor!r} is biased (EF21 has no alpha)",
                "drop alpha or use an unbiased compressor (randk, qsgd)",
            )


# ----------------------------------------------------------------------------------- other strategies
@dataclass(frozen=True)
class DiLoCoOptions(Options):
    """DiLoCo's options (Douillard et al. 2023): H local steps, then an outer Nesterov step on the mean delta."""

    method: ClassVar[str] = "DiLoCo"

    inner_steps: int = field(
        default=50, metadata=_doc("H ≥ 1 local optimizer steps between two syncs (the paper uses 500)")
    )
    outer_lr: float = field(
        default=0.7,
        metadata=_doc(
            "learning rate of the outer SGD step (the paper's 0.7; 1.0 with `outer_momentum=0` is averaging)"
        ),
    )
    outer_momentum: float = field(
        default=0.9, metadata=_doc("Nesterov momentum of the outer step, in [0, 1) (the paper's 0.9; 0: none)")
    )

    def check(self) -> None:
        super().check()
        _check_int(
            "inner_steps",
            self.inner_steps,
            minimum=1,
            fix="use an integer >= 1 (local optimizer steps between two syncs, e.g. 50)",
        )
        if not _is_real(self.outer_lr) or not math.isfinite(self.outer_lr) or self.outer_lr <= 0:
            raise OptionError(
                "outer_lr",
                self.outer_lr,
                "is invalid",
                "use a finite number > 0 (the paper uses 0.7; 1.0 with outer_momentum=0 is plain parameter averaging)",
            )
        if not _is_real(self.outer_momentum) or not 0 <= self.outer_momentum < 1:
            raise OptionError(
                "outer_momentum",
                self.outer_momentum,
                "is invalid",
                "use a number in [0, 1) (the paper uses 0.9; 0 disables momentum)",
            )


@dataclass(frozen=True)
class GatedDANEOptions(HubOptions):
    """Gated DANE's options: every rank trains on its similarity-corrected subproblem, sync gated by drift.

    :class:`~lit_commeff.algorithms.gated_dane.GatedDANE` gives the mathematics. The Lightning defaults are
    DiLoCo's outer step (Nesterov, ``outer_lr`` 0.7, ``outer_momentum`` 0.9) around corrected local steps of SGD
    and plain averaging around those of Adam-type optimizers (session 12),
    with the ranks' gradients riding with the sync (one message each way a round; lagged corrections chosen on
    credit ``by_group`` over ``edge`` in session 9) and averaged over the round (``correction="averaged"``:
    session 11, stable under Adam on the throughput GRU where the one-minibatch correction was not, and as fast
    on credit; ``docs/gated-dane.md``); the algorithm used on its own (simulator) takes fresh DANE
    corrections and extrapolates with β from μ and θ (:attr:`paper_defaults`). Rounds weigh the drift against the
    link's measured cost (``link_aware``, session 12). Around SGD the sync is hidden behind the next round's
    steps, its messages in bfloat16 (``overlap`` and ``message_dtype`` None; sessions 15-16: 1.42-1.55x DiLoCo on
    credit over ``edge``, where the synchronous sync was 0.88-1.19x), each rank starting its next round from its own
    change applied once beside the outer step's look-ahead, with corrections averaged over rounds (``eager`` and
    ``correction_memory`` None; session 19: the earlier start diverged in the simulator without a prox term, and on
    churn the new one was 1.53x DiLoCo, 3 of 3 seeds). Around Adam too since session 25, with rounds from a floor of
    2 steps that do not weigh the link (a rank keeps its own change a round longer under overlap; on the throughput
    GRU 1.14x the synchronous sync on ``wan``, 3 of 3 seeds each).
    """

    method: ClassVar[str] = "Gated DANE"
    default_compressor: ClassVar[tuple[str, Mapping[str, Any]]] = ("identity", {})
    paper_defaults: ClassVar[Mapping[str, Any]] = {"outer": "extrapolate", "correction": "fresh", "link_aware": False}

    grad_compressor: Any = field(
        default=None,
        metadata=_doc("compressor of the anchor-gradient uplink (biased: EF21 estimates per rank); `None`: dense"),
    )
    grad_compressor_options: dict[str, Any] | None = field(
        default=None, metadata=_doc("options of a named `grad_compressor`")
    )
    downlink_compressor: Any = field(
        default=None,
        metadata=_doc(
            "compressor of the downlink (biased): every rank adds C(x_next − anchor) to the anchor and "
            "C(ĝ − ĝ_held) to the anchor gradient it holds, EF21-P style; `None`: dense"
        ),
    )
    downlink_compressor_options: dict[str, Any] | None = field(
        default=None, metadata=_doc("options of a named `downlink_compressor`")
    )
    error_feedback: bool | None = field(
        default=None,
        metadata=_doc(
            "error feedback (EF14 residuals) on the compressed model change; `None`: on for biased compressors"
        ),
    )
    inner_steps: int = field(
        default=50,
        metadata=_doc("H ≥ 1 local optimizer steps per round (`sync: fixed`), or the cap H_max (`sync: gated`)"),
    )
    min_inner_steps: int | None = field(
        default=None,
        metadata=_doc(
            "`sync: gated`: the first round's H and the smallest H, in [1, inner_steps]; `None`: min(5, inner_steps), "
            "and min(2, inner_steps) under `overlap` with an adaptive optimizer (Adam), where a rank carries its own "
            "change a round longer than the synchronous sync lets it (session 25: rounds of 2 under overlap took the "
            "throughput GRU's steps of the synchronous rounds of 5, rounds of 3 and 5 missed a seed). With `None` "
            "under `overlap` with `link_aware` the rounds start at twice it (within inner_steps) until the hub has "
            "timed the exchange: first rounds of 5 ended before their exchange (session 30)"
        ),
    )
    sync: str = field(
        default="gated",
        metadata=_doc(
            "`gated`: each rank reports the local step at which its round was done (drift or local solve, below); "
            "the next round lasts the first rank's count (doubled, up to `inner_steps`, if none was done); "
            "`fixed`: every round lasts `inner_steps`"
        ),
    )
    correction: str = field(
        default="averaged",
        metadata=_doc(
            "`fresh`: each round opens with a gather of the ranks' anchor gradients and a broadcast of their mean "
            "(exact DANE corrections, 4 collectives a round); `lagged`: those gradients travel with the round's "
            "sync and the next round uses them, one anchor old (SCAFFOLD's lag; 2 collectives a round); "
            "`averaged`: as `lagged`, with the mean of each rank's minibatch gradients over the round in place of "
            "its anchor gradient (SCAFFOLD's option II: 1/√H of one minibatch's noise in the correction; the default "
            "from session 11's B3 runs); `update`: as `averaged`, with the correction applied in the optimizer's "
            "update space (each step is the optimizer's step on the minibatch gradient minus e_m, "
            "e_m += (Δ̄ − Δ_m)/H after each sync; the hub sends Δ̄: d more values down), so the corrections cancel "
            "across ranks under Adam as under SGD"
        ),
    )
    correction_memory: float | None = field(
        default=None,
        metadata=_doc(
            "`lagged`/`averaged`: the weight in [0, 1) of the previous correction in the new one, "
            "c_m ← memory·c_m + (1 − memory)·(ĝ − g_m), an exponential average over rounds. One round's minibatch "
            "noise shrinks to √((1 − memory)/(1 + memory)) of itself, and the correction lags memory/(1 − memory) "
            "rounds more; the ranks' corrections still sum to zero. 0: the last round's alone. None: 0.2 under "
            "`overlap` (its corrections are two rounds old; with `eager: once` the simulator's runs without a prox "
            "term converge only with it, B8 part 2d, session 19), else 0"
        ),
    )
    preconditioner: str = field(
        default="local",
        metadata=_doc(
            "`local`: each rank's optimizer keeps its own state (Adam's moments, momentum) over its local steps; "
            "`shared` (Adam, AdamW): Adam's second moment is built once a round from the ranks' mean squared anchor "
            "gradient (sent with ĝ: d more values down per round), the same on every rank and frozen within the "
            "round (after Mime), floored by the rank's own; momentum stays per rank; the corrected steps stay linear "
            "in the gradient. SGD steps as the user's optimizer either way"
        ),
    )
    link_aware: bool | None = field(
        default=None,
        metadata=_doc(
            "`sync: gated`: weigh the drift against the link. The hub measures a = t_sync/t_step (its sync's "
            "wall-clock over the median interval between its local steps; under `overlap` the exchange's over the "
            "round's training time per step; the first sync, a warm-up, left out) and the next round lasts "
            "√(H_drift·a) steps (under `overlap` a), H_drift being the drift gate's choice within "
            "[`min_inner_steps`, `inner_steps`] (the "
            "error-runtime optimum when per-step progress falls as 1/(1 + H/H_drift)), within the same bounds; before "
            "the gate can measure drift (no δ̂ or θ) a round with no rank done keeps its length. H then "
            "depends on the machine's timing; `false`: H_drift (reproducible rounds; the simulator's default). "
            "`None`: on, except under `overlap` with an adaptive optimizer (Adam): its rounds stay at the drift "
            "gate's choice, which sits at `min_inner_steps` there, as a longer round costs it steps that a hidden "
            "sync does not pay back (session 25)"
        ),
    )
    overlap: bool | None = field(
        default=None,
        metadata=_doc(
            "hide each sync behind the next round's local steps: a rank sends its round's message and goes on from "
            "where it is; the reply (the new anchor) is taken one round later and the rank keeps that round's progress "
            "on top of it (a one-round-delayed anchor, as in streaming DiLoCo). Faults and rank 0's stop travel in the "
            "messages. With `link_aware` a round lasts a, the whole exchange's measured time in steps of the round's "
            "own training time (a round of H takes max(H, a) steps' time; √(H_drift·a) rounds waited for the exchange: "
            "session 28). Needs `correction` `lagged` or `averaged`, dense messages (no compressors), "
            "`preconditioner: local`. Under an adaptive optimizer (Adam) its rounds start from a floor of 2 steps "
            "and do not weigh the link (`min_inner_steps`, `link_aware`: with rounds of 5-7 the GRU reached the "
            "target on 1 of 3 seeds; with rounds of 2 on 3 of 3, 1.14x the synchronous sync's time on `wan`, session "
            "25). `None`: on in Lightning over gloo where those options allow it (B3 sessions 15-16, credit under "
            "SGD: 1.42-1.55x DiLoCo on `edge` with bf16 messages; under Adam since session 25, except where "
            "`sync: fixed` with `inner_steps` > 2, `min_inner_steps` > 2 or `link_aware: true` asks for longer rounds, "
            "which overlap lost quality with on IID shards too, session 27; `true` there warns); off over NCCL "
            "(untested on GPUs), and in the simulator, which counts rounds (a one-round-late reply only adds rounds)"
        ),
    )
    message_dtype: str | None = field(
        default=None,
        metadata=_doc(
            "the dtype the values of a round's one dense message travel in. `bf16` under `overlap`: the model "
            "changes and gradients (up) and Δ̄, ĝ (down) are rounded to bfloat16 in the one gather and the one "
            "broadcast a round has (half a float32 model's bytes; round lengths, counts and flags travel bit for bit "
            "beside them); synchronous (`correction` `lagged`, `averaged` or `update`, no compressors): the gather "
            "alone, the broadcast carrying the new anchor exactly. Every rank and the hub use the rounded values, "
            "and a rank's gradients travel as their change from a shift both ends hold (DIANA's), so the rounding "
            "vanishes as training converges. `model`: the model's dtype. None: `bf16` under `overlap` (as many "
            "steps to the target as `model` on credit, session 16, and in the simulator's rounds); in Lightning over "
            "gloo also for the synchronous sync where it is one message (the throughput GRU under Adam: as many steps, "
            "a cheaper step on `edge`, sessions 23-24); else `model` (the simulator, NCCL)"
        ),
    )
    eager: str | None = field(
        default=None,
        metadata=_doc(
            "`overlap`: where a rank starts its next round while the average is in flight. `full`: where the outer "
            "step would put the anchor if every rank's change were its own, outer(x_r, Δ_m); `share`: its own "
            "change as its 1/M share of the average, outer(x_r, Δ_m/M), the other ranks' counting when their "
            "average arrives (Kale et al., 2025's eager update); `once`: its own change applied once beside the "
            "outer step's look-ahead, outer(x_r, Δ_m/g) with g the outer step's gain on Δ (outer_lr·(1 + "
            "outer_momentum), 1 + β), so a rank's deviation from the average is not amplified from round to round "
            "(`full` amplifies it by g: unstable where g > 1 and the shards differ, docs/gated-dane.md, session 19). "
            "None: `once` (session 19; `full` until then)"
        ),
    )
    gate: float = field(
        default=0.5,
        metadata=_doc(
            "drift threshold, without a fixed prox term (`theta`, `delta`): a rank is done when δ̂·‖x_m − x_r‖ ≥ "
            "gate·‖ĝ_r‖ (its correction is stale); δ̂ is each rank's estimate from the change of its correction "
            "between anchors (with `prox_rho` too)"
        ),
    )
    gate_tol: float = field(
        default=0.1,
        metadata=_doc(
            "local-solve threshold: a rank is done when ‖∇F_m(x_m)‖ ≤ gate_tol·‖x_m − x_r‖/θ (S-DANE's inexactness "
            "criterion; θ = 1/(2δ̂) without a prox term, θ_m with `prox_rho`, ‖ĝ_r‖ on the right before δ̂ exists)"
        ),
    )
    theta: float | None = field(
        default=None,
        metadata=_doc("θ > 0 of the prox term ‖x − x_r‖²/(2θ); `None`: 1/(2·delta) with `delta`, else no prox term"),
    )
    delta: float | None = field(
        default=None, metadata=_doc("Hessian similarity δ, if known (θ and the drift gate); `None`: estimated")
    )
    delta_estimate: str = field(
        default="raw",
        metadata=_doc(
            "`delta: None`: how each rank estimates δ̂ from the change of its correction between anchors. `raw`: "
            "as measured (minibatch noise included: δ̂ errs high, rounds short); `debiased`: the expected noise "
            "(1 − 1/M)·(v_r + v_{r−1}) is taken out of the squared change, v being the variance of the gradients the "
            "rank sent, from the spread of its minibatch gradients within the round (one scalar accumulator)"
        ),
    )
    prox_rho: float | None = field(
        default=None,
        metadata=_doc(
            "ρ > 0: a prox term ‖x − b_m‖²/(2θ_m) from each rank's own similarity estimate, θ_m = 1/(2ρ·δ̂_m), moving "
            "with the rank's δ̂ at every sync (none before its first estimate; b_m is the round's start). In the "
            "simulator a local step s/L becomes s/(L + 1/θ_m); over the user's SGD θ_m is held at least its step "
            "along a steady gradient, lr/(1 − momentum), so the pull cannot diverge. The gate keeps its drift clause. "
            "Needs `theta` and `delta` None. Under overlap it cut the simulator's rounds to 1e-8 on label-sorted a9a "
            "with local steps of 1/L from 330 to 96 (ρ = 0.25), and it slowed credit and churn (SGD) at every ρ "
            "tried (session 21, docs/gated-dane.md); `None`: no prox term from the estimate"
        ),
    )
    outer: str = field(
        default="nesterov",
        metadata=_doc(
            "outer step on the averaged model change: `nesterov` (DiLoCo's: `outer_lr`, `outer_momentum`) or "
            "`extrapolate` (Katyusha-X style: x_next = x̄ + β(x̄ − x̄_prev))"
        ),
    )
    outer_lr: float | None = field(
        default=None,
        metadata=_doc(
            "`outer: nesterov`: learning rate of the outer step; `None`: DiLoCo's 0.7 when the local steps are linear "
            "in the gradient (SGD, with or without momentum; the simulator's gradient steps), else 1.0 (Adam and other "
            "adaptive optimizers: plain averaging, see `outer_momentum`)"
        ),
    )
    outer_momentum: float | None = field(
        default=None,
        metadata=_doc(
            "`outer: nesterov`: Nesterov momentum in [0, 1); `None`: DiLoCo's 0.9 when the local steps are linear in "
            "the gradient, else 0. Under an adaptive optimizer each rank's normaliser keeps the ranks' corrections "
            "from cancelling, and the momentum amplified what is left (throughput GRU, seed 2: MAE 111 with 0.9; "
            "reaches DDP's plateau with 0; docs/gated-dane.md, session 12)"
        ),
    )
    beta: float | None = field(
        default=None,
        metadata=_doc(
            "`outer: extrapolate`: β in [0, 1); `None`: (1 − √q)/(1 + √q), q = μθ/(1 + μθ) (needs `mu` > 0 and θ)"
        ),
    )
    mu: float = field(default=0.0, metadata=_doc("strong convexity μ ≥ 0, for the default β (0 for neural networks)"))

    @property
    def built_grad_compressor(self) -> Compressor | None:
        """The ``grad_compressor`` instance, or ``None``."""
        return self.__dict__["_grad_compressor"]

    @property
    def built_downlink_compressor(self) -> Compressor | None:
        """The ``downlink_compressor`` instance, or ``None``."""
        return self.__dict__["_downlink_compressor"]

    @property
    def min_steps(self) -> int:
        """The smallest H of a gated round."""
        return min(5, self.inner_steps) if self.min_inner_steps is None else int(self.min_inner_steps)

    @property
    def first_steps(self) -> int:
        """The first gated rounds' H: :attr:`min_steps`, or twice it under ``overlap`` with ``link_aware``.

        Twice the floor (within ``inner_steps``) where ``min_inner_steps`` is None; the rounds keep it until the hub
        has timed the exchange, when they start to last the exchange's a. Rounds of the floor of 5 ended before their
        exchange: on churn ``by_group`` over ``edge`` the first joins waited 0.05-0.10 s where fixed rounds of 10
        waited none (B3 session 29, ``docs/gated-dane.md``).
        """
        if self.overlap and self.resolved_link_aware and self.min_inner_steps is None:
            return min(self.inner_steps, 2 * self.min_steps)
        return self.min_steps

    @property
    def resolved_theta(self) -> float | None:
        """θ in force: ``theta``, else ``1/(2 delta)``, else ``None`` (no prox term)."""
        if self.theta is not None:
            return float(self.theta)
        return None if self.delta is None else 1.0 / (2.0 * float(self.delta))

    @property
    def uses_error_feedback(self) -> bool:
        """Whether the model change is sent with error feedback."""
        if self.error_feedback is None:
            return not self.built_compressor.unbiased and not isinstance(self.built_compressor, Identity)
        return bool(self.error_feedback)

    @property
    def resolved_beta(self) -> float:
        """The extrapolation β (``outer: extrapolate``)."""
        if self.beta is not None:
            return float(self.beta)
        theta = self.resolved_theta
        assert theta is not None and self.mu > 0  # check() guarantees it
        q = self.mu * theta / (1 + self.mu * theta)
        return (1 - math.sqrt(q)) / (1 + math.sqrt(q))

    def check(self) -> None:
        super().check()
        _check_int("inner_steps", self.inner_steps, minimum=1, fix="use an integer >= 1 (e.g. 50)")
        if self.min_inner_steps is not None:
            _check_int(
                "min_inner_steps",
                self.min_inner_steps,
                minimum=1,
                fix=f"use an integer in [1, inner_steps={self.inner_steps}], or None",
            )
        if self.sync == "gated" and self.min_steps > self.inner_steps:
            raise OptionError(
                "min_inner_steps",
                self.min_inner_steps,
                f"exceeds inner_steps={self.inner_steps}",
                "lower it, or raise inner_steps (the cap of a gated round)",
            )
        _check_choice(
            "sync", self.sync, ("gated", "fixed"), "use 'gated' (drift decides H) or 'fixed' (H = inner_steps)"
        )
        _check_choice("outer", self.outer, ("nesterov", "extrapolate"), "use 'nesterov' or 'extrapolate'")
        _check_choice(
            "correction",
            self.correction,
            ("fresh", "lagged", "averaged", "update"),
            "use 'fresh' (own anchor round), 'lagged' (anchor gradients with the sync), 'averaged' (round means) or "
            "'update' (round means, the correction in the optimizer's update space)",
        )
        if self.correction_memory is not None and (
            not _is_real(self.correction_memory) or not 0 <= self.correction_memory < 1
        ):
            raise OptionError(
                "correction_memory",
                self.correction_memory,
                "is out of range",
                "use a number in [0, 1) (0: each round's correction alone), or None",
            )
        if self.correction_memory and self.correction not in ("lagged", "averaged"):
            raise OptionError(
                "correction_memory",
                self.correction_memory,
                f"averages lagged gradient corrections, which correction={self.correction!r} does not step with "
                "(`fresh` is exact at the anchor; `update` steps with e_m)",
                "use correction='averaged' or 'lagged', or correction_memory=0",
            )
        _check_choice(
            "delta_estimate",
            self.delta_estimate,
            ("raw", "debiased"),
            "use 'raw' (noise included) or 'debiased' (the within-round minibatch variance taken out)",
        )
        _check_choice(
            "preconditioner",
            self.preconditioner,
            ("local", "shared"),
            "use 'local' (each rank's own optimizer state) or 'shared' (one state from ĝ, frozen within a round)",
        )
        for name in ("gate", "gate_tol"):
            check_positive(name, getattr(self, name))
        _optional_positive("outer_lr", self.outer_lr)
        for name in ("theta", "delta", "prox_rho"):
            _optional_positive(name, getattr(self, name))
        if self.prox_rho is not None and (self.theta is not None or self.delta is not None):
            fixed = "theta" if self.theta is not None else "delta"
            raise OptionError(
                "prox_rho",
                self.prox_rho,
                f"is set together with {fixed}={getattr(self, fixed)}, which fixes the prox term",
                f"drop prox_rho (None) to keep the fixed θ, or drop {fixed} (None) to take θ from the estimate δ̂",
            )
        if self.link_aware is not None:
            _check_bool("link_aware", self.link_aware)
        if self.overlap is not None:
            _check_bool("overlap", self.overlap)
        if self.overlap:
            conflict = self.overlap_conflicts()
            if conflict:
                name, reason, fix = conflict[0]
                raise OptionError(name, getattr(self, name), reason, f"{fix}, or set overlap=false")
        if self.message_dtype is not None and self.message_dtype not in MESSAGE_DTYPES:
            raise OptionError(
                "message_dtype",
                self.message_dtype,
                "is not supported",
                f"use one of {sorted(MESSAGE_DTYPES)}, or None (bf16 under overlap)",
            )
        if self.eager is not None and self.eager not in EAGER_STARTS:
            raise OptionError(
                "eager", self.eager, "is not supported", f"use one of {list(EAGER_STARTS)}, or None (`once`)"
            )
        if self.eager not in (None, "full") and self.overlap is False:
            raise OptionError(
                "eager",
                self.eager,
                "applies only to overlap's start of a round",
                "set overlap=true (or None: on for SGD in Lightning), or drop eager",
            )
        if self.error_feedback is not None:
            _check_bool("error_feedback", self.error_feedback)
        if self.outer_momentum is not None and (not _is_real(self.outer_momentum) or not 0 <= self.outer_momentum < 1):
            raise OptionError(
                "outer_momentum", self.outer_momentum, "is invalid", "use a number in [0, 1) (0: none), or None"
            )
        if not _is_real(self.mu) or not math.isfinite(self.mu) or self.mu < 0:
            raise OptionError("mu", self.mu, "is out of range", "use a finite value >= 0 (0 for neural networks)")
        if self.beta is not None and (not _is_real(self.beta) or not 0 <= self.beta < 1):
            raise OptionError("beta", self.beta, "is invalid", "use a number in [0, 1) (0: no extrapolation)")
        if self.outer == "extrapolate" and self.beta is None and (self.mu <= 0 or self.resolved_theta is None):
            raise OptionError(
                "beta",
                None,
                "",
                "pass beta (e.g. 0.8), or outer='nesterov' (prox_rho's θ exists only after the first estimate)"
                if self.prox_rho is not None
                else "pass beta (e.g. 0.8), or mu > 0 together with theta or delta",
                statement="outer='extrapolate' takes its default β from μ and θ",
            )
        self._cache("_grad_compressor", _optional_compressor(self, "grad_compressor", "EF21 estimates"))
        self._cache(
            "_downlink_compressor", _optional_compressor(self, "downlink_compressor", "a shared anchor estimate")
        )
        if self.overlap:
            for name in ("grad_compressor", "downlink_compressor"):
                if self.__dict__[f"_{name}"] is not None:
                    fix = f"drop {name} (None), or set overlap=false"
                    raise OptionError(name, getattr(self, name), "is set with overlap=true", fix)
        if self.message_dtype is not None and not self.overlap:  # None resolves to on only where this holds too
            conflict = self.sync_message_conflicts()
            if conflict:
                name, reason, fix = conflict[0]
                raise OptionError(
                    name,
                    getattr(self, name),
                    f"{reason} in a collective of its own, which message_dtype={self.message_dtype!r} does not round",
                    f"{fix}, or drop message_dtype (None)",
                )

    def overlap_conflicts(self) -> list[tuple[str, str, str]]:
        """The options that rule ``overlap`` out, as (field, why, fix); empty where it can run.

        ``overlap`` sends one dense message each way per round, built by the lagged or averaged corrections.
        """
        conflicts = []
        if self.correction not in ("lagged", "averaged"):
            conflicts.append(("correction", "is not supported with overlap=true", "use 'averaged' or 'lagged'"))
        if self.preconditioner != "local":
            conflicts.append(("preconditioner", "is not supported with overlap=true", "use 'local'"))
        if not isinstance(self.built_compressor, Identity) or self.error_feedback:
            conflicts.append(
                (
                    "compressor",
                    "compresses the model change, which overlap=true sends dense",
                    "use the identity compressor (compressor=identity)",
                )
            )
        return conflicts

    def sync_message_conflicts(self) -> list[tuple[str, str, str]]:
        """The options under which the synchronous sync sends no single dense message, as (field, why, fix).

        ``message_dtype`` rounds the values of that message (the ``lagged``, ``averaged`` and ``update`` corrections'
        one gather of [Δ_m, ∇f_m(x_r), count]); compressed changes or gradients, and ``fresh``'s anchor round, travel
        in collectives of their own.
        """
        conflicts = []
        if self.correction == "fresh":
            conflicts.append(
                ("correction", "sends the anchor gradients apart from the model changes", "use 'lagged' or 'averaged'")
            )
        if not isinstance(self.built_compressor, Identity) or self.error_feedback:
            conflicts.append(("compressor", "compresses the model change", "use the identity compressor"))
        if self.built_grad_compressor is not None:
            conflicts.append(("grad_compressor", "compresses the anchor gradients", "drop grad_compressor (None)"))
        return conflicts

    def resolve_overlap(self, *, linear_steps: bool, backend: str = "gloo") -> GatedDANEOptions:
        """These options with ``overlap`` decided (Lightning; the simulator takes ``None`` as off).

        Args:
            linear_steps: whether the local optimizer's step is linear in the gradient (SGD).
            backend: the ``torch.distributed`` backend. ``None`` turns overlap on over gloo only: over NCCL, collectives
                of two communicators issued from two threads in different orders on different ranks can deadlock,
                and the background exchange has not been run on GPUs (``overlap=true`` still takes it there).

        Returns:
            ``self`` where ``overlap`` is set; else a copy with ``overlap`` on when the backend is gloo and no other
            option rules it out (:meth:`overlap_conflicts`, the compressors of the gradients and downlink) and, under
            an adaptive optimizer (``linear_steps`` false), no option asks for rounds longer than 2 steps
            (:meth:`long_rounds_under_adaptive_overlap`). Under ``overlap`` with an adaptive optimizer, a copy whose
            rounds are set for it (:meth:`_adaptive_overlap_rounds`).
        """
        resolved = self
        if self.overlap is None:
            dense = self.built_grad_compressor is None and self.built_downlink_compressor is None
            allowed = backend == "gloo" and dense and not self.overlap_conflicts()
            if not linear_steps and self.long_rounds_under_adaptive_overlap():
                allowed = False  # the user asked for rounds that overlap cannot keep under Adam (session 27)
            resolved = replace(self, overlap=allowed)
        if resolved.overlap and not linear_steps:
            return resolved._adaptive_overlap_rounds()
        return resolved

    def long_rounds_under_adaptive_overlap(self) -> str | None:
        """Which option asks for rounds longer than 2 steps, which ``overlap`` cannot keep under an adaptive optimizer.

        Under Adam a rank carries its own change a round longer with ``overlap``, and overlapped rounds longer than 2
        steps lost the throughput GRU its quality on shards that differ and on IID ones alike (B3 sessions 25 and 27,
        ``docs/gated-dane.md``), where the synchronous sync's rounds of the same length did not. So ``overlap=None``
        keeps the synchronous sync when the user's options ask for such rounds. Returns the option and its value
        (``"sync=fixed, inner_steps=10"``), or ``None``.
        """
        if self.sync == "fixed" and self.inner_steps > 2:
            return f"sync=fixed, inner_steps={self.inner_steps}"
        if self.sync == "gated" and self.min_inner_steps is not None and self.min_inner_steps > 2:
            return f"min_inner_steps={self.min_inner_steps}"
        if self.sync == "gated" and self.link_aware:
            return "link_aware=true"
        return None

    def adaptive_overlap_warning(self, optimizer: str) -> str | None:
        """What to tell a user who set ``overlap=true`` with rounds longer than 2 under an adaptive optimizer.

        ``None`` unless ``overlap`` is on and :meth:`long_rounds_under_adaptive_overlap` names an option: only an
        explicit ``overlap=true`` gets there, as ``None`` resolves to the synchronous sync for such rounds.

        Args:
            optimizer: the local optimizer's class name, for the message.
        """
        long_rounds = self.long_rounds_under_adaptive_overlap() if self.overlap else None
        if long_rounds is None:
            return None
        return (
            f"gated_dane: overlap=true with {long_rounds} under an adaptive optimizer ({optimizer}): overlapped "
            "rounds longer than 2 steps lost the throughput GRU its quality on IID and non-IID shards alike, where "
            "synchronous rounds of the same length did not (docs/gated-dane.md, sessions 25 and 27). Leave overlap "
            "None (or set it false) to keep these rounds synchronous, or keep overlap with rounds of 2 (sync=gated, "
            "min_inner_steps and link_aware None)."
        )

    def _adaptive_overlap_rounds(self) -> GatedDANEOptions:
        """Under ``overlap`` with an adaptive optimizer: ``min_inner_steps`` None → 2, ``link_aware`` None → off.

        A rank's own change of a round counts alone until the reply comes, a round later, so its iterate strays from
        the others' for two rounds where the synchronous sync lets it stray for one. Under Adam the drift gate holds
        the rounds at their floor, and on the throughput GRU (B3 session 25, ``docs/gated-dane.md``) overlapped rounds
        of 2 took the synchronous rounds of 5's steps on every seed, where rounds of 3 and 5 missed a seed; weighing
        the link lengthened them to 3 on ``edge``.
        """
        floor = min(2, self.inner_steps) if self.min_inner_steps is None else self.min_inner_steps
        link_aware = False if self.link_aware is None else self.link_aware
        return replace(self, min_inner_steps=floor, link_aware=link_aware)

    def resolve_lightning(self, *, linear_steps: bool, backend: str = "gloo", model_bits: int = 32) -> GatedDANEOptions:
        """These options as Lightning runs them: ``overlap`` (:meth:`resolve_overlap`), then ``message_dtype``.

        ``message_dtype`` None becomes ``bf16`` over gloo wherever the round has its one dense message: under
        ``overlap`` (as :attr:`wire_dtype_name` already reads it) and, for float32 and float64 models, in the
        synchronous sync where no option sends its values in other collectives (:meth:`sync_message_conflicts`).
        The throughput GRU under Adam took as many steps with the synchronous sync's gather in bf16 as in float32
        (B3 sessions 23-24, ``docs/gated-dane.md``) at a cheaper step on ``edge``. Over other backends it stays the
        model's dtype (not yet run on GPUs), as for 16-bit models (bf16 would not narrow a bf16 model's values, and
        would round an fp16 model's mantissa); the simulator keeps ``None`` as the model's dtype.

        Args:
            linear_steps: whether the local optimizer's step is linear in the gradient (SGD).
            backend: the ``torch.distributed`` backend.
            model_bits: the width of the model's floating-point values (32 for float32).
        """
        resolved = self.resolve_overlap(linear_steps=linear_steps, backend=backend)
        if resolved.message_dtype is not None or resolved.overlap or backend != "gloo" or model_bits < 32:
            return resolved
        return resolved if resolved.sync_message_conflicts() else replace(resolved, message_dtype="bf16")

    @property
    def resolved_link_aware(self) -> bool:
        """Whether rounds weigh the drift against the link: ``link_aware``, on by default.

        Lightning resolves ``None`` first (:meth:`resolve_overlap`): off under ``overlap`` with an adaptive optimizer.
        """
        return True if self.link_aware is None else bool(self.link_aware)

    @property
    def resolved_eager(self) -> str:
        """The ``eager`` start in force under ``overlap``: ``once`` by default."""
        return "once" if self.eager is None else str(self.eager)

    @property
    def resolved_correction_memory(self) -> float:
        """The ``correction_memory`` in force: 0.2 under ``overlap`` by default, else 0."""
        if self.correction_memory is not None:
            return float(self.correction_memory)
        return 0.2 if self.overlap and self.correction in ("lagged", "averaged") else 0.0

    @property
    def wire_dtype_name(self) -> str:
        """The ``message_dtype`` in force: ``bf16`` by default under ``overlap``, the model's otherwise.

        Lightning resolves ``None`` before (:meth:`resolve_lightning`): ``bf16`` over gloo for the synchronous sync too.
        """
        if self.message_dtype is not None:
            return str(self.message_dtype)
        return "bf16" if self.overlap else "model"


@dataclass(frozen=True)
class PowerSGDOptions(Options):
    """PowerSGD's options (Vogels et al., NeurIPS 2019), as torch's ``PowerSGDState`` takes them."""

    method: ClassVar[str] = "PowerSGD"

    rank: int = field(default=1, metadata=_doc("matrix approximation rank r (1–4 is typical; lower compresses more)"))
    start_iter: int = field(
        default=2, metadata=_doc("optimizer steps of dense all-reduce before compression starts; at least 2")
    )
    min_compression_rate: float = field(
        default=2.0, metadata=_doc("a matrix is compressed only if n·m > (n + m)·r·min_compression_rate")
    )
    seed: int = field(default=0, metadata=_doc("seed of the random initial Q (the same on every rank)"))

    def check(self) -> None:
        super().check()
        _check_int(
            "rank", self.rank, minimum=1, fix="the matrix approximation rank is an integer >= 1 (1-4 is typical)"
        )
        if _is_int(self.start_iter) and self.start_iter < 2:
            raise OptionError(
                "start_iter",
                self.start_iter,
                "is invalid",
                "PowerSGD's error feedback and warm start can only begin after DDP rebuilt its gradient buckets "
                "(after the first step), so torch requires start_iter >= 2; use start_iter=2 or more (the first "
                "start_iter steps all-reduce dense gradients)",
            )
        _check_int("start_iter", self.start_iter, minimum=2, fix="use an integer >= 2")
        rate = self.min_compression_rate
        if not _is_real(rate) or not math.isfinite(rate) or rate <= 0:
            raise OptionError(
                "min_compression_rate",
                rate,
                "is invalid",
                "use a finite number > 0 (2.0 compresses a matrix only if that at least halves its size)",
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise OptionError("seed", self.seed, "is invalid", "use an integer in [0, 2**32 - 1]")


# ----------------------------------------------------------------------------------- docs
def _default_text(cls: type[Options], f: Field) -> str:
    if f.name == "compressor" and issubclass(cls, HubOptions):
        name, options = cls.default_compressor
        shown = ", ".join(f"{k} {v}" for k, v in options.items())
        return f"`None` (`{name}`{' ' + shown if shown else ''})"
    # ignored: mypy cannot narrow away dataclasses' MISSING sentinel; a field without a default has a factory
    default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
    return f"`{default!r}`"


def options_table(*classes: type[Options]) -> str:
    """The markdown table of the options of one method (or of variants sharing fields: OLGA and EF-OLGA).

    One row per option: its name, its default (``OLGA: ...; EF-OLGA: ...`` where the variants differ) and
    its meaning (the field's ``metadata["doc"]``).
    """
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for f in fields(classes[0]):
        shown = [_default_text(cls, cls.__dataclass_fields__[f.name]) for cls in classes]
        default = (
            shown[0]
            if len(set(shown)) == 1
            else "; ".join(f"{c.method}: {s}" for c, s in zip(classes, shown, strict=True))
        )
        rows.append(f"| `{f.name}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


#: The options object of each configurable strategy name (``conf/strategy/<name>.yaml``; ``ddp`` has none).
STRATEGY_OPTIONS: dict[str, type[Options]] = {
    "olga": OLGAOptions,
    "ef_olga": EFOLGAOptions,
    "compressed": CompressedOptions,
    "diloco": DiLoCoOptions,
    "powersgd": PowerSGDOptions,
    "gated_dane": GatedDANEOptions,
}
_TABLE = re.compile(r"(<!-- options: ([\w ]+) -->\n)(.*?)(<!-- /options -->)", re.DOTALL)


def render_tables(text: str) -> str:
    """``text`` (markdown) with each ``<!-- options: NAME ... -->`` block replaced by :func:`options_table`.

    ``docs/strategies.md`` holds one block per method (``olga ef_olga`` share one); regenerate it with
    ``python -m lit_commeff.cli.schema docs/strategies.md``.
    """

    def table(match: re.Match[str]) -> str:
        classes = [STRATEGY_OPTIONS[name] for name in match.group(2).split()]
        return f"{match.group(1)}{options_table(*classes)}{match.group(4)}"

    return _TABLE.sub(table, text)
