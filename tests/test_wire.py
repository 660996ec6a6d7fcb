"""The packed message: values rounded to the wire dtype, the header restored bit for bit."""

from __future__ import annotations

import pytest
import torch

from lit_commeff.transport.wire import pack, round_values, unpack


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_header_travels_exactly_and_the_values_rounded(dtype):
    values = torch.randn(3, 10, dtype=dtype, generator=torch.Generator().manual_seed(0))
    # integers a bf16 cannot hold (257, 12345), a fraction, -0.0 and a huge value
    header = torch.tensor([[257.0, 12345.0, 0.1], [-0.0, 2.0**60, 1.0], [3.0, 0.0, 1e-30]], dtype=dtype)
    message = torch.cat([values, header], dim=-1)
    wire = pack(message, 10, torch.bfloat16)
    assert wire.dtype == torch.bfloat16
    assert wire.shape == (3, 10 + 3 * dtype.itemsize // 2)
    back = unpack(wire, 10, dtype)
    assert back.dtype == dtype and back.shape == message.shape
    assert torch.equal(
        back[:, 10:].view(torch.int16 if dtype == torch.float32 else torch.int32),
        header.view(torch.int16 if dtype == torch.float32 else torch.int32),
    )  # bit for bit, -0.0 included
    assert torch.equal(back[:, :10], values.to(torch.bfloat16).to(dtype))
    assert not torch.equal(back[:, :10], values)
    assert torch.equal(round_values(message, 10, torch.bfloat16).view(torch.uint8), back.view(torch.uint8))


def test_a_one_dimensional_slice_and_no_wire_dtype():
    message = torch.arange(12, dtype=torch.float32) + 0.3
    tail = message[2:]  # a view at an offset the header's reinterpretation must not depend on
    assert torch.equal(unpack(pack(tail, 7, torch.bfloat16), 7, torch.float32)[7:], tail[7:])
    assert pack(message, 7, None) is message and unpack(message, 7, torch.float32) is message
    assert round_values(message, 7, None) is message
