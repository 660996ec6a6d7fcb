"""A training DataLoader that resumes mid-epoch exactly: same batches, same order, as if never stopped.

Lightning saves the state of a training loader that has ``state_dict``/``load_state_dict`` into its
checkpoints and hands it back on resume. The order of epoch ``e`` is a permutation drawn from a
generator seeded with ``(seed, e)`` only, so it never depends on how many epochs this process has run,
and the position inside the epoch is the number of batches the *trainer* has processed (the loader's
own count would include the batch Lightning pre-fetches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_EPOCH_STRIDE = 1_000_003  # keeps the (seed, epoch) seeds of different seeds apart


class EpochSampler(Sampler[int]):
    """Shuffles ``n`` indices anew each epoch from ``(seed, epoch)``; can start an epoch part-way.

    Args:
        n: Number of samples.
        seed: Seed of the permutations.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
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
        """The permutation of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed + _EPOCH_STRIDE * epoch)
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[int]:
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        return iter(self.order(self.epoch)[skip:].tolist())

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A shuffling, ``drop_last`` DataLoader whose place inside an epoch is saved in Lightning checkpoints.

    Args:
        dataset: The rank's training samples.
        batch_size: Samples per batch.
        seed: Seed of the per-epoch permutations (give each rank its own).
        progress: Returns ``(epoch, batches processed in it)`` from the trainer at save time; without it
            the state records the start of the epoch the sampler is in.
        **kwargs: Other :class:`~torch.utils.data.DataLoader` options (not ``shuffle``/``sampler``).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        progress: Callable[[], tuple[int, int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed), drop_last=True, **kwargs
        )
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """Where training is: the epoch and the batches already processed in it."""
        epoch, batches = self.progress() if self.progress is not None else (self.sampler.epoch, 0)
        return {"epoch": int(epoch), "batches": int(batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved place.

        Lightning stores global rank 0's loader state and hands it to every rank; the place (epoch,
        batches) is the same on every rank, while each rank's own seed stays what its config says.
        """
        self.sampler.resume(int(state["epoch"]), int(state["batches"]) * self.batch_size)


def trainer_progress(owner: Any) -> Callable[[], tuple[int, int]]:
    """``progress`` for a loader made by a LightningDataModule: reads its trainer's fit-loop counters."""

    def progress() -> tuple[int, int]:
        trainer = getattr(owner, "trainer", None)
        if trainer is None:
            return 0, 0
        loop = trainer.fit_loop
        return loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.processed

    return progress
