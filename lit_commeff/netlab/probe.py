"""TCP probes for a :class:`~lit_commeff.netlab.namespaces.NetLab`: throughput, RTT, intact transfers.

The file is both a script that runs inside a namespace (standard library only, no ``lit_commeff``
import, so it starts in milliseconds) and the home of the functions that drive it from the host::

    python probe.py recv --bind ADDR [--port 0] [--warmup 0.3]      # prints LISTENING <port>, then JSON
    python probe.py send --host ADDR --port P (--seconds S | --bytes N)
    python probe.py echo --bind ADDR [--port 0]                      # prints LISTENING <port>
    python probe.py rtt --host ADDR --port P [--count N] [--interactive]

``recv`` reports the rate from its first received byte plus ``warmup`` seconds to the last byte, so
TCP slow start and the token bucket's initial burst do not inflate or deflate it; ``send`` waits until
the receiver has closed, so its exit means every byte arrived. Both report a SHA-256 of the stream.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lit_commeff.netlab.namespaces import NetLab

PROBE_SCRIPT = Path(__file__).resolve()
CHUNK = 64 * 1024
BLOCK = 1 << 20

__all__ = [
    "Rtt",
    "Throughput",
    "Transfer",
    "measure_rtt",
    "measure_throughput",
    "probe_argv",
    "start_server",
    "transfer",
]


# ---------------------------------------------------------------------- script side (inside a namespace)


def _listen(bind: str, port: int) -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((bind, port))
    server.listen(8)
    print(f"LISTENING {server.getsockname()[1]}", flush=True)
    return server


def _cmd_recv(args: argparse.Namespace) -> int:
    server = _listen(args.bind, args.port)
    server.settimeout(args.timeout)
    conn, _ = server.accept()
    conn.settimeout(args.timeout)
    buf = bytearray(256 * 1024)
    view = memoryview(buf)
    digest = hashlib.sha256()
    total = 0
    first = last = mark_time = 0.0
    mark_bytes = -1
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        now = time.monotonic()
        if total == 0:
            first = now
        elif mark_bytes < 0 and now - first >= args.warmup:
            mark_time, mark_bytes = now, total
        total += n
        last = now
        digest.update(view[:n])
    conn.close()
    steady = (total - mark_bytes) * 8 / (last - mark_time) / 1e6 if mark_bytes >= 0 and last > mark_time else 0.0
    span = last - first
    result = {
        "bytes": total,
        "seconds": span,
        "mbit": total * 8 / span / 1e6 if span > 0 else 0.0,
        "steady_mbit": steady,
        "sha256": digest.hexdigest(),
    }
    print(json.dumps(result), flush=True)
    return 0


def _cmd_send(args: argparse.Namespace) -> int:
    block = random.Random(args.seed).randbytes(BLOCK)
    view = memoryview(block)
    started = time.monotonic()
    sock = socket.create_connection((args.host, args.port), timeout=args.connect_timeout)
    connect_ms = (time.monotonic() - started) * 1000
    sock.settimeout(args.timeout)
    digest = hashlib.sha256()
    sent = offset = 0
    deadline = time.monotonic() + args.seconds if args.seconds else None
    limit = args.bytes if args.bytes else None
    t0 = time.monotonic()
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            break
        size = CHUNK if limit is None else min(CHUNK, limit - sent)
        if size <= 0:
            break
        chunk = view[offset : offset + size]
        sock.sendall(chunk)
        digest.update(chunk)
        sent += size
        offset = (offset + size) % BLOCK
    sock.shutdown(socket.SHUT_WR)
    while sock.recv(4096):  # the receiver closes once it has read everything
        pass
    sock.close()
    elapsed = time.monotonic() - t0
    print(json.dumps({"bytes": sent, "sha256": digest.hexdigest(), "seconds": elapsed, "connect_ms": connect_ms}))
    return 0


def _echo_client(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def _cmd_echo(args: argparse.Namespace) -> int:
    server = _listen(args.bind, args.port)
    while True:
        conn, _ = server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_echo_client, args=(conn,), daemon=True).start()


def _ping(sock: socket.socket, seq: int, size: int, timeout: float) -> float | None:
    """One round trip of a ``size``-byte message tagged ``seq``; stale echoes of earlier pings are skipped."""
    message = struct.pack("!Q", seq) + bytes(size - 8)
    started = time.monotonic()
    sock.sendall(message)
    deadline = started + timeout
    pending = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return None
        if not data:
            raise ConnectionError("echo server closed the connection")
        pending += data
        while len(pending) >= size:
            got = struct.unpack("!Q", pending[:8])[0]
            pending = pending[size:]
            if got == seq:
                return (time.monotonic() - started) * 1000


def _cmd_rtt(args: argparse.Namespace) -> int:
    started = time.monotonic()
    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
    connect_ms = (time.monotonic() - started) * 1000
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.interactive:
        # One ping per stdin line "ping TIMEOUT"; answers one JSON line each (used by fault tests).
        print(json.dumps({"connect_ms": connect_ms}), flush=True)
        for seq, line in enumerate(sys.stdin, start=1):
            parts = line.split()
            timeout = float(parts[1]) if len(parts) > 1 else args.timeout
            ms = _ping(sock, seq, args.size, timeout)
            print(json.dumps({"seq": seq, "ok": ms is not None, "ms": ms}), flush=True)
        return 0
    rtts = []
    for seq in range(1, args.count + 1):
        ms = _ping(sock, seq, args.size, args.timeout)
        if ms is None:
            print(f"ping {seq} timed out after {args.timeout} s", file=sys.stderr)
            return 1
        rtts.append(ms)
    sock.close()
    result = {
        "connect_ms": connect_ms,
        "rtts_ms": rtts,
        "min_ms": min(rtts),
        "median_ms": statistics.median(rtts),
        "mean_ms": statistics.fmean(rtts),
    }
    print(json.dumps(result), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe.py", description="netlab TCP probes")
    sub = parser.add_subparsers(dest="command", required=True)
    recv = sub.add_parser("recv", help="receive one stream and report its rate and SHA-256")
    recv.add_argument("--bind", required=True)
    recv.add_argument("--port", type=int, default=0)
    recv.add_argument("--warmup", type=float, default=0.3, help="seconds after the first byte not counted")
    recv.add_argument("--timeout", type=float, default=30.0)
    send = sub.add_parser("send", help="send a stream for --seconds or --bytes")
    send.add_argument("--host", required=True)
    send.add_argument("--port", type=int, required=True)
    send.add_argument("--seconds", type=float, default=0.0)
    send.add_argument("--bytes", type=int, default=0)
    send.add_argument("--seed", type=int, default=0)
    send.add_argument("--connect-timeout", type=float, default=5.0)
    send.add_argument("--timeout", type=float, default=30.0)
    echo = sub.add_parser("echo", help="echo server")
    echo.add_argument("--bind", required=True)
    echo.add_argument("--port", type=int, default=0)
    rtt = sub.add_parser("rtt", help="ping-pong against an echo server")
    rtt.add_argument("--host", required=True)
    rtt.add_argument("--port", type=int, required=True)
    rtt.add_argument("--count", type=int, default=20)
    rtt.add_argument("--size", type=int, default=64)
    rtt.add_argument("--timeout", type=float, default=5.0)
    rtt.add_argument("--interactive", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Script entry point (see the module docstring for the commands)."""
    args = _parser().parse_args(argv)
    if args.command == "send" and not (args.seconds or args.bytes):
        print("send: give --seconds or --bytes", file=sys.stderr)
        return 2
    handler = {"recv": _cmd_recv, "send": _cmd_send, "echo": _cmd_echo, "rtt": _cmd_rtt}[args.command]
    try:
        return handler(args)
    except (OSError, ConnectionError) as exc:
        print(f"probe {args.command} failed: {exc!r}", file=sys.stderr)
        return 1


# ---------------------------------------------------------------------- host side (drives a NetLab)


@dataclass(frozen=True)
class Throughput:
    """Result of :func:`measure_throughput`.

    Attributes:
        mbit: Rate after the warm-up, in Mbit/s (the number to compare with the profile).
        total_mbit: Rate over the whole stream, first to last byte.
        bytes: Bytes received.
        seconds: First to last byte.
    """

    mbit: float
    total_mbit: float
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Transfer:
    """Result of :func:`transfer`: what was sent and what arrived."""

    bytes_sent: int
    bytes_received: int
    sha256_sent: str
    sha256_received: str
    seconds: float

    @property
    def intact(self) -> bool:
        """Whether every byte arrived unchanged."""
        return self.bytes_sent == self.bytes_received and self.sha256_sent == self.sha256_received


@dataclass(frozen=True)
class Rtt:
    """Result of :func:`measure_rtt`, in milliseconds."""

    connect_ms: float
    min_ms: float
    median_ms: float
    mean_ms: float


def probe_argv(*args: str) -> list[str]:
    """Command line that runs this probe script with ``args`` (isolated mode: fast start)."""
    return [sys.executable, "-I", str(PROBE_SCRIPT), *args]


def _readline(proc: subprocess.Popen[str], timeout: float, what: str) -> str:
    assert proc.stdout is not None
    if not select.select([proc.stdout], [], [], timeout)[0]:
        raise TimeoutError(f"{what}: no output within {timeout} s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
        raise RuntimeError(f"{what}: exited (code {proc.poll()}) without output: {err.strip()}")
    return line


def start_server(lab: NetLab, rank: int, *args: str, timeout: float = 10.0) -> tuple[subprocess.Popen[str], int]:
    """Start a probe server (``recv`` or ``echo``) in ``rank``'s namespace on its lab address.

    Returns:
        The process (text stdout) and the port it listens on.
    """
    proc = lab.popen(
        rank,
        probe_argv(*args, "--bind", lab.address(rank)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = _readline(proc, timeout, f"probe {args[0]} on rank {rank}")
    return proc, int(line.split()[1])


def _finish(proc: subprocess.Popen[str], timeout: float, what: str) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TimeoutError(f"{what}: did not finish within {timeout} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: exit {proc.returncode}: {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def _stream(lab: NetLab, src: int, dst: int, send_args: list[str], warmup: float, timeout: float) -> tuple[dict, dict]:
    receiver, port = start_server(lab, dst, "recv", "--warmup", str(warmup), "--timeout", str(timeout))
    sender = lab.popen(
        src,
        probe_argv("send", "--host", lab.address(dst), "--port", str(port), "--timeout", str(timeout), *send_args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sent = _finish(sender, timeout, f"probe send rank {src} -> {dst}")
    received = _finish(receiver, timeout, f"probe recv on rank {dst}")
    return sent, received


def measure_throughput(lab: NetLab, src: int, dst: int, seconds: float = 1.5, warmup: float = 0.3) -> Throughput:
    """Send a TCP stream from rank ``src`` to rank ``dst`` for ``seconds`` and measure the goodput.

    Args:
        lab: A set-up lab.
        src: Sending rank (rank >= 1 to rank 0 measures a worker's uplink).
        dst: Receiving rank.
        seconds: Sending time.
        warmup: Seconds after the first byte left out of :attr:`Throughput.mbit`.

    Returns:
        The measured rates (TCP goodput: about 96% of the configured IP rate at MTU 1500).
    """
    _, received = _stream(lab, src, dst, ["--seconds", str(seconds)], warmup, timeout=seconds + 30)
    return Throughput(received["steady_mbit"], received["mbit"], received["bytes"], received["seconds"])


def transfer(lab: NetLab, src: int, dst: int, nbytes: int, timeout: float = 60.0) -> Transfer:
    """Send ``nbytes`` from rank ``src`` to rank ``dst`` and compare SHA-256 digests at both ends."""
    sent, received = _stream(lab, src, dst, ["--bytes", str(nbytes)], warmup=0.0, timeout=timeout)
    return Transfer(sent["bytes"], received["bytes"], sent["sha256"], received["sha256"], sent["seconds"])


def measure_rtt(lab: NetLab, src: int, dst: int, count: int = 20) -> Rtt:
    """Measure TCP connect time and small-message round trips from rank ``src`` to rank ``dst``."""
    server, port = start_server(lab, dst, "echo")
    try:
        client = lab.popen(
            src,
            probe_argv("rtt", "--host", lab.address(dst), "--port", str(port), "--count", str(count)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        result = _finish(client, 30.0, f"probe rtt rank {src} -> {dst}")
    finally:
        server.kill()
        server.communicate()
    return Rtt(result["connect_ms"], result["min_ms"], result["median_ms"], result["mean_ms"])


if __name__ == "__main__":
    sys.exit(main())
