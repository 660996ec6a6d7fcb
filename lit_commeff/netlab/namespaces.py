"""``NetLab``: one network namespace per rank, joined by a shaped link, torn down on every exit path.

Topology. Rank ``r`` runs in namespace ``<prefix>_r<r>`` on interface ``netlab0`` with address
``10.213.<n>.<r+1>/24`` (``n`` picked so the subnet is not routed on the host). Two backends join them:

* ``kernel``: a veth pair per rank into a bridge namespace ``<prefix>_br``; ``tbf`` on the worker-side
  veth shapes the uplink, ``tbf`` on the bridge-side veth the downlink, and ``netem`` adds delay,
  jitter and loss where the kernel has it.
* ``tun``: a TUN interface per rank, created in this process and moved into the rank's namespace;
  :mod:`lit_commeff.netlab.tunrouter` (a separate process holding the TUN descriptors) forwards packets
  between them with the delay, jitter, loss and rates applied in userspace.

``backend="auto"`` picks ``kernel`` unless the profile needs delay/jitter/loss and netem is missing.

Teardown (:meth:`NetLab.teardown`, idempotent) runs on normal exit, on an exception inside ``with``,
on SIGINT/SIGTERM (handlers installed while the lab is up, restored afterwards, then the signal is
re-raised for the previous handler) and at interpreter exit. It kills the processes started in the
namespaces, stops the router and deletes the namespaces, which removes their interfaces.

Each lab records itself in ``/run/lit_commeff-netlab/<prefix>.json`` so :func:`cleanup_stale` can
remove what a killed process (SIGKILL, power loss) left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import ipaddress
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lit_commeff.netlab.profiles import LinkProfile, parse_profile
from lit_commeff.netlab.shaping import (
    UNSHAPED_DIRECTION,
    kernel_shaping_commands,
    netem_available,
    open_tun,
    router_direction,
)
from lit_commeff.netlab.system import (
    NetLabError,
    list_namespaces,
    require_root,
    require_tools,
    run_cmd,
)

__all__ = ["IFNAME", "REGISTRY_DIR", "NetLab", "cleanup_stale"]

IFNAME = "netlab0"  # the rank's interface inside its namespace (GLOO_SOCKET_IFNAME)
REGISTRY_DIR = Path("/run/lit_commeff-netlab")
NETNS_ETC = Path("/etc/netns")  # per-namespace /etc overrides that `ip netns exec` bind-mounts
ROUTER_SCRIPT = Path(__file__).with_name("tunrouter.py")
BACKENDS = ("auto", "kernel", "tun")
JITTER_DISTRIBUTIONS = ("uniform", "normal")
UNSHAPED = LinkProfile("unshaped", None, None, 0.0)
_NAMESPACE_RE = re.compile(r"^(?P<lab>[A-Za-z0-9]+)_(?:r\d+|br)$")
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
_CONGESTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
_CONGESTION_SYSCTL = Path("/proc/sys/net/ipv4")


class NetLab:
    """Network namespaces for a ``world_size``-rank job, with each worker's link shaped by a profile.

    Use it as a context manager::

        with NetLab(2, "edge") as lab:
            proc = lab.popen(1, [sys.executable, "worker.py"], env=lab.dist_env(1))

    Args:
        world_size: Number of ranks (1 to 250); rank 0 is the hub.
        profile: The workers' (ranks >= 1) link: a :class:`LinkProfile`, a profile string for
            :func:`~lit_commeff.netlab.profiles.parse_profile`, or ``None`` for unshaped links.
        hub_profile: The hub's (rank 0) own link, in the same forms; ``None`` (default) leaves it unshaped.
            A real aggregator has a link of its own, e.g. ``"up=1000,down=1000,name=hub1g"``: every byte the
            hub sends to or receives from the workers then shares that link's rate.
        backend: ``"auto"``, ``"kernel"`` (veth + bridge + tc) or ``"tun"`` (userspace router).
        prefix: Namespace name prefix (lowercase letters/digits, at most 10); default
            ``lc<pid % 10000><letters>``, chosen so parallel labs never collide.
        mtu: MTU of every interface.
        jitter: Delay distribution for jitter: ``"uniform"`` or ``"normal"``.
        seed: Seed for the router's loss and jitter draws (``None``: random).
        congestion_control: The TCP congestion control every rank's namespace uses (e.g. ``"cubic"``, Linux's
            default, or ``"bbr"``); ``None`` keeps what a new namespace inherits from the host. It decides what a
            message of tens of KB costs after an idle gap: on ``wan`` a 56 KB exchange each way took 72 ms under
            ``bbr`` and 51 ms under ``cubic`` (session 26, ``benchmarks/b3_collectives.py``). A name the kernel has
            but namespaces may not pick is added to the host's
            ``net.ipv4.tcp_allowed_congestion_control`` (the host's own default is left alone).
            :attr:`congestion_control_in_use` reports what the ranks run once the lab is up.

    Raises:
        ValueError: For an invalid ``world_size``, ``backend``, ``prefix``, ``mtu``, ``jitter`` or
            ``congestion_control``.
    """

    def __init__(
        self,
        world_size: int,
        profile: LinkProfile | str | None = None,
        *,
        hub_profile: LinkProfile | str | None = None,
        backend: str = "auto",
        prefix: str | None = None,
        mtu: int = 1500,
        jitter: str = "uniform",
        seed: int | None = None,
        congestion_control: str | None = None,
    ) -> None:
        if not isinstance(world_size, int) or not 1 <= world_size <= 250:
            raise ValueError(f"NetLab world_size={world_size!r} is invalid: give an integer from 1 to 250")
        if backend not in BACKENDS:
            raise ValueError(f"NetLab backend={backend!r} is invalid: use one of {', '.join(BACKENDS)}")
        if prefix is not None and not _PREFIX_RE.match(prefix):
            raise ValueError(
                f"NetLab prefix={prefix!r} is invalid: use 1-10 lowercase letters/digits starting with a letter, "
                "e.g. prefix='bench1'"
            )
        if not isinstance(mtu, int) or not 576 <= mtu <= 65535:
            raise ValueError(f"NetLab mtu={mtu!r} is invalid: give an integer from 576 to 65535, e.g. mtu=1500")
        if jitter not in JITTER_DISTRIBUTIONS:
            raise ValueError(f"NetLab jitter={jitter!r} is invalid: use one of {', '.join(JITTER_DISTRIBUTIONS)}")
        if congestion_control is not None and not (
            isinstance(congestion_control, str) and _CONGESTION_RE.match(congestion_control)
        ):
            raise ValueError(
                f"NetLab congestion_control={congestion_control!r} is invalid: give a kernel algorithm's name, "
                "e.g. congestion_control='cubic', or None to keep the host's"
            )
        self.world_size = world_size
        self.profile = _profile("profile", profile)
        self.hub_profile = _profile("hub_profile", hub_profile)
        self.requested_backend = backend
        self.mtu = mtu
        self.jitter = jitter
        self.seed = seed
        self.congestion_control = congestion_control
        #: What the ranks' TCP runs, read back from rank 0's namespace at setup.
        self.congestion_control_in_use: str | None = None
        self._requested_prefix = prefix
        self.prefix: str | None = None
        self.backend: str | None = None  # resolved at setup
        self.subnet: ipaddress.IPv4Network | None = None
        self._namespaces: list[str] = []  # created (or being created), in order
        self._procs: list[subprocess.Popen[Any]] = []
        self._router: subprocess.Popen[bytes] | None = None
        self._registry: Path | None = None
        self._prev_handlers: dict[int, Any] = {}
        self._atexit_registered = False
        self._active = False
        self._tearing_down = False
        self._deferred_signal: int | None = None
        self.router_final_stats: dict[str, int] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> NetLab:
        return self.setup()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.teardown()

    def __repr__(self) -> str:
        return (
            f"NetLab(world_size={self.world_size}, profile={self.profile.name!r}, "
            f"hub_profile={self.hub_profile.name!r}, backend={self.backend!r}, "
            f"prefix={self.prefix!r}, congestion_control={self.congestion_control_in_use!r}, active={self._active})"
        )

    def setup(self) -> NetLab:
        """Create the namespaces, links and shaping; called by ``__enter__``.

        Returns:
            ``self``.

        Raises:
            NetLabUnavailable: When not root or iproute2 is missing.
            NetLabError: When a command fails (everything created so far is torn down first).
        """
        if self._active:
            raise NetLabError(f"{self!r} is already set up: call teardown() before setup() again")
        require_root()
        require_tools()
        self.backend = self._resolve_backend()
        self._active = True
        self._install_handlers()
        try:
            self.prefix = self._claim_prefix()
            self.subnet = _pick_subnet(zlib.crc32(self.prefix.encode()))
            for rank in range(self.world_size):
                self._add_namespace(self.namespace(rank))
            self._set_congestion_control()
            if self.backend == "kernel":
                self._build_kernel()
            else:
                self._build_tun()
            self._write_hosts()
            self._write_registry()
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self) -> None:
        """Kill started processes, stop the router, delete the namespaces; safe to call repeatedly."""
        if not self._active or self._tearing_down:
            return
        self._tearing_down = True
        try:
            self._stop_processes()
            self._stop_router()
            for name in reversed(self._namespaces):
                run_cmd(["ip", "netns", "del", name], check=False)
                _remove_hosts(name)
            self._namespaces.clear()
            if self._registry is not None:
                with contextlib.suppress(OSError):
                    self._registry.unlink()
                self._registry = None
        finally:
            self._active = False
            self._tearing_down = False
            self._restore_handlers()
            deferred, self._deferred_signal = self._deferred_signal, None
            if deferred is not None:
                signal.raise_signal(deferred)  # delivered to the handler we just restored

    @property
    def active(self) -> bool:
        """Whether the lab is set up and not yet torn down."""
        return self._active

    # ------------------------------------------------------------------ addressing and processes

    def link_profile(self, rank: int) -> LinkProfile:
        """The profile shaping ``rank``'s link: :attr:`hub_profile` for rank 0, :attr:`profile` for the workers."""
        self._check_rank(rank)
        return self.hub_profile if rank == 0 else self.profile

    def namespace(self, rank: int) -> str:
        """Name of rank ``rank``'s network namespace."""
        self._check_rank(rank)
        if self.prefix is None:
            raise NetLabError("the lab is not set up: use `with NetLab(...) as lab:` or call setup() first")
        return f"{self.prefix}_r{rank}"

    @property
    def bridge_namespace(self) -> str:
        """Name of the bridge namespace (kernel backend)."""
        if self.prefix is None:
            raise NetLabError("the lab is not set up: use `with NetLab(...) as lab:` or call setup() first")
        return f"{self.prefix}_br"

    @property
    def namespaces(self) -> list[str]:
        """Names of all namespaces this lab created."""
        return list(self._namespaces)

    @property
    def ifname(self) -> str:
        """Interface name every rank uses inside its namespace."""
        return IFNAME

    def address(self, rank: int) -> str:
        """IPv4 address of rank ``rank`` (on :attr:`ifname` in its namespace)."""
        self._check_rank(rank)
        if self.subnet is None:
            raise NetLabError("the lab is not set up: use `with NetLab(...) as lab:` or call setup() first")
        return str(self.subnet.network_address + rank + 1)

    def exec_argv(self, rank: int, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside rank ``rank``'s namespace (``ip netns exec <ns> ...``)."""
        return ["ip", "netns", "exec", self.namespace(rank), *argv]

    def popen(
        self, rank: int, argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in rank ``rank``'s namespace; teardown kills it if it is still running.

        Args:
            rank: Rank whose namespace runs the command.
            argv: Command and arguments.
            env: Extra environment variables, merged over the current environment.
            **kwargs: Passed to :class:`subprocess.Popen` (``stdout``, ``text``, ``cwd``, ...).

        Returns:
            The process (``ip netns exec`` execs the command, so its pid is the command's).
        """
        if not self._active:
            raise NetLabError("the lab is not set up: use `with NetLab(...) as lab:` or call setup() first")
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(self.exec_argv(rank, argv), env=full_env, **kwargs)
        self._procs.append(proc)
        return proc

    def run(
        self, rank: int, argv: Sequence[str], *, timeout: float = 60.0, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in rank ``rank``'s namespace to completion, capturing text output.

        Raises:
            subprocess.TimeoutExpired: After ``timeout`` seconds (the process is killed).
        """
        proc = self.popen(rank, argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def dist_env(self, rank: int, master_port: int = 29500) -> dict[str, str]:
        """Environment for a ``torch.distributed`` ``env://`` rank inside the lab.

        All ranks share this host's devices, so ``LOCAL_RANK`` equals ``RANK`` (one process per device
        on a multi-GPU host) and ``NODE_RANK`` is 0.
        """
        return {
            "MASTER_ADDR": self.address(0),
            "MASTER_PORT": str(master_port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "NODE_RANK": "0",
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.world_size),
            "GLOO_SOCKET_IFNAME": IFNAME,
        }

    def set_link(self, rank: int, up: bool) -> None:
        """Take rank ``rank``'s interface down (``up=False``) or bring it back (``up=True``)."""
        run_cmd(["ip", "-n", self.namespace(rank), "link", "set", IFNAME, "up" if up else "down"])

    # ------------------------------------------------------------------ router introspection

    @property
    def router_pid(self) -> int | None:
        """Pid of the userspace router (tun backend), ``None`` otherwise."""
        return self._router.pid if self._router is not None else None

    def router_stats(self, timeout: float = 5.0) -> dict[str, int]:
        """Counters of the running router: forwarded packets and drops by cause.

        Raises:
            NetLabError: Without a running router, or when it does not answer within ``timeout``.
        """
        router = self._router
        if router is None or router.poll() is not None or router.stdin is None or router.stdout is None:
            raise NetLabError("no userspace router is running (backend is not 'tun' or the lab is down)")
        router.stdin.write(b"stats\n")
        router.stdin.flush()
        if not select.select([router.stdout], [], [], timeout)[0]:
            raise NetLabError(f"the userspace router did not answer 'stats' within {timeout} s")
        return json.loads(router.stdout.readline())

    def router_cpu_seconds(self) -> float:
        """User + system CPU seconds the router has used so far (0 without a router)."""
        if self._router is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._router.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    # ------------------------------------------------------------------ construction

    def _resolve_backend(self) -> str:
        impaired = [p.name for p in (self.hub_profile, self.profile) if p.has_impairment]
        if self.requested_backend == "tun":
            return "tun"
        if self.requested_backend == "kernel":
            if impaired and not netem_available():
                raise NetLabError(
                    f"backend='kernel' cannot apply the delay/jitter/loss of profile {impaired[0]!r}: "
                    "the kernel has no netem qdisc; use backend='tun' or 'auto' (userspace router)"
                )
            return "kernel"
        return "tun" if impaired and not netem_available() else "kernel"

    def _claim_prefix(self) -> str:
        existing = list_namespaces()
        if self._requested_prefix is not None:
            candidates = [self._requested_prefix]
        else:
            base = f"lc{os.getpid() % 10000}"
            candidates = [base + _letters(i) for i in range(26 * 27)]
        for prefix in candidates:
            if any(name.startswith(prefix + "_") for name in existing):
                continue
            if self._claim_registry(prefix):
                return prefix
        raise NetLabError(
            f"namespaces with prefix {candidates[0]!r} already exist: pick another prefix or run "
            f"`python -m lit_commeff.netlab cleanup --prefix {candidates[0]}`"
        )

    def _claim_registry(self, prefix: str) -> bool:
        """Create the registry entry atomically; False when another lab owns ``prefix``."""
        path = REGISTRY_DIR / f"{prefix}.json"
        try:
            REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
            if path.exists() and not _owner_alive(path):
                path.unlink()  # its namespaces are gone (the caller checked) and so is its owner
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError:
            return True  # no writable /run: parallel labs are still kept apart by the namespace check
        os.close(fd)
        self._registry = path
        self._write_registry()
        return True

    def _write_registry(self) -> None:
        if self._registry is None:
            return
        record = {"pid": os.getpid(), "namespaces": self._namespaces, "router_pid": self.router_pid}
        with contextlib.suppress(OSError):
            self._registry.write_text(json.dumps(record))

    def _set_congestion_control(self) -> None:
        """Give every rank's namespace :attr:`congestion_control` (or read back the inherited one)."""
        path = _CONGESTION_SYSCTL / "tcp_congestion_control"
        wanted = self.congestion_control
        if wanted is not None:
            available = (_CONGESTION_SYSCTL / "tcp_available_congestion_control").read_text().split()
            if wanted not in available:
                raise NetLabError(
                    f"congestion_control={wanted!r} is not in this kernel (available: {', '.join(available)}): "
                    f"load it (`modprobe tcp_{wanted}`) or pick an available one"
                )
            allowed_file = _CONGESTION_SYSCTL / "tcp_allowed_congestion_control"
            allowed = allowed_file.read_text().split()
            if wanted not in allowed:  # a namespace may only pick an allowed algorithm
                allowed_file.write_text(" ".join([*allowed, wanted]))
            for rank in range(self.world_size):  # /proc/sys/net is per namespace: write it from inside
                run_cmd(["ip", "netns", "exec", self.namespace(rank), "sh", "-c", f'echo {wanted} > "{path}"'])
        # What the ranks run (read from inside too); only a requested algorithm must read back.
        read = run_cmd(["ip", "netns", "exec", self.namespace(0), "cat", str(path)], check=wanted is not None)
        self.congestion_control_in_use = read.stdout.strip() or None
        if wanted is not None and self.congestion_control_in_use != wanted:
            raise NetLabError(
                f"congestion_control={wanted!r} did not take: rank 0's namespace runs "
                f"{self.congestion_control_in_use!r}; check net.ipv4.tcp_allowed_congestion_control"
            )

    def _add_namespace(self, name: str) -> None:
        self._namespaces.append(name)  # recorded first so an interrupt mid-command still cleans it up
        run_cmd(["ip", "netns", "add", name])
        run_cmd(["ip", "-n", name, "link", "set", "lo", "up"])

    def _write_hosts(self) -> None:
        """Give each rank an ``/etc/hosts`` (``ip netns exec`` mounts ``/etc/netns/<ns>/hosts``).

        Ranks resolve each other as ``rank<k>`` and this host's name as their own lab address, so
        libraries that look up the hostname or reverse-resolve peers never wait on an unreachable DNS.
        """
        hostname = socket.gethostname()
        for rank in range(self.world_size):
            lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
            lines += [
                f"{self.address(k)} rank{k}" + (f" {hostname}" if k == rank else "") for k in range(self.world_size)
            ]
            directory = NETNS_ETC / self.namespace(rank)
            with contextlib.suppress(OSError):
                directory.mkdir(parents=True, exist_ok=True)
                (directory / "hosts").write_text("\n".join(lines) + "\n")

    def _address_interface(self, rank: int) -> None:
        ns = self.namespace(rank)
        run_cmd(["ip", "-n", ns, "addr", "add", f"{self.address(rank)}/{self.subnet.prefixlen}", "dev", IFNAME])  # type: ignore[union-attr]
        run_cmd(["ip", "-n", ns, "link", "set", IFNAME, "up"])

    def _build_kernel(self) -> None:
        bridge = self.bridge_namespace
        self._add_namespace(bridge)
        run_cmd(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge", "forward_delay", "0"])
        run_cmd(["ip", "-n", bridge, "link", "set", "br0", "mtu", str(self.mtu), "up"])
        for rank in range(self.world_size):
            ns, port = self.namespace(rank), f"p{rank}"
            # Created directly inside the namespaces, so names never clash with the host's interfaces.
            mtu = str(self.mtu)
            peer = ["peer", "name", port, "netns", bridge, "mtu", mtu]
            run_cmd(["ip", "link", "add", IFNAME, "netns", ns, "mtu", mtu, "type", "veth", *peer])
            run_cmd(["ip", "-n", bridge, "link", "set", port, "master", "br0", "up"])
            self._address_interface(rank)
            link = self.link_profile(rank)
            if link is UNSHAPED:
                continue
            shape = functools.partial(
                kernel_shaping_commands, use_netem=link.has_impairment, jitter=self.jitter, mtu=self.mtu
            )
            up = shape(ns, IFNAME, link.up_mbit, link)
            down = shape(bridge, port, link.down_mbit, link)
            for command in up + down:
                run_cmd(command)

    def _build_tun(self) -> None:
        fds: list[int] = []
        try:
            links = []
            for rank in range(self.world_size):
                ns, tmp_name = self.namespace(rank), f"{self.prefix}t{rank}"
                fd = open_tun(tmp_name)
                fds.append(fd)
                run_cmd(["ip", "link", "set", tmp_name, "netns", ns])
                # No IPv6 link-local address: nothing but the job's IPv4 traffic reaches the router.
                rename = ["name", IFNAME, "mtu", str(self.mtu), "addrgenmode", "none"]
                run_cmd(["ip", "-n", ns, "link", "set", tmp_name, *rename])
                self._address_interface(rank)
                link = self.link_profile(rank)
                shaped = link is not UNSHAPED
                links.append(
                    {
                        "fd": fd,
                        "octet": rank + 1,
                        "up": router_direction(link.up_mbit, link, mtu=self.mtu) if shaped else UNSHAPED_DIRECTION,
                        "down": router_direction(link.down_mbit, link, mtu=self.mtu) if shaped else UNSHAPED_DIRECTION,
                    }
                )
            config = {
                "net": list(self.subnet.network_address.packed[:3]),  # type: ignore[union-attr]
                "jitter": self.jitter,
                "seed": self.seed,
                "links": links,
            }
            self._router = subprocess.Popen(
                [sys.executable, "-I", str(ROUTER_SCRIPT), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=fds,
                start_new_session=True,  # a terminal Ctrl-C must not stop it before teardown does
            )
            assert self._router.stdout is not None
            ready = select.select([self._router.stdout], [], [], 15.0)[0]
            line = self._router.stdout.readline() if ready else b""
            if line.strip() != b"READY":
                err = b""
                if self._router.poll() is not None and self._router.stderr is not None:
                    err = self._router.stderr.read()
                raise NetLabError(
                    f"the userspace router did not start (got {line!r}): {err.decode(errors='replace').strip()}"
                )
        finally:
            # The router holds its own copies; each TUN interface now lives exactly as long as the router.
            for fd in fds:
                os.close(fd)

    # ------------------------------------------------------------------ teardown helpers

    def _stop_processes(self) -> None:
        running = [p for p in self._procs if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.monotonic() + 3.0
        for proc in running:
            if not _reap(proc, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                _reap(proc, 5.0)
        self._procs.clear()
        # Anything the commands spawned that still sits in our namespaces.
        own = os.getpid()
        for name in self._namespaces:
            for pid in _namespace_pids(name):
                if pid != own:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def _stop_router(self) -> None:
        router, self._router = self._router, None
        if router is None:
            return
        if router.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                router.stdin.close()  # type: ignore[union-attr]
            if not _reap(router, 3.0):
                with contextlib.suppress(ProcessLookupError):
                    router.kill()
                _reap(router, 5.0)
        with contextlib.suppress(OSError, ValueError, json.JSONDecodeError):
            tail = router.stderr.read().decode().strip().splitlines()  # type: ignore[union-attr]
            if tail:
                self.router_final_stats = json.loads(tail[-1])
        for stream in (router.stdin, router.stdout, router.stderr):
            with contextlib.suppress(OSError, ValueError):
                if stream is not None:
                    stream.close()

    # ------------------------------------------------------------------ signals and atexit

    def _install_handlers(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.teardown)
            self._atexit_registered = True
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; atexit still covers exit
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) == signal.SIG_IGN:
                continue  # e.g. SIGINT in a background job or under nohup: the process chose to ignore it
            self._prev_handlers[signum] = signal.signal(signum, self._on_signal)

    def _restore_handlers(self) -> None:
        for signum, previous in self._prev_handlers.items():
            if signal.getsignal(signum) == self._on_signal:  # someone else's later handler stays
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._prev_handlers.clear()
        if self._atexit_registered:
            atexit.unregister(self.teardown)
            self._atexit_registered = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._tearing_down:
            self._deferred_signal = signum  # re-raised once teardown finishes
            return
        previous = self._prev_handlers.get(signum)
        self.teardown()
        if signal.getsignal(signum) == self._on_signal:  # a handler stacked above ours kept it installed
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        # The previous handler (KeyboardInterrupt, default termination, ...) now takes the signal.
        signal.raise_signal(signum)

    def _check_rank(self, rank: int) -> None:
        if not isinstance(rank, int) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank={rank!r} is out of range: this lab has ranks 0..{self.world_size - 1}")


def _profile(field: str, value: LinkProfile | str | None) -> LinkProfile:
    if value is None:
        return UNSHAPED
    try:
        return parse_profile(value)
    except ValueError as exc:
        raise ValueError(f"NetLab {field}={value!r} is invalid: {exc}") from None


def _reap(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``proc`` to exit, without ``Popen.wait``.

    Teardown may run in a signal handler that interrupted a ``Popen.wait`` on the same process. That
    wait holds the Popen's lock, so a second ``wait`` from the handler would block forever. ``waitpid``
    with WNOHANG needs no lock.
    """
    deadline = time.monotonic() + timeout
    while proc.returncode is None:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:  # already reaped elsewhere
            return True
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _letters(i: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa', ...: keeps generated prefixes short."""
    if i < 26:
        return chr(97 + i)
    return chr(97 + i // 26 - 1) + chr(97 + i % 26)


def _host_networks() -> list[ipaddress.IPv4Network]:
    networks = []
    for argv in (["ip", "-o", "-4", "addr"], ["ip", "-4", "route", "show", "table", "all"]):
        for token in run_cmd(argv, check=False).stdout.split():
            if re.match(r"^\d+\.\d+\.\d+\.\d+(/\d+)?$", token):
                with contextlib.suppress(ValueError):
                    networks.append(ipaddress.IPv4Network(token, strict=False))  # the pattern is IPv4
    return [n for n in networks if n.prefixlen > 0]


def _pick_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 in 10.213.0.0/16 that no host address or route overlaps."""
    used = _host_networks()
    for i in range(254):
        candidate = ipaddress.IPv4Network(f"10.213.{(seed + i) % 254 + 1}.0/24")
        if not any(candidate.overlaps(n) for n in used):
            return candidate
    raise NetLabError("every 10.213.x.0/24 subnet is routed on this host: free one or change _pick_subnet")


def _remove_hosts(namespace: str) -> None:
    directory = NETNS_ETC / namespace
    with contextlib.suppress(OSError):
        (directory / "hosts").unlink()
    with contextlib.suppress(OSError):
        directory.rmdir()


def _namespace_pids(name: str) -> list[int]:
    proc = run_cmd(["ip", "netns", "pids", name], check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_alive(record_path: Path) -> bool:
    """Whether the process recorded in a registry entry runs (an unreadable entry counts as alive)."""
    try:
        owner = json.loads(record_path.read_text()).get("pid")
    except (OSError, ValueError):
        return True  # being written right now by its owner
    return not isinstance(owner, int) or _pid_alive(owner)


def cleanup_stale(prefix: str = "lc", *, force: bool = False) -> list[str]:
    """Delete namespaces that labs left behind (their process was SIGKILLed or the host crashed).

    A lab's namespaces (``<lab>_r<k>``, ``<lab>_br`` with ``<lab>`` starting with ``prefix``) are
    stale when the pid recorded in ``/run/lit_commeff-netlab/<lab>.json`` is gone, or when there is no
    record. Processes still inside them are killed, and a recorded router is stopped.

    Args:
        prefix: Only labs whose prefix starts with this are considered.
        force: Also delete labs whose owner is alive.

    Returns:
        The deleted namespace names.
    """
    groups: dict[str, list[str]] = {}
    for name in list_namespaces():
        match = _NAMESPACE_RE.match(name)
        if match and name.startswith(prefix):
            groups.setdefault(match["lab"], []).append(name)
    deleted: list[str] = []
    for lab, names in groups.items():
        record_path = REGISTRY_DIR / f"{lab}.json"
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            record = {}
        owner = record.get("pid")
        if not force and isinstance(owner, int) and _pid_alive(owner):
            continue
        for name in names:
            for pid in _namespace_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        router = record.get("router_pid")
        if isinstance(router, int) and _pid_alive(router):
            with contextlib.suppress(OSError):
                if b"tunrouter" in Path(f"/proc/{router}/cmdline").read_bytes():
                    os.kill(router, signal.SIGTERM)
        for name in names:
            if run_cmd(["ip", "netns", "del", name], check=False).returncode == 0:
                deleted.append(name)
            _remove_hosts(name)
        with contextlib.suppress(OSError):
            record_path.unlink()
    return deleted
