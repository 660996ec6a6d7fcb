"""Link shaping: ``tc`` commands for the kernel backend, router parameters for the TUN backend.

Rate limits use ``tbf``. Its two sizes follow from the rate :math:`R` (bytes/s) and the profile's RTT:

* ``burst = max(2 * (MTU + 14), R * 4 ms)``: at least two full Ethernet frames, so a packet is never
  larger than the bucket, and four milliseconds of traffic so the qdisc does not need a timer per
  packet at high rates (``R / HZ`` for ``HZ = 250``).
* ``limit = burst + R * max(50 ms, RTT)``: about one bandwidth-delay product of queue (the usual
  rule for a single TCP flow to keep the link busy), but at least 50 ms, and bounded so the queue
  cannot grow without limit. The userspace router uses the same ``limit`` for its per-direction queue.

Delay, jitter and loss use ``netem`` when the kernel has it (:func:`netem_available` probes once per
process on a throwaway veth); otherwise :mod:`lit_commeff.netlab.tunrouter` applies them in userspace.
"""

from __future__ import annotations

import fcntl
import math
import os
import struct

from lit_commeff.netlab.profiles import LinkProfile
from lit_commeff.netlab.system import NetLabError, run_cmd

__all__ = [
    "burst_bytes",
    "kernel_shaping_commands",
    "netem_available",
    "open_tun",
    "qdisc_available",
    "queue_limit_bytes",
    "router_direction",
    "tun_available",
]

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
ETH_OVERHEAD = 14  # Ethernet header tbf counts on a veth


def _rate_bytes(rate_mbit: float) -> float:
    return rate_mbit * 1e6 / 8


def burst_bytes(rate_mbit: float, mtu: int = 1500) -> int:
    """Token-bucket depth for ``rate_mbit``: ``max(2 * (mtu + 14), rate * 4 ms)`` bytes."""
    return max(2 * (mtu + ETH_OVERHEAD), math.ceil(_rate_bytes(rate_mbit) * 0.004))


def queue_limit_bytes(rate_mbit: float, rtt_ms: float, mtu: int = 1500) -> int:
    """Queue bound for ``rate_mbit``: ``burst + rate * max(50 ms, rtt)`` bytes (about one BDP)."""
    return burst_bytes(rate_mbit, mtu) + math.ceil(_rate_bytes(rate_mbit) * max(0.05, rtt_ms / 1000))


def _tbf_args(rate_mbit: float, rtt_ms: float, mtu: int) -> list[str]:
    return [
        "tbf",
        "rate",
        f"{round(rate_mbit * 1e6)}bit",
        "burst",
        str(burst_bytes(rate_mbit, mtu)),
        "limit",
        str(queue_limit_bytes(rate_mbit, rtt_ms, mtu)),
    ]


def kernel_shaping_commands(
    namespace: str,
    device: str,
    rate_mbit: float | None,
    profile: LinkProfile,
    *,
    use_netem: bool,
    jitter: str = "uniform",
    mtu: int = 1500,
) -> list[list[str]]:
    """``tc`` commands that shape the egress of ``device`` in ``namespace`` for one direction.

    With netem: ``netem`` at the root (delay ``rtt/2`` ± ``jitter/2``, loss) and ``tbf`` as its child;
    without: ``tbf`` alone (the profile must then have no delay, jitter or loss).

    Args:
        namespace: Network namespace holding ``device``.
        device: Interface whose egress is shaped.
        rate_mbit: Direction's rate in Mbit/s, or ``None`` for unlimited.
        profile: The link profile (delay, jitter, loss).
        use_netem: Whether to emit netem for the impairment.
        jitter: ``"uniform"`` or ``"normal"`` delay distribution.
        mtu: Interface MTU, for the tbf burst.

    Returns:
        Argument lists for :func:`~lit_commeff.netlab.system.run_cmd`, in order.

    Raises:
        NetLabError: If the profile needs impairment but ``use_netem`` is false.
    """
    tc = ["tc", "-n", namespace, "qdisc", "add", "dev", device]
    if profile.has_impairment and not use_netem:
        raise NetLabError(
            f"profile {profile.name!r} needs delay/jitter/loss but netem is unavailable: use backend='tun' "
            "(the userspace impairment router) or load the sch_netem kernel module"
        )
    commands: list[list[str]] = []
    if profile.has_impairment:
        netem = ["netem"]
        # Packets in flight inside netem: enough for the delay at this rate, at least netem's default.
        in_flight_s = (profile.rtt_ms / 2 + profile.jitter_ms / 2) / 1000 + 0.05
        rate = _rate_bytes(rate_mbit) if rate_mbit is not None else _rate_bytes(10_000)
        netem += ["limit", str(max(1000, math.ceil(rate * in_flight_s / mtu) * 2))]
        netem += ["delay", f"{profile.rtt_ms / 2:g}ms"]
        if profile.jitter_ms:
            netem += [f"{profile.jitter_ms / 2:g}ms"]
            if jitter == "normal":
                netem += ["distribution", "normal"]
        if profile.loss_pct:
            netem += ["loss", f"{profile.loss_pct:g}%"]
        commands.append([*tc, "root", "handle", "1:", *netem])
        if rate_mbit is not None:
            commands.append([*tc, "parent", "1:1", "handle", "10:", *_tbf_args(rate_mbit, profile.rtt_ms, mtu)])
    elif rate_mbit is not None:
        commands.append([*tc, "root", "handle", "1:", *_tbf_args(rate_mbit, profile.rtt_ms, mtu)])
    return commands


def router_direction(rate_mbit: float | None, profile: LinkProfile, *, mtu: int = 1500) -> dict[str, float]:
    """Parameters of one direction of a worker's link for the userspace router.

    Returns:
        ``rate_Bps`` (0 = unlimited), ``delay_s`` (one-way), ``jitter_s`` (half-spread of the one-way
        delay), ``loss`` (probability) and ``limit_bytes`` (queue bound, 0 = none).
    """
    return {
        "rate_Bps": _rate_bytes(rate_mbit) if rate_mbit is not None else 0.0,
        "delay_s": profile.rtt_ms / 2 / 1000,
        "jitter_s": profile.jitter_ms / 2 / 1000,
        "loss": profile.loss_pct / 100,
        "limit_bytes": float(queue_limit_bytes(rate_mbit, profile.rtt_ms, mtu)) if rate_mbit is not None else 0.0,
    }


UNSHAPED_DIRECTION = {"rate_Bps": 0.0, "delay_s": 0.0, "jitter_s": 0.0, "loss": 0.0, "limit_bytes": 0.0}


def open_tun(name: str) -> int:
    """Create a TUN interface (``IFF_TUN | IFF_NO_PI``) in this process's namespace.

    The interface lives as long as the returned descriptor (or a copy of it) stays open; moving it to
    another namespace keeps the descriptor valid.

    Args:
        name: Interface name (at most 15 characters, unique in the current namespace).

    Returns:
        A non-blocking file descriptor that reads and writes raw IP packets.

    Raises:
        NetLabError: When ``/dev/net/tun`` is missing or the ioctl is refused.
    """
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NetLabError(
            f"cannot open /dev/net/tun ({exc.strerror}): load the tun module (modprobe tun) or use backend='kernel'"
        ) from exc
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise NetLabError(f"TUNSETIFF for interface {name!r} failed: {exc.strerror}") from exc
    return fd


_QDISC_CACHE: dict[str, bool] = {}
_TUN_CACHE: list[bool] = []


def qdisc_available(kind: str) -> bool:
    """Whether this kernel accepts qdisc ``kind`` (probed once per process on a throwaway veth).

    Args:
        kind: ``"netem"``, ``"tbf"``, ...

    Returns:
        True when ``tc qdisc add ... <kind>`` succeeds.
    """
    if kind in _QDISC_CACHE:
        return _QDISC_CACHE[kind]
    namespace = f"lcprobe{os.getpid()}_q"
    args = {"netem": ["netem", "delay", "1ms"], "tbf": _tbf_args(10, 0, 1500)}.get(kind, [kind])
    run_cmd(["ip", "netns", "add", namespace])
    try:
        run_cmd(["ip", "-n", namespace, "link", "add", "qa", "type", "veth", "peer", "name", "qb"])
        proc = run_cmd(["tc", "-n", namespace, "qdisc", "add", "dev", "qa", "root", *args], check=False)
        _QDISC_CACHE[kind] = proc.returncode == 0
    finally:
        run_cmd(["ip", "netns", "del", namespace], check=False)
    return _QDISC_CACHE[kind]


def netem_available() -> bool:
    """Whether the kernel has ``sch_netem`` (probed once per process)."""
    return qdisc_available("netem")


def tun_available() -> bool:
    """Whether TUN interfaces can be created here (probed once per process)."""
    if not _TUN_CACHE:
        try:
            os.close(open_tun(f"lcprobe{os.getpid() % 100000}"))
            _TUN_CACHE.append(True)
        except NetLabError:
            _TUN_CACHE.append(False)
    return _TUN_CACHE[0]
