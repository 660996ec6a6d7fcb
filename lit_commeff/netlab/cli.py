"""Command line for netlab: ``check``, ``measure``, ``run`` and ``cleanup``.

Examples::

    python -m lit_commeff.netlab check
    python -m lit_commeff.netlab check --measure edge   # the harness's accuracy check (idle host)
    python -m lit_commeff.netlab measure --profile edge
    python -m lit_commeff.netlab run --profile edge --world-size 3 -- python train.py
    python -m lit_commeff.netlab run --profile edge --world-size 2 -- lit-commeff strategy=ef_olga trainer.devices=2
    python -m lit_commeff.netlab cleanup
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence

from lit_commeff.netlab import probe
from lit_commeff.netlab.namespaces import BACKENDS, NetLab, cleanup_stale
from lit_commeff.netlab.profiles import BUILTIN_PROFILES, LinkProfile, parse_profile
from lit_commeff.netlab.shaping import netem_available, qdisc_available, tun_available
from lit_commeff.netlab.system import ROOT_MESSAGE, NetLabError, available, run_cmd

__all__ = ["main"]

PROFILE_HELP = f"built-in ({', '.join(BUILTIN_PROFILES)}) or e.g. 'up=10,down=100,rtt=20,jitter=5,loss=2'"


def _check_veth_bridge() -> tuple[bool, str]:
    namespace = f"lcprobe{os.getpid()}_v"
    proc = run_cmd(["ip", "netns", "add", namespace], check=False)
    if proc.returncode != 0:
        return False, proc.stderr.strip()
    try:
        for argv in (
            ["ip", "-n", namespace, "link", "add", "va", "type", "veth", "peer", "name", "vb"],
            ["ip", "-n", namespace, "link", "add", "br0", "type", "bridge"],
            ["ip", "-n", namespace, "link", "set", "vb", "master", "br0"],
        ):
            proc = run_cmd(argv, check=False)
            if proc.returncode != 0:
                return False, f"`{' '.join(argv)}`: {proc.stderr.strip()}"
        return True, "veth pairs and a Linux bridge"
    finally:
        run_cmd(["ip", "netns", "del", namespace], check=False)


#: Tolerances of ``check --measure``: a shaped rate within 20 % of the profile, the RTT within 5 ms. They hold
#: on an otherwise idle host; CPU load from other jobs adds queueing delay (the unit tests compare with an
#: unshaped link measured under the same load instead).
RATE_TOLERANCE = 0.2
RTT_TOLERANCE_MS = 5.0


def shaping_errors(profile: LinkProfile, up_mbit: float, down_mbit: float, rtt_ms: float) -> list[str]:
    """What a link measured with :func:`probe.measure_throughput`/:func:`probe.measure_rtt` gets wrong.

    Returns:
        One line per quantity outside the self-check's tolerance (empty when the link matches its profile).
    """
    errors = []
    for label, measured, configured in (
        ("uplink", up_mbit, profile.up_mbit),
        ("downlink", down_mbit, profile.down_mbit),
    ):
        if configured and abs(measured - configured) > RATE_TOLERANCE * configured:
            errors.append(
                f"{label}: measured {measured:.2f} Mbit/s for a configured {configured:g} Mbit/s "
                f"(tolerance {RATE_TOLERANCE:.0%})"
            )
    if abs(rtt_ms - profile.rtt_ms) > RTT_TOLERANCE_MS:
        errors.append(
            f"RTT: measured median {rtt_ms:.2f} ms for a configured {profile.rtt_ms:g} ms (tolerance "
            f"{RTT_TOLERANCE_MS:g} ms)"
        )
    return errors


def _measure_rows(profile_text: str, backend: str) -> list[tuple[str, bool, str]]:
    """Shape a 2-rank lab with the profile, measure it and compare (the harness's own accuracy check)."""
    profile = parse_profile(profile_text)
    with NetLab(2, profile, backend=backend) as lab:
        up = probe.measure_throughput(lab, 1, 0)
        down = probe.measure_throughput(lab, 0, 1)
        rtt = probe.measure_rtt(lab, 1, 0)
        used = lab.backend
    errors = shaping_errors(profile, up.mbit, down.mbit, rtt.median_ms)
    detail = (
        f"{profile.describe()} [backend {used}]: up {up.mbit:.2f}, down {down.mbit:.2f} Mbit/s, "
        f"RTT {rtt.median_ms:.2f} ms"
    )
    return [("shaping", not errors, "; ".join(errors) if errors else detail)]


def cmd_check(args: argparse.Namespace) -> int:
    """Print what this host supports; exit 0 when at least the tun or netem path works.

    With ``--measure PROFILE``, also shape a lab with the profile and check the measured rates and RTT
    against it (:data:`RATE_TOLERANCE`, :data:`RTT_TOLERANCE_MS`); exit 1 when they are off. Run it on an
    idle host: it is the harness's accuracy check, which the unit tests do not repeat.
    """
    rows: list[tuple[str, bool, str]] = []
    rows.append(("root", os.geteuid() == 0, "euid 0" if os.geteuid() == 0 else ROOT_MESSAGE))
    for tool in ("ip", "tc"):
        path = shutil.which(tool)
        rows.append((tool, path is not None, path or "missing: apt-get install iproute2"))
    status = available(refresh=True)
    rows.append(("netns", status.ok, "ip netns add/del" if status.ok else status.reason))
    if status.ok:
        rows.append(("veth+bridge", *_check_veth_bridge()))
        tbf = qdisc_available("tbf")
        rows.append(("tbf", tbf, "rate limits in the kernel" if tbf else "sch_tbf missing: rates need backend='tun'"))
        netem = netem_available()
        rows.append(("netem", netem, "kernel delay/jitter/loss" if netem else "missing: the tun router is used"))
        tun = tun_available()
        rows.append(("tun", tun, "/dev/net/tun (userspace router)" if tun else "missing: modprobe tun"))
    usable = status.ok and any(ok for name, ok, _ in rows if name in ("netem", "tun"))
    if usable and getattr(args, "measure", None):
        rows.extend(_measure_rows(args.measure, args.backend))
    width = max(len(name) for name, _, _ in rows)
    for name, ok, detail in rows:
        print(f"{name:<{width}}  {'ok' if ok else 'NO':<3} {detail}")
    print("netlab: usable" if usable else "netlab: NOT usable here")
    shaped = all(ok for name, ok, _ in rows if name == "shaping")
    return 0 if usable and shaped else 1


def _rate(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g} Mbit/s"


def cmd_measure(args: argparse.Namespace) -> int:
    """Measure uplink, downlink and RTT of one worker link and print them next to the profile."""
    profile: LinkProfile = parse_profile(args.profile)
    with NetLab(2, profile, backend=args.backend) as lab:
        print(f"{profile.describe()}  [backend {lab.backend}, prefix {lab.prefix}]")
        rows = []
        for label, src, dst, configured in (
            ("uplink", 1, 0, profile.up_mbit),
            ("downlink", 0, 1, profile.down_mbit),
        ):
            cpu0, t0 = lab.router_cpu_seconds(), time.monotonic()
            result = probe.measure_throughput(lab, src, dst, seconds=args.seconds)
            cpu = (lab.router_cpu_seconds() - cpu0) / (time.monotonic() - t0)
            ratio = f" ({result.mbit / configured:.0%})" if configured else ""
            note = f"router CPU {cpu:.0%} of a core" if lab.backend == "tun" else ""
            rows.append((label, _rate(configured), f"{result.mbit:.2f} Mbit/s{ratio}", note))
        rtt = probe.measure_rtt(lab, 1, 0, count=args.pings)
        connect = f"TCP connect {rtt.connect_ms:.2f} ms"
        rows.append(("RTT", f"{profile.rtt_ms:g} ms", f"{rtt.median_ms:.2f} ms (median)", connect))
    print(f"{'':<10} {'configured':<16} {'measured':<24} note")
    for label, configured_text, measured, note in rows:
        print(f"{label:<10} {configured_text:<16} {measured:<24} {note}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the command once per rank inside the lab; return the first failure's exit code."""
    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        print("run: give the command after --, e.g. run --world-size 2 -- python train.py", file=sys.stderr)
        return 2
    congestion = None if args.congestion_control == "host" else args.congestion_control
    lab_options = {"hub_profile": args.hub_profile, "backend": args.backend, "congestion_control": congestion}
    with NetLab(args.world_size, args.profile, **lab_options) as lab:
        hub = f"; hub {lab.hub_profile.describe()}" if args.hub_profile else ""
        print(
            f"netlab: {lab.profile.describe()}{hub} [backend {lab.backend}, TCP {lab.congestion_control_in_use}]; "
            f"MASTER_ADDR={lab.address(0)} MASTER_PORT={args.master_port}",
            file=sys.stderr,
        )
        start = time.monotonic()
        procs = [lab.popen(rank, command, env=lab.dist_env(rank, args.master_port)) for rank in range(args.world_size)]
        first_failure: tuple[int, int] | None = None
        deadline = None
        while True:
            codes = [p.poll() for p in procs]
            if first_failure is None:
                for rank, code in enumerate(codes):
                    if code not in (None, 0):
                        first_failure = (rank, code)
                        print(
                            f"netlab: rank {rank} exited with code {code}; stopping the others in {args.grace:g} s",
                            file=sys.stderr,
                        )
                        deadline = time.monotonic() + args.grace
                        break
            if all(code is not None for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                break  # teardown kills the ranks still running
            time.sleep(0.05)
        elapsed = time.monotonic() - start
    code = 0 if first_failure is None else first_failure[1]
    code = 128 - code if code < 0 else code  # killed by a signal: the shell's 128 + signum
    print(
        f"netlab: {args.world_size} ranks ran {elapsed:.1f} s on {lab.profile.describe()}; exit code {code}",
        file=sys.stderr,
    )
    return code


def cmd_cleanup(args: argparse.Namespace) -> int:
    """Delete namespaces left behind by labs whose process died."""
    deleted = cleanup_stale(args.prefix, force=args.force)
    print("\n".join(deleted) if deleted else "nothing to clean up")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lit_commeff.netlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="print which namespace, qdisc and TUN features work here")
    check.add_argument("--measure", metavar="PROFILE", help=f"also shape and measure a link: {PROFILE_HELP}")
    check.add_argument("--backend", choices=BACKENDS, default="auto")
    measure = sub.add_parser("measure", help="measure a profile's rates and RTT between two namespaces")
    measure.add_argument("--profile", default="edge", help=PROFILE_HELP)
    measure.add_argument("--backend", choices=BACKENDS, default="auto")
    measure.add_argument("--seconds", type=float, default=2.0, help="sending time per direction")
    measure.add_argument("--pings", type=int, default=20)
    run = sub.add_parser("run", help="run a command once per rank, each in its own shaped namespace")
    run.add_argument("--profile", default="edge", help=PROFILE_HELP)
    run.add_argument(
        "--hub-profile",
        default=None,
        help="the hub's (rank 0) own link, same forms as --profile, e.g. up=1000,down=1000 (default: unshaped)",
    )
    run.add_argument("--world-size", type=int, required=True)
    run.add_argument("--backend", choices=BACKENDS, default="auto")
    run.add_argument(
        "--congestion-control",
        default="host",
        help="TCP congestion control in the ranks' namespaces, e.g. cubic or bbr (default 'host': the host's)",
    )
    run.add_argument("--master-port", type=int, default=29500)
    run.add_argument("--grace", type=float, default=10.0, help="seconds the other ranks get after one fails")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    cleanup = sub.add_parser("cleanup", help="delete namespaces of labs whose process died")
    cleanup.add_argument("--prefix", default="lc")
    cleanup.add_argument("--force", action="store_true", help="also labs whose process is alive")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m lit_commeff.netlab``."""
    args = _parser().parse_args(argv)
    handler = {"check": cmd_check, "measure": cmd_measure, "run": cmd_run, "cleanup": cmd_cleanup}[args.command]
    try:
        return handler(args)
    except (NetLabError, ValueError) as exc:
        print(f"netlab: {exc}", file=sys.stderr)
        return 1
    except subprocess.TimeoutExpired as exc:
        print(f"netlab: timed out: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("netlab: interrupted; namespaces torn down", file=sys.stderr)
        return 130
