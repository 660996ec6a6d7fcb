"""The settings a run actually used, for its MLflow params: resolved defaults instead of ``None``.

A config says ``p: null`` ("1/γ of the compressor"), ``compressor: null`` ("the method's default") or
``pos_weight: null`` ("from the data"); the values only exist once the model is built and the strategy
set up. :func:`effective_settings` reads them then (rank 0, at ``on_fit_start``) under the config's own
keys, so the MLflow run has one param per setting with the value in force:

* ``compressor.name``, ``compressor.<option>`` and ``compressor.k`` (the K in use for this model's d
  parameters) of the compressor the workers send with (also ``strategy.dense_compressor.*`` and
  ``strategy.downlink_compressor.*`` when set);
* ``strategy.<option>`` for each option of the method whose value was resolved by the algorithm (OLGA's
  ``p``, ``theta``, ``tau``, ``alpha``; Gated DANE's ``theta`` …), and ``strategy.resolved.<name>`` for
  the algorithm's derived constants (``omega_used``, ``beta`` …);
* ``recipe.model.<name>`` for the model's hyper-parameters (those the data fill in: ``num_numeric``,
  ``categorical_cardinalities``, ``pos_weight``);
* ``model.parameters``: d, the number of trainable parameters (what every compressed message is cut from).

``None`` values are left out: a setting that is off is absent, not ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Algorithm values that are not settings (they change while training; logged as ``comm/*`` metrics).
_NOT_SETTINGS = frozenset({"delta_hat"})
#: Options that, when false, make others unused (OLGA: ``accelerate=False`` drops τ, α).
_UNUSED_WITHOUT = {"accelerate": ("tau", "alpha")}


def compressor_settings(compressor: Any, d: int | None, prefix: str = "compressor") -> dict[str, Any]:
    """``{prefix}.name``, its options (``None`` left out) and, with ``d``, ``{prefix}.k`` in use.

    Args:
        compressor: A :class:`~lit_commeff.compression.Compressor` (``None``: nothing).
        d: Number of coordinates it compresses (the model's trainable parameters), if known.
        prefix: Key prefix.
    """
    if compressor is None:
        return {}
    out: dict[str, Any] = {f"{prefix}.name": str(getattr(compressor, "name", type(compressor).__name__))}
    repr_args = getattr(compressor, "_repr_args", None)
    for key, value in (repr_args() if callable(repr_args) else {}).items():
        if value is not None:
            out[f"{prefix}.{key}"] = value if isinstance(value, bool | int | float | str) else str(value)
    k_for = getattr(compressor, "k_for", None)
    if d and callable(k_for):
        out[f"{prefix}.k"] = int(k_for(d))
    return out


def strategy_settings(strategy: Any) -> dict[str, Any]:
    """``strategy.<option>`` resolved by the algorithm where configured ``None``; ``strategy.resolved.*``."""
    options = getattr(strategy, "options", None)
    names = set(options.names()) if options is not None else set()
    unused = {n for flag, dropped in _UNUSED_WITHOUT.items() if getattr(options, flag, True) is False for n in dropped}
    hyper = getattr(strategy, "hyperparameters", None)
    values: Mapping[str, Any] = hyper() if callable(hyper) else {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _NOT_SETTINGS or key in unused or value is None:
            continue
        if key in names:
            if getattr(options, key) is None:  # configured None: the value the algorithm resolved
                out[f"strategy.{key}"] = value
        else:
            out[f"strategy.resolved.{key}"] = value
    for attr in ("dense_compressor", "downlink_compressor"):
        built = getattr(options, f"built_{attr}", None) if options is not None else None
        out.update(compressor_settings(built, None, f"strategy.{attr}"))
    return out


def trainable_parameters(module: Any) -> int:
    """d: the number of trainable parameters of ``module``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad))


def model_settings(module: Any, prefix: str = "recipe.model") -> dict[str, Any]:
    """The model's hyper-parameters (``module.hparams``) as ``{prefix}.<name>``, ``None`` left out."""
    hparams = getattr(module, "hparams", None) or {}
    out: dict[str, Any] = {}
    for key, value in dict(hparams).items():
        if value is None or key.startswith("_"):
            continue
        out[f"{prefix}.{key}"] = list(value) if isinstance(value, tuple) else value
    return out


def effective_settings(strategy: Any, module: Any) -> dict[str, Any]:
    """Every setting in force once ``strategy`` is set up on ``module`` (see the module docstring)."""
    d = trainable_parameters(module)
    out: dict[str, Any] = {"model.parameters": d}
    out.update(model_settings(module))
    out.update(compressor_settings(getattr(strategy, "compressor", None), d))
    out.update(strategy_settings(strategy))
    return out
