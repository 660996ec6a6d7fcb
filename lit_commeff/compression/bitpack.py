"""Pack small unsigned integer codes into a dense ``uint8`` stream, ``bits`` bits per code.

``n`` codes of ``bits`` bits take exactly ``ceil(n * bits / 8)`` bytes, little-endian within a group.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that :func:`pack_bits` produces for ``n`` codes of ``bits`` bits."""
    return math.ceil(n * bits / 8)


def pack_bits(codes: Tensor, bits: int) -> Tensor:
    """Pack a 1-D tensor of codes in ``[0, 2**bits)`` into ``uint8``."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits: bits={bits} is out of range; bit packing supports 1 <= bits <= 16.")
    n = codes.numel()
    if bits == 8:
        return codes.to(torch.uint8)
    if bits == 16:
        return codes.to(torch.int32).to(torch.int16).view(torch.uint8)
    if bits in (1, 2, 4):
        # Whole codes per byte: shift and add in uint8 (bits do not overlap, so the sum is an OR).
        per_byte = 8 // bits
        if n % per_byte == 0:
            padded = codes.to(torch.uint8)
        else:
            padded = torch.zeros(math.ceil(n / per_byte) * per_byte, dtype=torch.uint8, device=codes.device)
            padded[:n] = codes
        shifts = torch.arange(0, 8, bits, device=codes.device, dtype=torch.uint8)
        return (padded.view(-1, per_byte) << shifts).sum(dim=1, dtype=torch.uint8)
    if bits <= 7:
        # Groups of 8 codes make exactly `bits` bytes; 8 * 7 = 56 bits fit an int64 accumulator.
        padded = torch.zeros(math.ceil(n / 8) * 8, dtype=torch.int64, device=codes.device)
        padded[:n] = codes
        shifts = torch.arange(0, 8 * bits, bits, device=codes.device, dtype=torch.int64)
        words = (padded.view(-1, 8) << shifts).sum(dim=1)
        byte_shifts = torch.arange(0, 8 * bits, 8, device=codes.device, dtype=torch.int64)
        out = ((words.unsqueeze(1) >> byte_shifts) & 0xFF).to(torch.uint8).reshape(-1)
        return out[: packed_nbytes(n, bits)]
    # 9..15 bits: go through an explicit bit matrix (rare: s >= 128 dithering levels).
    shifts = torch.arange(bits, device=codes.device, dtype=torch.int64)
    bit_matrix = ((codes.to(torch.int64).unsqueeze(1) >> shifts) & 1).to(torch.uint8).reshape(-1)
    padded = torch.zeros(packed_nbytes(n, bits) * 8, dtype=torch.uint8, device=codes.device)
    padded[: bit_matrix.numel()] = bit_matrix
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.int32, device=codes.device)
    return (padded.view(-1, 8).to(torch.int32) * weights).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: Tensor, bits: int, n: int, dtype: torch.dtype = torch.int64) -> Tensor:
    """Inverse of :func:`pack_bits`: ``n`` codes, converted to ``dtype`` (int64 or a float dtype)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits: bits={bits} is out of range; bit packing supports 1 <= bits <= 16.")
    if bits == 8:
        return packed[:n].to(dtype)
    if bits == 16:
        return (packed.view(torch.int16).to(torch.int64)[:n] & 0xFFFF).to(dtype)
    if bits in (1, 2, 4):
        shifts = torch.arange(0, 8, bits, device=packed.device, dtype=torch.uint8)
        codes = (packed.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(-1)[:n].to(dtype)
    if bits <= 7:
        groups = math.ceil(n / 8)
        padded = torch.zeros(groups * bits, dtype=torch.int64, device=packed.device)
        padded[: packed.numel()] = packed
        byte_shifts = torch.arange(0, 8 * bits, 8, device=packed.device, dtype=torch.int64)
        words = (padded.view(groups, bits) << byte_shifts).sum(dim=1)
        shifts = torch.arange(0, 8 * bits, bits, device=packed.device, dtype=torch.int64)
        codes = (words.unsqueeze(1) >> shifts) & ((1 << bits) - 1)
        return codes.reshape(-1)[:n].to(dtype)
    bit_shifts = torch.arange(8, device=packed.device, dtype=torch.int64)
    bit_stream = ((packed.to(torch.int64).unsqueeze(1) >> bit_shifts) & 1).reshape(-1)[: n * bits]
    weights = 1 << torch.arange(bits, device=packed.device, dtype=torch.int64)
    return (bit_stream.view(n, bits) * weights).sum(dim=1).to(dtype)
