"""Seed schedule: every random choice is a pure function of (seed, step, worker, key).

Sender and receiver derive the same randomness from the same ids, so random index sets never travel.
Index sets come from a counter-based generator (SplitMix64 evaluated with int64 tensor arithmetic):
the same ids give the same indices on CPU and CUDA, for one worker or a whole block of workers at
once, in the simulator and under ``torch.distributed``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
#: Worker id used for schedules shared by every worker (e.g. all-reduce-compatible RandK).
SHARED_WORKER = -1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_seed(seed: int, step: int, worker: int, key: str = "", stream: int = 0) -> int:
    """Mix the ids into one 63-bit seed; distinct ids give unrelated streams."""
    z = _splitmix64(seed & _MASK64)
    for part in (step, worker, zlib.crc32(key.encode()), stream):
        z = _splitmix64(z ^ (part & _MASK64))
    return z & ((1 << 63) - 1)


def derive_seeds(
    seed: int, step: int, workers: Sequence[int], key: str = "", stream: int = 0, device: torch.device | str = "cpu"
) -> Tensor:
    """:func:`derive_seed` for a block of workers at once, as an int64 tensor ``(R,)`` (the same values).

    The ids shared by the block are mixed once in Python, the worker ids with wrapping int64 tensor
    arithmetic: no Python loop over workers (the simulator draws for thousands of workers per round).
    """
    z = _splitmix64(_splitmix64(seed & _MASK64) ^ (step & _MASK64))
    ids = torch.as_tensor(workers, dtype=torch.int64, device=device).reshape(-1)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    mixed = splitmix64(ids ^ _to_int64(z), zero)
    mixed = splitmix64(mixed ^ zlib.crc32(key.encode()), zero)
    mixed = splitmix64(mixed ^ _to_int64(stream & _MASK64), zero)
    return mixed & ((1 << 63) - 1)


def generator(
    seed: int, step: int, worker: int, key: str = "", stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator on ``device`` seeded from the schedule."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, step, worker, key, stream))
    return g


def _to_int64(value: int) -> int:
    """Reinterpret an unsigned 64-bit constant as the signed int64 torch stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _to_int64(0x9E3779B97F4A7C15)
_MUL1 = _to_int64(0xBF58476D1CE4E5B9)
_MUL2 = _to_int64(0x94D049BB133111EB)
_STREAM_KEYS = _to_int64(0xD1B54A32D192ED03)


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(seeds: Tensor, counters: Tensor) -> Tensor:
    """The ``counter``-th SplitMix64 output of the stream seeded with ``seed``, elementwise (int64 bits).

    Same values as the scalar :func:`_splitmix64` on ``seed + counter * golden``, computed with
    wrapping int64 arithmetic on any device.
    """
    z = seeds + (counters + 1) * _GOLDEN
    z = (z ^ _shift_right(z, 30)) * _MUL1
    z = (z ^ _shift_right(z, 27)) * _MUL2
    return z ^ _shift_right(z, 31)


def uniform_below(bits: Tensor, d: int) -> Tensor:
    """Map 64 random bits to integers in ``[0, d)`` (top 53 bits modulo d; bias below d / 2^53)."""
    return _shift_right(bits, 11) % d


def block_indices(d: int, k: int, seeds: Tensor) -> Tensor:
    """For each row seed, ``k`` distinct indices drawn uniformly from ``range(d)``, sorted.

    Args:
        d: Dimension.
        k: Indices per row, ``1 <= k <= d``.
        seeds: int64 tensor ``(R,)`` of per-row seeds (see :func:`derive_seed`), on the target device.

    Returns:
        int64 tensor ``(R, k)``, each row sorted. Row r depends on ``seeds[r]`` only, so a block of
        workers and each worker alone get identical sets. Cost O(k log k) per row for ``k`` well below
        ``d``: the distinct values of a stream of uniform draws form an exchangeable set, and the ``k``
        of them with the smallest random keys are a uniform ``k``-subset of ``range(d)``. More than
        half of ``range(d)`` is drawn as the complement of a uniform ``(d - k)``-subset.
    """
    rows = seeds.numel()
    device = seeds.device
    seeds = seeds.reshape(rows, 1)
    if k >= d:
        return torch.arange(d, device=device).expand(rows, d).clone()
    if 2 * k > d:
        drop = block_indices(d, d - k, seeds.reshape(-1) ^ _STREAM_KEYS)
        keep = torch.ones(rows, d, dtype=torch.bool, device=device)
        keep.scatter_(1, drop, False)
        return keep.nonzero()[:, 1].reshape(rows, k)
    if d < 256:  # small d: random keys for every coordinate, k smallest
        keys = splitmix64(seeds, torch.arange(d, device=device))
        return keys.topk(k, dim=1, largest=False).indices.sort(dim=1).values
    # Enough draws that the expected number of distinct values exceeds k by a few standard deviations.
    target = min(k + 4 * math.isqrt(k) + 16, d - 1)
    draws = math.ceil(math.log1p(-target / d) / math.log1p(-1 / d))
    while True:
        values = uniform_below(splitmix64(seeds, torch.arange(draws, device=device)), d).sort(dim=1).values
        duplicate = torch.zeros_like(values, dtype=torch.bool)
        duplicate[:, 1:] = values[:, 1:] == values[:, :-1]
        if int((~duplicate).sum(dim=1).min()) >= k:
            break
        draws *= 2  # rare: some row drew too few distinct values; a longer prefix of the same stream
    keys = splitmix64(seeds ^ _STREAM_KEYS, values)
    keys = keys.masked_fill(duplicate, torch.iinfo(torch.int64).max)
    # Keep the k smallest keys = drop the (draws - k) largest: duplicates (max key) first, then a few
    # extra distinct values. The drop set is small, so this top-k is cheap.
    dropped = keys.topk(draws - k, dim=1, largest=True, sorted=False).indices
    keep = torch.ones_like(duplicate).scatter_(1, dropped, False)
    # values are sorted along each row, so masking keeps them sorted: no re-sort
    return values[keep].reshape(rows, k)
