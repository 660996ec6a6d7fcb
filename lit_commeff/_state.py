"""State that exists only at some times or on some processes, read where it must exist."""

from __future__ import annotations

from typing import TypeVar

_T = TypeVar("_T")


def need(value: _T | None, what: str, *, owner: str, hint: str) -> _T:
    """Return ``value``, which the caller's schedule guarantees is set; raise a clear error if it is not.

    Hub-only tensors, memories kept only under some option, and what a strategy builds in ``setup()`` are
    ``None`` elsewhere and before; this narrows them for the type checker and names the broken assumption.

    Args:
        value: The attribute's current value.
        what: Its name, for the message.
        owner: Who reads it (a method or strategy name), for the message.
        hint: When or where it exists, for the message.

    Raises:
        RuntimeError: ``value`` is ``None``.
    """
    if value is None:
        raise RuntimeError(f"{owner}: {what} is used before it exists ({hint}).")
    return value
