"""Build compressors by name: ``build("randk", ratio=0.01)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from lit_commeff.compression.base import Compressor

_REGISTRY: dict[str, Callable[..., Compressor]] = {}
_CANONICAL: list[str] = []
_T = TypeVar("_T", bound=Callable[..., Compressor])


def register(*names: str) -> Callable[[_T], _T]:
    """Class decorator: make a compressor buildable under one or more names."""

    def wrap(factory: _T) -> _T:
        if names and names[0] not in _CANONICAL:
            _CANONICAL.append(names[0])
        for name in names:
            if name in _REGISTRY and _REGISTRY[name] is not factory:
                raise ValueError(f"compressor name {name!r} is already registered to {_REGISTRY[name]!r}.")
            _REGISTRY[name] = factory
        return factory

    return wrap


def available(*, aliases: bool = True) -> list[str]:
    """Registered compressor names, sorted; ``aliases=False`` keeps one name per compressor."""
    return sorted(_REGISTRY) if aliases else sorted(_CANONICAL)


def _factory(name: str) -> Callable[..., Compressor]:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _REGISTRY:
        raise ValueError(f"compressor: unknown name {name!r}; known compressors: {', '.join(available())}.")
    return _REGISTRY[key]


def accepts(name: str, option: str) -> bool:
    """Whether the compressor registered as ``name`` takes the keyword option ``option`` (e.g. ``"seed"``).

    Raises:
        ValueError: ``name`` is unknown (the message lists the known names).
    """
    parameter = inspect.signature(_factory(name)).parameters.get(option)
    return parameter is not None and parameter.kind in (parameter.KEYWORD_ONLY, parameter.POSITIONAL_OR_KEYWORD)


def build(name: str, /, **kwargs: Any) -> Compressor:
    """Instantiate the compressor registered as ``name`` with keyword options.

    Raises:
        ValueError: ``name`` is unknown (the message lists the known names), or an option is invalid.
    """
    factory = _factory(name)
    try:
        return factory(**kwargs)
    except TypeError as err:  # unexpected keyword: name the compressor, the bad option and the known ones
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # a factory without a signature: say what Python said
            raise ValueError(f"compressor {name!r}: {err}") from err
        known = [p for p, v in params.items() if v.kind in (v.KEYWORD_ONLY, v.POSITIONAL_OR_KEYWORD) and p != "self"]
        unknown = sorted(set(kwargs) - set(known))
        if not unknown or any(v.kind is v.VAR_KEYWORD for v in params.values()):
            raise ValueError(f"compressor {name!r}: {err}") from err
        raise ValueError(
            f"compressor {name!r}: no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(known) or 'none'}."
        ) from err
