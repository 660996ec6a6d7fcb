"""Link profiles: the rate, delay, jitter and loss of one worker's access link.

A profile shapes each *worker's* link (rank >= 1). ``up`` is the worker's egress (worker -> hub),
``down`` its ingress (hub -> worker). The hub (rank 0) sits on an unshaped data-centre link, so the
worker's link carries the whole round trip: each direction gets a one-way delay of ``rtt_ms / 2``.

``jitter_ms`` is the spread of the round trip: each direction's one-way delay varies by up to
``jitter_ms / 2`` (uniformly by default; with ``NetLab(jitter="normal")`` ``jitter_ms / 2`` is the
standard deviation), as ``tc netem delay D J`` does per direction. ``loss_pct`` is the per-packet drop
probability applied independently in each direction, as ``tc netem loss`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["BUILTIN_PROFILES", "LinkProfile", "parse_profile"]


@dataclass(frozen=True)
class LinkProfile:
    """The shape of one worker's access link.

    Attributes:
        name: Label used in logs and tables.
        up_mbit: Worker egress rate (worker -> hub) in Mbit/s; ``None`` leaves it unlimited.
        down_mbit: Worker ingress rate (hub -> worker) in Mbit/s; ``None`` leaves it unlimited.
        rtt_ms: Round-trip time the link adds, in milliseconds (split evenly over both directions).
        jitter_ms: Round-trip delay spread in milliseconds (each direction varies by ``jitter_ms / 2``).
        loss_pct: Per-packet loss probability in percent, applied in each direction.
    """

    name: str
    up_mbit: float | None
    down_mbit: float | None
    rtt_ms: float
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"LinkProfile.name={self.name!r} is invalid: give a non-empty label, e.g. name='edge'")
        for field, example in (("up_mbit", 10), ("down_mbit", 100)):
            value = getattr(self, field)
            if value is None:
                continue
            if not _is_number(value) or not value > 0 or not math.isfinite(value):
                raise ValueError(
                    f"LinkProfile.{field}={value!r} is invalid: give a positive, finite rate in Mbit/s "
                    f"(e.g. {field}={example}) or None for an unlimited direction"
                )
        for field, example in (("rtt_ms", 20), ("jitter_ms", 5)):
            value = getattr(self, field)
            if not _is_number(value) or not value >= 0 or not math.isfinite(value):
                raise ValueError(
                    f"LinkProfile.{field}={value!r} is invalid: give a finite number of milliseconds >= 0 "
                    f"(e.g. {field}={example})"
                )
        if not _is_number(self.loss_pct) or not 0 <= self.loss_pct < 100:
            raise ValueError(
                f"LinkProfile.loss_pct={self.loss_pct!r} is invalid: give a percentage in [0, 100), e.g. loss_pct=2"
            )

    @property
    def one_way_delay_ms(self) -> float:
        """Delay each direction of the worker's link adds (half the round trip)."""
        return self.rtt_ms / 2

    @property
    def has_impairment(self) -> bool:
        """Whether the profile needs delay, jitter or loss (``netem`` or the userspace router)."""
        return self.rtt_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0

    def describe(self) -> str:
        """One line such as ``edge: up 10 Mbit/s, down 100 Mbit/s, RTT 20 ms``."""

        def rate(value: float | None) -> str:
            return "unlimited" if value is None else f"{value:g} Mbit/s"

        text = f"{self.name}: up {rate(self.up_mbit)}, down {rate(self.down_mbit)}, RTT {self.rtt_ms:g} ms"
        if self.jitter_ms:
            text += f" ± {self.jitter_ms / 2:g} ms"
        if self.loss_pct:
            text += f", loss {self.loss_pct:g}%"
        return text


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


BUILTIN_PROFILES: dict[str, LinkProfile] = {
    # Cellular / branch office: slow uplink, faster downlink.
    "edge": LinkProfile("edge", up_mbit=10, down_mbit=100, rtt_ms=20),
    "wan": LinkProfile("wan", up_mbit=100, down_mbit=100, rtt_ms=40),
    "lan": LinkProfile("lan", up_mbit=1000, down_mbit=1000, rtt_ms=0),
}

# Accepted keys in a custom profile string, mapped to the LinkProfile field they set.
_KEYS = {"up": "up_mbit", "down": "down_mbit", "rtt": "rtt_ms", "jitter": "jitter_ms", "loss": "loss_pct"}
_SUFFIXES = ("mbit/s", "mbit", "ms", "%")


def parse_profile(text: str | LinkProfile) -> LinkProfile:
    """Parse a profile name or a ``key=value`` list into a :class:`LinkProfile`.

    Accepted forms: a built-in name (``"edge"``, ``"wan"``, ``"lan"``); a custom list such as
    ``"up=10,down=100,rtt=20,jitter=5,loss=2"`` (keys ``up``/``down`` in Mbit/s, ``rtt``/``jitter`` in
    ms, ``loss`` in percent, ``name`` for a label; an omitted rate or ``none`` means unlimited); or a
    built-in name followed by overrides, e.g. ``"edge,loss=1"``.

    Args:
        text: The profile text, or a :class:`LinkProfile` (returned unchanged).

    Returns:
        The parsed profile.

    Raises:
        ValueError: For an unknown name or key, a malformed entry or an invalid value.
    """
    if isinstance(text, LinkProfile):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"link profile {text!r} is invalid: give a built-in name ({', '.join(BUILTIN_PROFILES)}) "
            "or a key=value list, e.g. 'up=10,down=100,rtt=20'"
        )
    items = [part.strip() for part in text.split(",") if part.strip()]
    values: dict[str, object] = {"name": text.strip(), "up_mbit": None, "down_mbit": None, "rtt_ms": 0.0}
    if "=" not in items[0]:
        base = BUILTIN_PROFILES.get(items[0].lower())
        if base is None:
            raise ValueError(
                f"link profile {items[0]!r} is unknown: use one of {', '.join(BUILTIN_PROFILES)} "
                "or a key=value list, e.g. 'up=10,down=100,rtt=20'"
            )
        values = {f: getattr(base, f) for f in ("name", "up_mbit", "down_mbit", "rtt_ms", "jitter_ms", "loss_pct")}
        items = items[1:]
        if items:
            values["name"] = f"{base.name}+{','.join(items)}"
    for item in items:
        key, sep, raw = item.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not sep or not key:
            raise ValueError(f"link profile entry {item!r} in {text!r} is malformed: write key=value, e.g. 'rtt=20'")
        if key == "name":
            values["name"] = raw
            continue
        if key not in _KEYS:
            raise ValueError(
                f"link profile key {key!r} in {text!r} is unknown: use {', '.join(_KEYS)} or name "
                "(e.g. 'up=10,down=100,rtt=20,jitter=5,loss=2')"
            )
        values[_KEYS[key]] = _parse_number(key, raw, text)
    return LinkProfile(**values)  # type: ignore[arg-type]


def _parse_number(key: str, raw: str, text: str) -> float | None:
    lowered = raw.lower()
    if lowered in ("none", "inf", "unlimited") and key in ("up", "down"):
        return None
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix):
            lowered = lowered[: -len(suffix)].strip()
            break
    try:
        return float(lowered)
    except ValueError:
        raise ValueError(f"link profile value {key}={raw!r} in {text!r} is not a number: write e.g. {key}=10") from None
