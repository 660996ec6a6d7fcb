"""Simulator API for researchers: run a method on a problem with M virtual workers, get a History.

from lit_commeff import sim
from lit_commeff.problems import Ridge
problem = Ridge.from_libsvm("a9a", workers=100)
history = sim.run(problem, "olga", compressor=("randk", {"k": 1}), cc3_budget=200, tol=1e-8)
history.cc3_to(1e-6), history.to_pandas()
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lit_commeff.algorithms import ALGORITHMS, Algorithm, ProblemOracle
from lit_commeff.compression import Compressor, build
from lit_commeff.compression.registry import accepts
from lit_commeff.transport import SimulatorTransport

CompressorSpec = Compressor | str | tuple[str, Mapping[str, Any]] | None


@dataclass
class History:
    """Per-round record of a simulated run.

    Each row holds ``round``, ``cc1``, ``cc2``, ``cc3``, ``uplink_bytes`` (all workers),
    ``downlink_bytes`` (all receivers), ``rel_subopt`` = (f(out) − f*)/(f(x_0) − f*) and
    ``grad_norm_sq`` = ||∇f(out)||² at the method's output iterate after that round.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def final(self) -> dict[str, float]:
        """The last row."""
        return self.rows[-1]

    def first_reaching(self, eps: float, column: str = "rel_subopt") -> dict[str, float] | None:
        """The first row whose ``column`` is at or below ``eps`` (``None`` if never)."""
        return next((r for r in self.rows if r[column] <= eps), None)

    def cc3_to(self, eps: float) -> float:
        """CC-3 units spent when relative suboptimality first reached ``eps`` (``inf`` if never)."""
        row = self.first_reaching(eps)
        return row["cc3"] if row else math.inf

    def uplink_bytes_to(self, eps: float) -> float:
        """Uplink bytes (all workers) spent when relative suboptimality first reached ``eps``."""
        row = self.first_reaching(eps)
        return row["uplink_bytes"] if row else math.inf

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (needs pandas)."""
        import pandas as pd

        frame = pd.DataFrame(self.rows)
        frame.attrs.update(self.meta)
        return frame

    def to_json(self, path: str | Path | None = None) -> str:
        """Rows and metadata as JSON; written to ``path`` when given."""
        text = json.dumps({"meta": self.meta, "rows": self.rows}, default=_jsonable)
        if path is not None:
            Path(path).write_text(text)
        return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    return str(value)


def resolve_compressor(spec: CompressorSpec, *, seed: int | None = None) -> Compressor | None:
    """A compressor from an instance, a registry name, or ``(name, options)``.

    Args:
        spec: The compressor, its registered name, or ``(name, options)``.
        seed: Seed of a built compressor's draws, used when ``options`` give no ``seed`` and the compressor
            takes one (RandK, QSGD, LowRank); ``None`` keeps the compressor's default. An explicit
            ``options["seed"]`` wins. An instance is returned as it is (its own ``seed`` stands).
    """
    if spec is None or isinstance(spec, Compressor):
        return spec
    name, options = (spec, {}) if isinstance(spec, str) else (spec[0], dict(spec[1]))
    if seed is not None and "seed" not in options and accepts(name, "seed"):
        options["seed"] = seed
    return build(name, **options)


def _seeded_compressors(compressor: CompressorSpec, params: dict[str, Any], seed: int) -> Compressor | None:
    """Build ``compressor`` with the run's seed, and give named ``*_compressor`` options that seed too.

    A ``<field>_compressor`` option given by name (OLGA's ``dense_compressor``/``downlink_compressor``) gets
    ``seed`` added to its ``<field>_compressor_options`` unless those set one. An instance whose ``seed``
    differs from the run's keeps its own, with a warning.
    """
    for key, spec in [("compressor", compressor), *params.items()]:
        own_seed = getattr(spec, "seed", seed)  # not every compressor has a seed
        if isinstance(spec, Compressor) and own_seed != seed:
            warnings.warn(
                f"{key}: the instance {spec!r} keeps its own seed {own_seed}, not sim.run's seed={seed}; "
                f"pass it by name, e.g. ({spec.name!r}, {{...}}), to let seed drive its draws, or build it "
                f"with seed={seed}.",
                UserWarning,
                stacklevel=3,
            )
        if key != "compressor" and key.endswith("_compressor") and isinstance(spec, str):
            options = dict(params.get(f"{key}_options") or {})
            if "seed" not in options and accepts(spec, "seed"):
                params[f"{key}_options"] = {**options, "seed": seed}
    return resolve_compressor(compressor, seed=seed)


def make_algorithm(
    problem: Any,
    algorithm: str | type[Algorithm],
    transport: SimulatorTransport,
    *,
    compressor: Compressor | None,
    x0: Tensor,
    seed: int,
    params: Mapping[str, Any],
) -> Algorithm:
    """Instantiate a method, filling the problem constants (L, μ, δ) it asks for."""
    if isinstance(algorithm, str):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: unknown name {algorithm!r}; known methods: {', '.join(sorted(ALGORITHMS))}.")
        cls = ALGORITHMS[algorithm]
    else:
        cls = algorithm
    parameters = inspect.signature(cls.__init__).parameters.values()
    accepted = {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
    options_cls = getattr(cls, "options_cls", None)
    if options_cls is not None and any(p.kind is p.VAR_KEYWORD for p in parameters):  # OLGA: options as keywords
        accepted |= set(options_cls.names())
    constants = {"mu": problem.mu, "delta": problem.delta, "L": problem.L, "delta0": problem.L}
    if hasattr(problem, "L_tilde"):
        constants["L_tilde"] = problem.L_tilde
    kwargs = {k: v for k, v in constants.items() if k in accepted}
    unknown = set(params) - set(accepted)
    if unknown:
        options = sorted(set(accepted) - {"self", "transport", "oracle", "x0"})
        raise ValueError(f"{cls.name}: unknown option(s) {sorted(unknown)}; it accepts {options}.")
    kwargs.update(params)
    if "compressor" in accepted:
        if compressor is None:
            raise ValueError(f"compressor: {cls.name} compresses its messages; pass compressor=... (e.g. 'randk').")
        kwargs["compressor"] = compressor
    oracle = ProblemOracle(problem, transport.workers, hub=transport.hub)
    return cls(transport=transport, oracle=oracle, x0=x0, seed=seed, **kwargs)


def run(
    problem: Any,
    algorithm: str | type[Algorithm],
    *,
    compressor: CompressorSpec = None,
    rounds: int | None = None,
    cc3_budget: float | None = None,
    tol: float | None = None,
    seed: int = 0,
    x0: Tensor | None = None,
    chunk_workers: int | None = None,
    **params: Any,
) -> History:
    """Run ``algorithm`` on ``problem`` with one virtual worker per shard.

    Args:
        problem: A :class:`lit_commeff.problems.Problem` (its shards fix M and d).
        algorithm: A name from :data:`lit_commeff.algorithms.ALGORITHMS` or an Algorithm class.
        compressor: For compressing methods: an instance, a registry name or ``(name, options)``. A name or
            ``(name, options)`` is built with ``seed`` as the compressor's seed unless ``options`` set
            ``"seed"`` (an explicit compressor seed wins); an instance keeps its own seed (a warning says
            so when it differs from ``seed``).
        rounds: Stop after this many communication rounds.
        cc3_budget: Stop once this many CC-3 units are spent.
        tol: Stop once the relative suboptimality is at or below ``tol``.
        seed: Seed of every random choice: epoch lengths, sampled clients and coins of the method, and the
            draws of the compressors it builds (``compressor`` and named ``*_compressor`` options, such
            as OLGA's ``dense_compressor``). Same seed, same history.
        x0: Starting point (zeros by default).
        chunk_workers: Compress the workers' messages in slices of this many rows (same results bit for bit,
            smaller temporaries; see :class:`~lit_commeff.transport.SimulatorTransport`).
        **params: Method options (``preset``, ``theta``, ``p``, ...).

    Returns:
        The per-round :class:`History`; ``meta`` holds the method's resolved hyper-parameters.
    """
    if rounds is None and cc3_budget is None:
        raise ValueError("rounds/cc3_budget: give a stopping budget (rounds=... or cc3_budget=...).")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds: rounds={rounds} must be >= 1.")
    transport = SimulatorTransport(
        num_workers=problem.num_workers, dim=problem.dim, dtype=problem.dtype, chunk_workers=chunk_workers
    )
    start = x0 if x0 is not None else torch.zeros(problem.dim, dtype=problem.dtype, device=problem.device)
    built = _seeded_compressors(compressor, params, seed)
    method = make_algorithm(problem, algorithm, transport, compressor=built, x0=start, seed=seed, params=params)
    f0 = problem.suboptimality(start)
    scale = f0 if f0 > 0 else 1.0
    history = History(
        meta={
            "algorithm": method.name,
            "hyperparameters": method.hyperparameters(),
            "compressor": repr(getattr(method, "compressor", None)),
            "workers": problem.num_workers,
            "dim": problem.dim,
            "seed": seed,
            "L": problem.L,
            "mu": problem.mu,
            "delta": problem.delta,
            "f_star": problem.f_star,
        }
    )
    ledger = transport.ledger
    last_out: Tensor | None = None
    rel = gnorm = 1.0
    while True:
        method.step()
        out = method.output()
        if out is not last_out:  # only re-evaluate when the output iterate changed
            rel = problem.suboptimality(out) / scale
            gnorm = float(problem.grad(out).square().sum())
            last_out = out
        history.rows.append(
            {
                "round": method.round,
                "cc1": ledger.cc1,
                "cc2": ledger.cc2,
                "cc3": ledger.cc3,
                "uplink_bytes": ledger.uplink_bytes,
                "downlink_bytes": ledger.downlink_bytes,
                "rel_subopt": rel,
                "grad_norm_sq": gnorm,
            }
        )
        if not math.isfinite(rel):
            history.meta["diverged"] = True
            break
        if tol is not None and rel <= tol:
            break
        if rounds is not None and method.round >= rounds:
            break
        if cc3_budget is not None and ledger.cc3 >= cc3_budget:
            break
    history.meta["hyperparameters"] = method.hyperparameters()
    history.meta["ledger"] = ledger.summary()
    return history
