"""A training DataLoader that resumes mid-epoch exactly: same batches, same order, as if never stopped.

Lightning saves the state of a training loader that has ``state_dict``/``load_state_dict`` into its
checkpoints and hands it back on resume. The order of epoch ``e`` is a permutation drawn from a
generator seeded with ``(seed, e)`` only, so it never depends on how many epochs this process has run,
and the position inside the epoch is the number of batches the *trainer* has processed (the loader's
own count would include the batch Lightning pre-fetches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_EPOCH_STRIDE = 1_000_003  # keeps the (seed, epoch) seeds of different seeds apart


class EpochSampler(Sampler[int]):
    """Shuffles ``n`` indices anew each epoch from ``(seed, epoch)``; can start an epoch part-way.

    Args:
        n: Number of samples.
        seed: Seed of the permutations.
        num_samples: Samples per epoch (default ``n``). More than ``n`` repeats the shard (fresh
            permutations, concatenated); fewer takes a fresh random subset each epoch. Gives ranks with
            shards of different sizes the same number of steps per epoch.
    """

    def __init__(self, n: int, seed: int, num_samples: int | None = None) -> None:
        if n < 1:
            raise ValueError(f"n: an epoch sampler needs at least one sample, got n={n}.")
        self.n = n
        self.num_samples = n if num_samples is None else int(num_samples)
        self.seed = seed
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples to skip in it)

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        self.epoch = epoch

    def resume(self, epoch: int, skip: int) -> None:
        """Start ``epoch`` after its first ``skip`` samples (every later epoch starts at its beginning)."""
        self._resume = (epoch, skip)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (``num_samples`` indices)."""
        generator = torch.Generator().manual_seed(self.seed + _EPOCH_STRIDE * epoch)
        rounds = -(-self.num_samples // self.n)
        return torch.cat([torch.randperm(self.n, generator=generator) for _ in range(rounds)])[: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        return iter(self.order(self.epoch)[skip:].tolist())

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A shuffling, ``drop_last`` DataLoader whose place inside an epoch is saved in Lightning checkpoints.

    Args:
        dataset: The rank's training samples.
        batch_size: Samples per batch.
        seed: Seed of the per-epoch permutations (give each rank its own).
        progress: Returns ``(epoch, batches processed in it)`` from the trainer at save time; without it
            the state records the start of the epoch the sampler is in.
        num_samples: Samples per epoch (see :class:`EpochSampler`; default: the dataset's size).
        **kwargs: Other :class:`~torch.utils.data.DataLoader` options (not ``shuffle``/``sampler``).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        progress: Callable[[], tuple[int, int]] | None = None,
        num_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        # a map-style dataset has a length; torch's Dataset type leaves __len__ out
        sampler = EpochSampler(len(cast(Sized, dataset)), seed, num_samples)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=True, **kwargs)
        self.progress = progress
        self._epoch_sampler, self._batch_rows = sampler, batch_size  # self.sampler / batch_size, typed

    def state_dict(self) -> dict[str, int]:
        """Where training is: the epoch and the batches already processed in it."""
        epoch, batches = self.progress() if self.progress is not None else (self._epoch_sampler.epoch, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved place.

        Lightning stores global rank 0's loader state and hands it to every rank; the place (epoch,
        batches) is the same on every rank, while each rank's own seed stays what its config says.
        """
        self._epoch_sampler.resume(int(state["epoch"]), int(state["batches"]) * self._batch_rows)


def trainer_progress(owner: Any) -> Callable[[], tuple[int, int]]:
    """``progress`` for a loader made by a LightningDataModule: reads its trainer's fit-loop counters."""

    def progress() -> tuple[int, int]:
        trainer = getattr(owner, "trainer", None)
        if trainer is None:
            return 0, 0
        loop = trainer.fit_loop
        return loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.processed

    return progress
