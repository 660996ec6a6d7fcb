"""Ledger arithmetic on a scripted run: CC-1/2/3, bytes per worker, γ, state round trip, errors."""

from __future__ import annotations

import time

import pytest
import torch

from lit_commeff.ledger import CommLedger, Direction

D, M = 100, 4  # dense message: 100 float32 = 400 bytes


def _script(ledger: CommLedger, rounds=(0, 1, 2)) -> None:
    """An OLGA-shaped epoch: a dense round, two compressed rounds (one with two messages per worker)."""
    for r in rounds:
        ledger.begin_round()
        if r == 0:  # dense gather of gradients, then broadcast of the new point
            ledger.record(Direction.UPLINK, sender=[1, 2, 3], nbytes=400, tag="dense")
            ledger.record(Direction.DOWNLINK, nbytes=400, seconds=0.5)
        elif r == 1:  # RandK 10%: 10 values each
            ledger.record("uplink", sender=[1, 2, 3], nbytes=[40, 40, 40], tag="compressed", seconds=0.25)
            ledger.record("downlink", nbytes=800)
        else:  # worker 2 sends two messages (60 + 60), others one of 60
            ledger.record("uplink", sender=[1, 2, 3], nbytes=60, tag="compressed")
            ledger.record("uplink", sender=2, nbytes=60, tag="compressed")
            ledger.record("downlink", nbytes=400, receivers=[1, 3])


def test_scripted_sequence_totals():
    ledger = CommLedger(dim=D, num_workers=M)
    assert ledger.dense_bytes == 400
    _script(ledger)
    assert ledger.cc1 == 3
    assert ledger.cc2 == 3 + 3 + 4
    # CC-3: dense round 1 unit, then the busiest worker: 40/400, then worker 2's 120/400.
    assert ledger.cc3 == pytest.approx(1 + 0.1 + 0.3)
    assert ledger.uplink_bytes_per_worker() == [0, 400 + 40 + 60, 400 + 40 + 120, 400 + 40 + 60]
    assert ledger.uplink_bytes == 3 * 400 + 3 * 40 + 4 * 60
    assert ledger.downlink_bytes_per_worker() == [0, 400 + 800 + 400, 400 + 800, 400 + 800 + 400]
    assert ledger.downlink_bytes == 3 * 400 + 3 * 800 + 2 * 400
    assert ledger.allreduce_bytes == 0
    assert ledger.comm_time_s == pytest.approx(0.75)
    # γ: 10 messages of dense size 400 over the bytes sent; per tag.
    assert ledger.gamma() == pytest.approx(10 * 400 / (1200 + 120 + 240))
    assert ledger.gamma("dense") == pytest.approx(1.0)
    assert ledger.gamma("compressed") == pytest.approx(7 * 400 / (120 + 240))
    assert ledger.gamma("absent") != ledger.gamma("absent")  # nan: nothing was sent


def test_per_round_figures():
    ledger = CommLedger(dim=D, num_workers=M)
    _script(ledger)
    rounds = ledger.rounds
    assert [r.round_id for r in rounds] == [0, 1, 2]
    assert [r.uplink_messages for r in rounds] == [3, 3, 4]
    assert [r.uplink_bytes for r in rounds] == [1200, 120, 240]
    assert [r.max_worker_bytes for r in rounds] == [400, 40, 120]
    assert [r.downlink_bytes for r in rounds] == [1200, 2400, 800]
    assert [r.cc3 for r in rounds] == pytest.approx([1.0, 0.1, 0.3])
    assert [r.seconds for r in rounds] == pytest.approx([0.5, 0.25, 0.0])


def test_allreduce_counts_as_uplink_and_cc3():
    ledger = CommLedger(dim=D, num_workers=M, dense_dtype=torch.bfloat16)
    assert ledger.dense_bytes == 200
    ledger.begin_round()
    ledger.record(Direction.ALLREDUCE, sender=list(range(M)), nbytes=200)
    assert ledger.allreduce_bytes == 800 and ledger.uplink_bytes == 800
    assert ledger.cc2 == 4 and ledger.cc3 == pytest.approx(1.0)
    assert ledger.uplink_bytes_per_worker() == [200] * 4  # the hub contributes too
    assert ledger.downlink_bytes == 0


def test_state_dict_resume_mid_round_matches_uninterrupted():
    full = CommLedger(dim=D, num_workers=M)
    _script(full)
    first = CommLedger(dim=D, num_workers=M)
    _script(first, rounds=(0, 1))
    first.begin_round()
    first.record("uplink", sender=[1, 2, 3], nbytes=60, tag="compressed")
    # Checkpoint inside round 2, through torch.save with weights_only loading.
    import io

    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = CommLedger(dim=D, num_workers=M)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    resumed.record("uplink", sender=2, nbytes=60, tag="compressed")
    resumed.record("downlink", nbytes=400, receivers=[1, 3])
    assert resumed.summary() == full.summary()
    assert resumed.rounds == full.rounds


def test_summary_is_plain_data():
    import json

    ledger = CommLedger(dim=D, num_workers=M)
    _script(ledger)
    summary = json.loads(json.dumps(ledger.summary()))
    assert summary["cc1"] == 3 and summary["uplink_bytes"] == 1560
    assert set(summary["gamma_by_tag"]) == {"dense", "compressed"}


def test_measure_records_wall_time():
    ledger = CommLedger(dim=D, num_workers=M)
    ledger.begin_round()
    with ledger.measure(Direction.UPLINK, sender=1, nbytes=400):
        time.sleep(0.02)
    assert ledger.comm_time_s >= 0.02
    assert ledger.uplink_bytes == 400


def test_measure_records_nothing_when_collective_fails():
    ledger = CommLedger(dim=D, num_workers=M)
    ledger.begin_round()
    with pytest.raises(RuntimeError, match="boom"), ledger.measure(Direction.UPLINK, sender=1, nbytes=400):
        raise RuntimeError("boom")
    assert ledger.uplink_bytes == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 0, "num_workers": 2}, r"ledger\.dim: dim=0"),
        ({"dim": 10, "num_workers": 0}, r"ledger\.num_workers: num_workers=0"),
        ({"dim": 10, "num_workers": 2, "hub": 2}, r"ledger\.hub: hub=2 .* \[0, 1\]"),
    ],
)
def test_bad_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CommLedger(**kwargs)


def test_bad_records():
    ledger = CommLedger(dim=D, num_workers=M)
    with pytest.raises(RuntimeError, match=r"call begin_round\(\)"):
        ledger.record("uplink", sender=1, nbytes=4)
    ledger.begin_round()
    with pytest.raises(ValueError, match=r"sender=4 is out of range; worker ids are integers in \[0, 3\]"):
        ledger.record("uplink", sender=4, nbytes=4)
    with pytest.raises(ValueError, match=r"nbytes=-1 is invalid"):
        ledger.record("uplink", sender=1, nbytes=-1)
    with pytest.raises(ValueError, match=r"2 senders but 3 byte counts"):
        ledger.record("uplink", sender=[1, 2], nbytes=[1, 2, 3])
    with pytest.raises(ValueError, match=r"needs sender="):
        ledger.record("allreduce", nbytes=4)
    with pytest.raises(ValueError, match=r"'sideways' is not a valid Direction"):
        ledger.record("sideways", sender=1, nbytes=4)
    with pytest.raises(ValueError, match=r"receivers=9 is out of range"):
        ledger.record("downlink", nbytes=4, receivers=[9])
    with pytest.raises(ValueError, match=r"seconds=-1"):
        ledger.record("uplink", sender=1, nbytes=4, seconds=-1)


def test_load_state_from_another_run_shape():
    ledger = CommLedger(dim=D, num_workers=M)
    ledger.begin_round()
    other = CommLedger(dim=D + 1, num_workers=M)
    with pytest.raises(ValueError, match=r"checkpoint has dim=100 but this run has 101"):
        other.load_state_dict(ledger.state_dict())


def test_rejected_record_changes_nothing():
    ledger = CommLedger(dim=D, num_workers=M)
    ledger.begin_round()
    before = ledger.state_dict()
    with pytest.raises(ValueError):
        ledger.record("uplink", sender=[1, 9], nbytes=4, seconds=1.0)
    with pytest.raises(ValueError):
        ledger.record("downlink", nbytes=4, receivers=[1, 9])
    assert ledger.state_dict() == before
