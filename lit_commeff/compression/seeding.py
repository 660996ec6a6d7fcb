"""Seed schedule: every random choice is a pure function of (seed, step, worker, key).

Sender and receiver derive the same generator from the same ids, so random index sets never travel.
Index sets are drawn on a CPU generator and then moved to the tensor's device, which makes them
identical whether a run uses CPU or CUDA tensors, the simulator or ``torch.distributed``.
"""

from __future__ import annotations

import math
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
    """Draw ``k`` distinct indices uniformly from ``range(d)``; sorted int64 on the CPU.

    Never sorts or permutes all of ``range(d)`` for large ``d``: the distinct values of a stream of
    uniform draws form an exchangeable random set, so a uniform ``k``-subset of them is a uniform
    ``k``-subset of ``range(d)``; more than half of ``range(d)`` is drawn as the complement of a
    uniform ``(d - k)``-subset.
    """
    if k >= d:
        return torch.arange(d)
    if d < 256:
        return torch.randperm(d, generator=g)[:k].sort().values
    if 2 * k > d:
        return _complement(d, sample_indices(d, d - k, g))
    # Enough draws that the expected number of distinct values exceeds k by a few standard deviations.
    target = k + 4 * math.isqrt(k) + 16
    draws = math.ceil(math.log1p(-target / d) / math.log1p(-1 / d))
    uniq = _distinct(d, torch.randint(d, (draws,), generator=g))
    while uniq.numel() < k:
        more = torch.randint(d, (2 * (k - uniq.numel()) + 16,), generator=g)
        uniq = _distinct(d, torch.cat([uniq, more]))
    if uniq.numel() > k:  # drop a uniform subset of the (few) extra values
        uniq = uniq[_complement(uniq.numel(), sample_indices(uniq.numel(), uniq.numel() - k, g))]
    return uniq


def _distinct(d: int, values: Tensor) -> Tensor:
    """Sorted distinct values: a sort for few values, an O(d) presence mask for many."""
    if values.numel() * 64 < d:
        return torch.unique(values)
    present = torch.zeros(d, dtype=torch.bool)
    present[values] = True
    return present.nonzero().squeeze(1)


def _complement(d: int, drop: Tensor) -> Tensor:
    """Sorted ``range(d)`` without ``drop``."""
    keep = torch.ones(d, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().squeeze(1)
