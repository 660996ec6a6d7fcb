"""Which training rows each rank holds: the partitioning schemes shared by the recipes.

Every rank calls the same function with the same arguments (and its own ``rank``) and gets its own
shard, so no data is exchanged and no sampler is needed (the Trainer runs with
``use_distributed_sampler=False``). Two schemes:

* ``"iid"``: a seeded random permutation of the rows, cut into ``world_size`` equal contiguous parts;
  the last ``n mod world_size`` rows of the permutation are dropped so every rank has the same size.
* ``"by_group"``: rows grouped by a key (a customer segment, a cell, a branch, …). Whole groups go to
  ranks, largest first, each to the rank with the fewest rows so far (greedy longest-processing-time
  balancing); each rank's rows are then cut (a seeded random subset) to the smallest rank's size, so
  every rank takes the same number of steps per epoch. This gives realistic non-IID shards.

Example:
    >>> partition_indices(10, world_size=2, rank=0, scheme="iid", seed=0).tolist()
    [2, 3, 4, 6, 7]
    >>> groups = ["a", "a", "b", "c", "c", "c"]
    >>> [partition_indices(groups, world_size=2, rank=r, scheme="by_group").tolist() for r in (0, 1)]
    [[3, 4, 5], [0, 1, 2]]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

#: The partitioning schemes :func:`partition_indices` accepts.
PARTITION_SCHEMES: tuple[str, ...] = ("iid", "by_group")
#: How ``by_group`` evens out shard sizes: ``"cut"`` every shard to the smallest, or ``"resample"`` (keep
#: every row; the loaders then draw the same number of samples per epoch on every rank).
BALANCE_SCHEMES: tuple[str, ...] = ("cut", "resample")


def check_scheme(scheme: str) -> None:
    """Raise ``ValueError`` for an unknown partitioning scheme."""
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(
            f"partition: partition={scheme!r} is unknown; use one of {list(PARTITION_SCHEMES)} "
            "('iid': random equal shards; 'by_group': whole groups of group_column per rank)."
        )


def _check_world(world_size: int, rank: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int | np.integer) or world_size < 1:
        raise ValueError(f"world_size: world_size={world_size!r} is invalid; use an integer >= 1.")
    if isinstance(rank, bool) or not isinstance(rank, int | np.integer) or not 0 <= rank < world_size:
        raise ValueError(f"rank: rank={rank!r} is out of range for world_size={world_size}; use 0..{world_size - 1}.")


def assign_groups(sizes: dict[Hashable, int], world_size: int) -> list[list[Hashable]]:
    """Assign whole groups to ranks, balancing the rows per rank (greedy, largest group first).

    Groups are taken in decreasing size (ties: by ``str(key)``), each going to the rank holding the
    fewest rows so far (ties: the lowest rank). Deterministic: no randomness involved.

    Args:
        sizes: Group key -> number of rows.
        world_size: Number of ranks.

    Returns:
        For every rank, the keys of its groups (in assignment order).

    Raises:
        ValueError: Fewer groups than ranks (some rank would get no data).
    """
    _check_world(world_size, 0)
    if len(sizes) < world_size:
        shown = sorted(map(str, sizes))[:10]
        raise ValueError(
            f"group_column: partition='by_group' needs at least as many groups as ranks, but there are "
            f"{len(sizes)} groups {shown} for {world_size} ranks; pick a column with more distinct values, use "
            "fewer devices, or use partition='iid'."
        )
    order = sorted(sizes, key=lambda key: (-sizes[key], str(key)))
    loads = [0] * world_size
    groups: list[list[Hashable]] = [[] for _ in range(world_size)]
    for key in order:
        target = min(range(world_size), key=lambda r: (loads[r], r))
        groups[target].append(key)
        loads[target] += sizes[key]
    return groups


def _as_keys(groups: Sequence[Any] | np.ndarray | Any) -> np.ndarray:
    keys = np.asarray(groups, dtype=object)
    if keys.ndim != 1:
        raise ValueError(f"groups: expected one group key per row (a 1-D sequence), got shape {keys.shape}.")
    return keys


def partition_all(
    n_or_groups: int | Sequence[Any] | np.ndarray,
    world_size: int,
    scheme: str = "iid",
    seed: int = 0,
    balance: str = "cut",
) -> list[np.ndarray]:
    """Every rank's row indices (see :func:`partition_indices`); element ``r`` is rank ``r``'s shard.

    ``balance="resample"`` (``by_group`` only) keeps every rank's whole groups, so shards differ in size.
    """
    check_scheme(scheme)
    if balance not in BALANCE_SCHEMES:
        raise ValueError(
            f"balance: balance={balance!r} is unknown; use 'resample' (keep every row, equal samples per epoch) "
            "or 'cut' (cut every shard to the smallest)."
        )
    _check_world(world_size, 0)
    if scheme == "iid":
        n = int(n_or_groups) if isinstance(n_or_groups, int | np.integer) else len(n_or_groups)
        if n < 0:
            raise ValueError(f"n_or_groups: the number of rows must be >= 0, got {n}.")
        perm = np.random.default_rng(seed).permutation(n)
        part = n // world_size
        return [np.sort(perm[r * part : (r + 1) * part]) for r in range(world_size)]
    if isinstance(n_or_groups, int | np.integer):
        raise ValueError(
            "n_or_groups: partition='by_group' needs the group key of every row (a sequence), not a row count."
        )
    keys = _as_keys(n_or_groups)
    rows: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys.tolist()):
        rows.setdefault(key, []).append(i)
    assignment = assign_groups({key: len(idx) for key, idx in rows.items()}, world_size)
    shards = [np.sort(np.concatenate([np.asarray(rows[key], dtype=np.int64) for key in owned])) for owned in assignment]
    if balance == "resample":
        return [shard.astype(np.int64) for shard in shards]
    size = min(len(s) for s in shards)
    out = []
    for r, shard in enumerate(shards):
        if len(shard) > size:  # a seeded random subset, so every group of the rank keeps its share
            rng = np.random.default_rng([seed, r])
            shard = np.sort(rng.choice(shard, size=size, replace=False))
        out.append(shard.astype(np.int64))
    return out


def partition_indices(
    n_or_groups: int | Sequence[Any] | np.ndarray, world_size: int, rank: int, scheme: str = "iid", seed: int = 0
) -> np.ndarray:
    """The row indices (sorted, ``int64``) that rank ``rank`` of ``world_size`` trains on.

    Args:
        n_or_groups: ``"iid"``: the number of rows (or any sequence, whose length is used).
            ``"by_group"``: the group key of every row (strings, integers, … compared with ``==``).
        world_size: Number of ranks (>= 1).
        rank: This rank, ``0 <= rank < world_size``.
        scheme: ``"iid"`` or ``"by_group"`` (see the module docstring).
        seed: Seed of the permutation (``iid``) and of the cut to equal sizes (``by_group``); must be the
            same on every rank.

    Returns:
        Indices into the rows; disjoint across ranks, and of the same length on every rank.

    Raises:
        ValueError: Unknown scheme, bad ``world_size``/``rank``, or (``by_group``) fewer groups than ranks.
    """
    _check_world(world_size, rank)
    return partition_all(n_or_groups, world_size, scheme, seed)[rank]


def group_assignment(groups: Sequence[Any] | np.ndarray, world_size: int) -> list[list[Hashable]]:
    """The group keys each rank holds under ``"by_group"`` (for logging and tests)."""
    counts: dict[Hashable, int] = {}
    for key in _as_keys(groups).tolist():
        counts[key] = counts.get(key, 0) + 1
    return assign_groups(counts, world_size)


def interleaved_shard(n: int, world_size: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s equal interleaved part of ``n`` rows: ``rank, rank + world_size, …``.

    The last ``n mod world_size`` rows are left out so every rank holds the same number (used for the
    validation set, whose metrics are synchronised across ranks).
    """
    _check_world(world_size, rank)
    usable = n - n % world_size
    return np.arange(rank, usable, world_size, dtype=np.int64)
