"""Seed schedule: every random choice is a pure function of (seed, step, worker, key).

Sender and receiver derive the same generator from the same ids, so random index sets never travel.
Index sets are drawn on a CPU generator and then moved to the tensor's device, which makes them
identical whether a run uses CPU or CUDA tensors, the simulator or ``torch.distributed``.
"""

from __future__ import annotations

import zlib

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


def generator(
    seed: int, step: int, worker: int, key: str = "", stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator on ``device`` seeded from the schedule."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, step, worker, key, stream))
    return g


def sample_indices(d: int, k: int, g: torch.Generator) -> Tensor:
    """``k`` distinct indices drawn uniformly from ``range(d)``, sorted, as int64 on the CPU.

    Cost is O(k log k) for ``k`` much smaller than ``d``: the first ``k`` distinct values of a stream
    of uniform draws form a uniform ``k``-subset. Dense draws fall back to a permutation.
    """
    if 4 * k >= d:
        return torch.randperm(d, generator=g)[:k].sort().values
    draws = torch.randint(d, (k + k // 4 + 16,), generator=g)
    while True:
        uniq, inverse = torch.unique(draws, sorted=True, return_inverse=True)
        if uniq.numel() >= k:
            position = torch.arange(draws.numel())
            first = torch.full((uniq.numel(),), draws.numel(), dtype=torch.int64)
            first = first.scatter_reduce(0, inverse, position, reduce="amin")
            return uniq[first.argsort()[:k]].sort().values
        draws = torch.cat([draws, torch.randint(d, (k - uniq.numel() + 16,), generator=g)])
