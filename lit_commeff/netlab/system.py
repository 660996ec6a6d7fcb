"""Host checks and the ``ip``/``tc`` command runner every netlab module uses."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Availability",
    "NetLabError",
    "NetLabUnavailable",
    "available",
    "list_namespaces",
    "require_root",
    "require_tools",
    "run_cmd",
]

ROOT_MESSAGE = "netlab needs root (CAP_NET_ADMIN) to create network namespaces; run as root or skip B3"


class NetLabError(RuntimeError):
    """A command that builds or shapes the lab failed."""


class NetLabUnavailable(NetLabError):
    """This host cannot run netlab (not root, iproute2 missing, namespaces refused)."""


def require_root() -> None:
    """Raise unless the process runs as root.

    Raises:
        NetLabUnavailable: With the message ``netlab needs root (CAP_NET_ADMIN) ...``.
    """
    if os.geteuid() != 0:
        raise NetLabUnavailable(ROOT_MESSAGE)


def require_tools() -> None:
    """Raise unless ``ip`` and ``tc`` are on ``PATH``.

    Raises:
        NetLabUnavailable: Naming the missing command and the Debian package that provides it.
    """
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetLabUnavailable(
                f"netlab needs the `{tool}` command, which is not on PATH: install the iproute2 package "
                "(Debian/Ubuntu: apt-get install iproute2)"
            )


def run_cmd(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a short system command (``ip``, ``tc``) and capture its output.

    Args:
        argv: The command and its arguments.
        check: Raise :class:`NetLabError` on a non-zero exit status.
        timeout: Seconds before the command is abandoned.

    Returns:
        The completed process, with ``stdout``/``stderr`` as text.

    Raises:
        NetLabError: When ``check`` is set and the command fails, quoting the command and its stderr.
    """
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise NetLabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    return proc


def list_namespaces() -> list[str]:
    """Names of the network namespaces ``ip netns`` knows about."""
    proc = run_cmd(["ip", "netns", "list"], check=False)
    # Lines read "name" or "name (id: 3)".
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


@dataclass(frozen=True)
class Availability:
    """Whether netlab can run here; truthy when it can.

    Attributes:
        ok: True when namespaces can be created.
        reason: Why not (empty when ``ok``).
    """

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


_AVAILABILITY: Availability | None = None


def available(*, refresh: bool = False) -> Availability:
    """Check root, iproute2 and that a namespace can really be created (cached per process).

    Args:
        refresh: Re-run the checks instead of returning the cached answer.

    Returns:
        An :class:`Availability`; ``reason`` says what is missing and how to fix it.
    """
    global _AVAILABILITY
    if _AVAILABILITY is not None and not refresh:
        return _AVAILABILITY
    try:
        require_root()
        require_tools()
    except NetLabUnavailable as exc:
        _AVAILABILITY = Availability(False, str(exc))
        return _AVAILABILITY
    name = f"lcprobe{os.getpid()}_chk"
    proc = run_cmd(["ip", "netns", "add", name], check=False)
    if proc.returncode != 0:
        _AVAILABILITY = Availability(
            False,
            f"`ip netns add` failed: {proc.stderr.strip()}; netlab needs network namespaces "
            "(a kernel with CONFIG_NET_NS and a writable /run/netns)",
        )
    else:
        run_cmd(["ip", "netns", "del", name], check=False)
        _AVAILABILITY = Availability(True)
    return _AVAILABILITY
