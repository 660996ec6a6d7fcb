"""Userspace impairment router: forwards IP packets between TUN interfaces with delay, jitter, loss and rate.

Used when the kernel lacks ``netem``. Every rank's namespace holds one TUN interface; the harness
creates them, then runs this file as a separate process (``python tunrouter.py CONFIG_JSON``) with the
TUN descriptors inherited. The router reads packets from each descriptor, looks up the destination
rank from the last octet of the IPv4 destination, and writes the packet to that rank's descriptor once
two per-direction stages have released it: the source's uplink, then the destination's downlink.

Each stage applies, in order: Bernoulli loss; a rate limit modelled as serialisation
(``done = max(arrival, previous done) + bytes / rate``) with a drop-tail queue bounded by
``limit_bytes``; then the one-way delay plus jitter. Releases on one direction never overtake each
other (``release = max(previous release, done + delay + jitter)``), so jitter does not reorder TCP
segments; the price is that negative jitter samples are partly absorbed.

Timed releases live in one heap; the loop sleeps in ``select`` until the next release or the next
readable descriptor, and drains up to 64 packets per descriptor per wake-up.

This module uses only the standard library and does not import ``lit_commeff``, so it starts fast.

Protocol: the process prints ``READY`` on stdout when it serves. Each ``stats`` line on stdin is
answered with one JSON line of counters; end of stdin (the harness closed the pipe or died) stops it.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import signal
import sys
import time
from typing import Any, TextIO

BATCH = 64  # packets drained per readable descriptor per wake-up
MAX_PACKET = 65536

# Indices into the counters list.
FORWARDED, DROP_LOSS, DROP_QUEUE, DROP_WRITE, DROP_OTHER = range(5)
COUNTER_NAMES = ("forwarded", "dropped_loss", "dropped_queue", "dropped_write", "dropped_other")


def serve(config: dict[str, Any], ctl_fd: int, out: TextIO) -> dict[str, int]:
    """Run the router until ``ctl_fd`` reaches end of file.

    Args:
        config: ``{"net": [a, b, c], "jitter": "uniform"|"normal", "seed": int|None, "links": [...]}``;
            each link is ``{"fd": int, "octet": int, "up": DIR, "down": DIR}`` where ``DIR`` holds
            ``rate_Bps`` (0 = unlimited), ``delay_s``, ``jitter_s``, ``loss`` and ``limit_bytes``.
        ctl_fd: Control descriptor: ``stats`` lines, end of file to stop.
        out: Stream that receives ``READY`` and the stats lines.

    Returns:
        The final counters.
    """
    links = config["links"]
    net = bytes(config["net"])
    normal = config.get("jitter", "uniform") == "normal"
    rng = random.Random(config.get("seed"))
    rand, gauss = rng.random, rng.gauss

    fds = [int(link["fd"]) for link in links]
    for fd in fds:
        os.set_blocking(fd, False)
    rank_of = [-1] * 256
    for rank, link in enumerate(links):
        rank_of[int(link["octet"])] = rank
    fd_rank = {fd: rank for rank, fd in enumerate(fds)}

    # Direction 2*r is rank r's uplink (packets it sends), 2*r+1 its downlink (packets it receives).
    directions = [link[key] for link in links for key in ("up", "down")]
    rate = [float(d["rate_Bps"]) for d in directions]
    delay = [float(d["delay_s"]) for d in directions]
    jit = [float(d["jitter_s"]) for d in directions]
    loss = [float(d["loss"]) for d in directions]
    limit = [float(d["limit_bytes"]) or float("inf") for d in directions]
    trivial = [not (rate[i] or delay[i] or jit[i] or loss[i]) for i in range(len(directions))]
    free_at = [0.0] * len(directions)
    last = [0.0] * len(directions)
    counters = [0] * len(COUNTER_NAMES)

    def stage(d: int, size: int, arrival: float) -> float:
        """Release time of a packet entering direction ``d`` at ``arrival``, or -1 when dropped."""
        p = loss[d]
        if p and rand() < p:
            counters[DROP_LOSS] += 1
            return -1.0
        r = rate[d]
        if r:
            start = free_at[d]
            if start < arrival:
                start = arrival
            elif (start - arrival) * r + size > limit[d]:  # bytes still queued ahead + this one
                counters[DROP_QUEUE] += 1
                return -1.0
            done = start + size / r
            free_at[d] = done
        else:
            done = arrival
        j = jit[d]
        if j:
            extra = delay[d] + (gauss(0.0, j) if normal else (rand() * 2.0 - 1.0) * j)
            t = done + (extra if extra > 0.0 else 0.0)
            if t < last[d]:
                t = last[d]  # keep FIFO order on this direction
            last[d] = t
            return t
        return done + delay[d]

    read, write, monotonic = os.read, os.write, time.monotonic
    heappush, heappop = heapq.heappush, heapq.heappop
    heap: list[tuple[float, int, int, bytes, int]] = []  # (release, seq, dst rank, packet, next direction | -1)
    seq = 0
    rlist = [*fds, ctl_fd]

    out.write("READY\n")
    out.flush()
    while True:
        timeout = None
        if heap:
            now = monotonic()
            while heap and heap[0][0] <= now:
                t, _, dst, pkt, d = heappop(heap)
                if d >= 0:  # reached the destination's downlink
                    t = stage(d, len(pkt), t)
                    if t < 0.0:
                        continue
                    if t > now:
                        seq += 1
                        heappush(heap, (t, seq, dst, pkt, -1))
                        continue
                try:
                    write(fds[dst], pkt)
                    counters[FORWARDED] += 1
                except OSError:  # destination link down (EIO) or its queue full
                    counters[DROP_WRITE] += 1
            if heap:
                timeout = heap[0][0] - now
        ready = select.select(rlist, [], [], timeout)[0]
        now = monotonic()
        for fd in ready:
            if fd == ctl_fd:
                data = read(ctl_fd, 4096)
                if not data:
                    return dict(zip(COUNTER_NAMES, counters, strict=True))
                for _ in range(data.count(b"stats")):
                    stats = dict(zip(COUNTER_NAMES, counters, strict=True))
                    stats["queued"] = len(heap)
                    out.write(json.dumps(stats) + "\n")
                    out.flush()
                continue
            src = fd_rank[fd]
            up = 2 * src
            for _ in range(BATCH):
                try:
                    pkt = read(fd, MAX_PACKET)
                except BlockingIOError:  # drained
                    break
                except OSError:  # EBADFD: the interface was deleted; select would report it forever
                    rlist.remove(fd)
                    break
                if len(pkt) < 20 or pkt[0] >> 4 != 4 or pkt[16:19] != net:
                    counters[DROP_OTHER] += 1  # IPv6, broadcast, multicast: not routed
                    continue
                dst = rank_of[pkt[19]]
                if dst < 0 or dst == src:
                    counters[DROP_OTHER] += 1
                    continue
                size = len(pkt)
                t = now if trivial[up] else stage(up, size, now)
                if t < 0.0:
                    continue
                down = 2 * dst + 1
                if trivial[down]:
                    down = -1
                elif t <= now:  # already through the uplink: enter the downlink now
                    t = stage(down, size, t)
                    if t < 0.0:
                        continue
                    down = -1
                if t <= now and down < 0:
                    try:
                        write(fds[dst], pkt)
                        counters[FORWARDED] += 1
                    except OSError:
                        counters[DROP_WRITE] += 1
                else:
                    seq += 1
                    heappush(heap, (t, seq, dst, pkt, down))


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``tunrouter.py CONFIG_JSON`` (descriptors named in the config are inherited)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: tunrouter.py CONFIG_JSON\n")
        return 2
    # Ctrl-C reaches the whole process group; the harness decides when the router stops (stdin EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stats = serve(json.loads(args[0]), sys.stdin.fileno(), sys.stdout)
    sys.stderr.write(json.dumps(stats) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
