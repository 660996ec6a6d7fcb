from __future__ import annotations

import math

import pytest
import torch

from lit_commeff.compression.bitpack import pack_bits, packed_nbytes, unpack_bits


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("n", [1, 7, 8, 9, 64, 1001])
def test_pack_unpack_roundtrip(bits, n):
    g = torch.Generator().manual_seed(bits * 1000 + n)
    codes = torch.randint(0, 2**bits, (n,), generator=g)
    codes[0] = 2**bits - 1  # the largest code survives
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(n, bits) == math.ceil(n * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, n), codes)


def test_one_bit_layout_is_little_endian():
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1, 1]), 1).tolist() == [0b10000001, 1]


@pytest.mark.parametrize("bits", [0, 17])
def test_bits_out_of_range(bits):
    with pytest.raises(ValueError, match=r"bits: bits=.* 1 <= bits <= 16"):
        pack_bits(torch.zeros(3, dtype=torch.int64), bits)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8, 12, 16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_unpack_to_other_dtypes(bits, dtype):
    codes = torch.randint(0, 2**bits, (37,), generator=torch.Generator().manual_seed(bits))
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits, 37, dtype=dtype), codes.to(dtype))
