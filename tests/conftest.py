"""Shared fixtures: the compressor catalogue every contract test runs over."""

from __future__ import annotations

import pytest
import torch

# (registry name, options): one entry per compressor family and option that changes the wire format.
COMPRESSOR_CASES: list[tuple[str, dict]] = [
    ("identity", {}),
    ("randk", {"ratio": 0.1}),
    ("randk", {"k": 7}),
    ("randk", {"ratio": 0.25, "shared_indices": True}),
    ("topk", {"ratio": 0.1}),
    ("topk", {"k": 3}),
    ("qsgd", {"s": 1}),
    ("qsgd", {"s": 3, "bucket_size": 16}),
    ("qsgd", {"s": 127}),
    ("qsgd", {"s": 300}),
    ("sign", {}),
    ("fp16", {}),
    ("bf16", {}),
    ("powersgd", {"rank": 2}),
    ("powersgd", {"rank": 3, "reshape": "square"}),
]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def case_id(case: tuple[str, dict]) -> str:
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items())


@pytest.fixture(params=COMPRESSOR_CASES, ids=[case_id(c) for c in COMPRESSOR_CASES])
def compressor_case(request: pytest.FixtureRequest) -> tuple[str, dict]:
    return request.param


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param
