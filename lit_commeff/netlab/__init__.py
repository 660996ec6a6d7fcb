"""netlab: real network namespaces with shaped links, for benchmark B3 and reliability tests.

Each rank of a job runs in its own Linux network namespace; each worker's link (rank >= 1) gets the
rate, delay, jitter and loss of a :class:`LinkProfile` while the hub (rank 0) stays unshaped. Rates
use ``tc tbf``; delay/jitter/loss use ``netem`` where the kernel has it and a userspace TUN router
(:mod:`lit_commeff.netlab.tunrouter`) where it does not. Needs root and iproute2.

Example::

    from lit_commeff.netlab import NetLab

    with NetLab(world_size=2, profile="edge") as lab:
        procs = [lab.popen(r, ["python", "train.py"], env=lab.dist_env(r)) for r in range(2)]
        codes = [p.wait() for p in procs]

Command line: ``python -m lit_commeff.netlab check | measure | run | cleanup``.
"""

from lit_commeff.netlab.namespaces import IFNAME, NetLab, cleanup_stale
from lit_commeff.netlab.profiles import BUILTIN_PROFILES, LinkProfile, parse_profile
from lit_commeff.netlab.shaping import burst_bytes, netem_available, queue_limit_bytes, tun_available
from lit_commeff.netlab.system import (
    Availability,
    NetLabError,
    NetLabUnavailable,
    available,
    require_root,
    require_tools,
)

__all__ = [
    "BUILTIN_PROFILES",
    "IFNAME",
    "Availability",
    "LinkProfile",
    "NetLab",
    "NetLabError",
    "NetLabUnavailable",
    "available",
    "burst_bytes",
    "cleanup_stale",
    "netem_available",
    "parse_profile",
    "queue_limit_bytes",
    "require_root",
    "require_tools",
    "tun_available",
]
