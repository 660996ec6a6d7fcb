"""Network faults on real links: each rank in its own network namespace (netlab), gloo over the shaped link.

Needs root and iproute2 (skipped otherwise). 2% loss with 50 ms jitter must not change a single bit of
the result; a link down for longer than the collective timeout must stop the job with a clear message
(not hang), and a resume after the link is back must finish as if nothing happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lit_commeff.netlab import LinkProfile, NetLab, available

pytestmark = [pytest.mark.root, pytest.mark.slow]  # several 24-step training runs per test
SCRIPT = Path(__file__).parent / "scripts" / "train_netfault.py"
STEPS = 24


@pytest.fixture(autouse=True)
def _needs_netlab():
    status = available()
    if not status:
        pytest.skip(f"netlab unavailable: {status.reason}")


def _start(lab: NetLab, out: Path, *args: str, port: int) -> list[subprocess.Popen]:
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, str(SCRIPT), str(out), *args]
    return [
        lab.popen(
            rank,
            argv,
            env={**lab.dist_env(rank, port), "PYTHONWARNINGS": "ignore"},
            stdout=open(out / f"rank{rank}.log", "w"),  # closed when the process ends
            stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"the job hung for more than {timeout:.0f} s")
    return codes


def _result(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _log(out: Path, rank: int) -> str:
    return (out / f"rank{rank}.log").read_text(errors="replace")


def test_loss_and_jitter_on_every_link_change_nothing_but_time(tmp_path):
    with NetLab(2) as clean:
        codes = _wait(_start(clean, tmp_path / "clean", str(STEPS), "30", port=29611), 180)
    assert codes == [0, 0], _log(tmp_path / "clean", 0)[-2000:]
    lossy = LinkProfile("lossy", up_mbit=None, down_mbit=None, rtt_ms=10, jitter_ms=50, loss_pct=2)
    with NetLab(2, lossy) as lab:
        start = time.monotonic()
        codes = _wait(_start(lab, tmp_path / "lossy", str(STEPS), "30", port=29612), 300)
        elapsed = time.monotonic() - start
        stats = lab.router_stats() if lab.backend == "tun" else None
    assert codes == [0, 0], _log(tmp_path / "lossy", 0)[-2000:]
    want, got = _result(tmp_path / "clean"), _result(tmp_path / "lossy")
    for w, g in zip(want, got, strict=True):
        assert g["step"] == w["step"] == STEPS
        assert g["params"] == w["params"]  # TCP retransmits: the same bits arrive, later
        assert g["summary"]["uplink_bytes"] == w["summary"]["uplink_bytes"]
    print(f"lossy run: {elapsed:.1f} s, router stats {stats}")


def test_a_link_down_longer_than_the_timeout_fails_clearly_and_resume_works(tmp_path):
    timeout_s = 6
    with NetLab(2) as lab:
        reference = _wait(_start(lab, tmp_path / "ref", str(STEPS), "30", port=29613), 180)
        assert reference == [0, 0], _log(tmp_path / "ref", 0)[-2000:]

        out = tmp_path / "cut"
        procs = _start(lab, out, str(STEPS), str(timeout_s), "--pause-at", "17", port=29614)
        deadline = time.monotonic() + 120
        while not (out / "paused").exists():
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), _log(out, 0)[-2000:]
            time.sleep(0.05)
        lab.set_link(1, False)  # rank 1 is unreachable from now on, for longer than the timeout
        cut = time.monotonic()
        codes = _wait(procs, timeout_s * 6 + 30)
        stopped_after = time.monotonic() - cut
        lab.set_link(1, True)
        assert codes[0] != 0 and codes[1] != 0
        assert stopped_after < timeout_s * 6 + 30
        hub_log = _log(out, 0)
        assert "a collective did not complete" in hub_log and "ckpt_path=last" in hub_log, hub_log[-3000:]
        assert "collective timeout (6 s" in hub_log

        last = out / "ckpt" / "last.ckpt"
        assert last.exists()
        # the Python form of the CLI's ckpt_path=last: Lightning finds ModelCheckpoint's last.ckpt
        resumed = _wait(_start(lab, out, str(STEPS), "30", "--ckpt", "last", port=29615), 180)
        assert resumed == [0, 0], _log(out, 0)[-2000:]
    want, got = _result(tmp_path / "ref"), _result(out)
    for w, g in zip(want, got, strict=True):
        assert g["step"] == w["step"] == STEPS
        assert g["params"] == w["params"]
        assert g["summary"]["uplink_bytes"] == w["summary"]["uplink_bytes"]
    print(f"job stopped {stopped_after:.1f} s after the link went down (timeout {timeout_s} s)")
