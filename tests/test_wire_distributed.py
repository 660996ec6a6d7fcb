"""Payloads over real torch.distributed (gloo, CPU processes): the bytes counted are the bytes sent."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from _cli_utils import free_port

from lit_commeff.compression import build
from lit_commeff.ledger import CommLedger, Direction

WORLD = 3
SHAPE = (64, 48)
CASES = [
    ("randk", {"ratio": 0.05}),
    ("topk", {"ratio": 0.05}),
    ("qsgd", {"s": 3, "bucket_size": 128}),
    ("sign", {}),
    ("fp16", {}),
    ("powersgd", {"rank": 2}),
]


def _message(rank: int) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(100 + rank))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # A bounded timeout turns a stuck collective into a failure instead of a hung test run.
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        report = {}
        for name, options in CASES:
            c = build(name, **options)
            ledger = CommLedger(dim=SHAPE[0] * SHAPE[1], num_workers=WORLD)
            ledger.begin_round()
            payload = c.compress(_message(rank), step=7, worker=rank)
            buffer = payload.to_bytes()
            # Receivers size their buffers from the spec alone: nothing about the payload is sent first.
            size = c.wire_nbytes(SHAPE, torch.float32)
            gathered = [torch.empty(size, dtype=torch.uint8) for _ in range(WORLD)] if rank == 0 else None
            senders = list(range(1, WORLD))
            with ledger.measure(Direction.UPLINK, sender=senders, nbytes=[size] * len(senders)):
                dist.gather(buffer, gathered, dst=0)
            if rank == 0:
                errors = []
                for w in senders:
                    received = c.payload_from_bytes(gathered[w], shape=SHAPE, dtype=torch.float32, step=7, worker=w)
                    # Rebuild what worker w compressed locally with its own state and compare.
                    local = build(name, **options).roundtrip(_message(w), step=7, worker=w)
                    errors.append(float((c.decompress(received) - local).abs().max()))
                report[name] = {
                    "sent": buffer.numel(),
                    "payload": payload.nbytes,
                    "ledger": ledger.uplink_bytes,
                    "max_error": max(errors),
                    "seconds": ledger.comm_time_s,
                }
        if rank == 0:
            Path(out).write_text(json.dumps(report))
    finally:
        dist.destroy_process_group()


def test_gathered_payloads_decode_on_the_hub(tmp_path):
    out = tmp_path / "report.json"
    mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True, start_method="spawn")
    report = json.loads(out.read_text())
    assert set(report) == {name for name, _ in CASES}
    for name, r in report.items():
        assert r["sent"] == r["payload"], name
        assert r["ledger"] == (WORLD - 1) * r["payload"], name
        assert r["max_error"] == 0.0, name
        assert r["seconds"] > 0, name
