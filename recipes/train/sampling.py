"""Data order as a pure function of (seed, epoch), so a resumed run sees the same batches.

The training order of epoch ``e`` is ``randperm(n, seed + e)``, dealt round-robin to the ranks,
cut to whole batches on every rank (so all ranks take the same number of steps). Resuming in the
middle of an epoch starts the same order ``start`` samples in. The loader's own generator (worker
seeds, the shared seed torch draws per iterator) is seeded from (seed, epoch) as well, so nothing
touches the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class EpochSampler(Sampler[int]):
    """Indices of one rank for one epoch; ``train=False`` gives the rank's strided, unshuffled share."""

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world: int = 1, batch_size: int = 1,
                 train: bool = True, start: int = 0) -> None:  # fmt: skip
        if train:
            order = torch.randperm(n, generator=epoch_generator(seed, epoch))
            per_rank = (n // world // batch_size) * batch_size
            self.indices = order[rank::world][:per_rank].tolist()[start:]
        else:
            self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Training batches each rank takes per epoch (partial batches dropped), as :class:`EpochSampler` deals them."""
    return n // world // batch_size


def steps_per_epoch(n: int, batch_size: int, grad_accum: int = 1, world: int = 1) -> int:
    """Optimizer steps per epoch: the one formula the engine, ``schedule_steps`` and ``show_lr`` use.

    >>> steps_per_epoch(1257, 32), steps_per_epoch(1257, 32, world=2), steps_per_epoch(1257, 16, grad_accum=2)
    (39, 19, 39)
    """
    per_rank = batches_per_epoch(n, batch_size, world)
    if per_rank < grad_accum:
        raise ValueError(
            f"train.batch_size={batch_size} x grad_accum={grad_accum} x {world} process(es) is larger than the "
            f"training set ({n} samples): not one optimizer step fits in an epoch; lower train.batch_size"
        )
    return per_rank // grad_accum


def make_loader(dataset: Dataset, *, batch_size: int, seed: int, epoch: int, collate: Callable[[list[Any]], Any],
                rank: int = 0, world: int = 1, train: bool = True, start_batch: int = 0, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader:  # fmt: skip
    """A DataLoader for epoch ``epoch`` that skips the first ``start_batch`` batches of this rank."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)  # per-sample augmentation seeds follow (seed, epoch, index)
    sampler = EpochSampler(len(dataset), seed, epoch, rank, world, batch_size, train, start_batch * batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        drop_last=train,
        generator=epoch_generator(seed + 7, epoch),
        pin_memory=pin_memory,
        persistent_workers=False,
    )
