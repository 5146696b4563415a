"""Data order as a pure function of (seed, epoch), so a resumed run sees the same batches.

The training order of epoch ``e`` is ``randperm(n, seed + e)``, dealt round-robin to the ranks,
cut to whole batches on every rank (so all ranks take the same number of steps). Resuming in the
middle of an epoch starts the same order ``start`` samples in. The loader's own generator (worker
seeds, the shared seed torch draws per iterator) is seeded from (seed, epoch) as well, so nothing
touches the global RNG.

Bucketed data (a dataset whose ``bucket_keys()`` gives more than one key, e.g. aspect-ratio buckets
of captioned images) is batched by :class:`BucketBatchSampler` instead: every batch holds samples of
one bucket only. Epoch ``e`` shuffles the samples with ``randperm(n, seed + e)``, cuts each bucket
into batches in that order, shuffles the batches with the same generator and deals them round-robin
to the ranks, cut to the same count on every rank. The last, partial batch of a bucket is kept
(every sample is seen each epoch, as kohya's sd-scripts do) or, with the dataset's
``bucket_drop_last=True``, left out (every batch full; the left-out samples change every epoch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))


class EpochSampler(Sampler[int]):
    """Indices of one rank for one epoch; ``train=False`` gives the rank's strided, unshuffled share."""

    def __init__(
        self,
        n: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        batch_size: int = 1,
        train: bool = True,
        start: int = 0,
    ) -> None:
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


def bucket_keys(dataset: Any) -> list[Hashable] | None:
    """The dataset's bucket of each sample when it has more than one bucket, else None (plain batching)."""
    fn = getattr(dataset, "bucket_keys", None)
    keys = fn() if callable(fn) else None
    return list(keys) if keys is not None and len(set(keys)) > 1 else None


def _bucket_batches(
    indices: Sequence[int], keys: Sequence[Hashable], batch_size: int, drop_last: bool
) -> list[list[int]]:
    """``indices`` grouped by bucket (buckets in order of first appearance), each cut into batches in order."""
    groups: dict[Hashable, list[int]] = {}
    for i in indices:
        groups.setdefault(keys[i], []).append(i)
    out = []
    for members in groups.values():
        stop = len(members) - len(members) % batch_size if drop_last else len(members)
        out += [members[k : k + batch_size] for k in range(0, stop, batch_size)]
    return out


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of one rank for one epoch, each from one bucket; see the module docstring.

    ``train=False``: the rank's strided share, unshuffled, grouped by bucket, partial batches kept.
    ``start``: batches of this rank already consumed (a mid-epoch resume skips them).
    """

    def __init__(
        self,
        keys: Sequence[Hashable],
        seed: int,
        epoch: int,
        rank: int = 0,
        world: int = 1,
        batch_size: int = 1,
        train: bool = True,
        start: int = 0,
        drop_last: bool = False,
    ) -> None:
        n = len(keys)
        if train:
            gen = epoch_generator(seed, epoch)
            batches = _bucket_batches(torch.randperm(n, generator=gen).tolist(), keys, batch_size, drop_last)
            order = torch.randperm(len(batches), generator=gen).tolist()
            per_rank = len(batches) // world
            self.batches = [batches[k] for k in order][rank::world][:per_rank][start:]
        else:
            self.batches = _bucket_batches(range(rank, n, world), keys, batch_size, False)

    def __iter__(self) -> Iterator[list[int]]:
        return iter([list(b) for b in self.batches])

    def __len__(self) -> int:
        return len(self.batches)


def bucket_batches_per_epoch(keys: Sequence[Hashable], batch_size: int, world: int = 1, drop_last: bool = False) -> int:
    """Training batches each rank takes per epoch, as :class:`BucketBatchSampler` deals them."""
    sizes: dict[Hashable, int] = {}
    for k in keys:
        sizes[k] = sizes.get(k, 0) + 1
    total = sum(n // batch_size if drop_last else math.ceil(n / batch_size) for n in sizes.values())
    return total // world


def batches_per_epoch(n: int, batch_size: int, world: int = 1) -> int:
    """Training batches each rank takes per epoch (partial batches dropped), as :class:`EpochSampler` deals them."""
    return n // world // batch_size


def steps_per_epoch(n: int, batch_size: int, grad_accum: int = 1, world: int = 1, per_rank: int | None = None) -> int:
    """Optimizer steps per epoch: the one formula the engine, ``schedule_steps`` and ``show_lr`` use.

    >>> steps_per_epoch(1257, 32), steps_per_epoch(1257, 32, world=2), steps_per_epoch(1257, 16, grad_accum=2)
    (39, 19, 39)
    """
    if per_rank is None:
        per_rank = batches_per_epoch(n, batch_size, world)
    if per_rank < grad_accum:
        raise ValueError(
            f"train.batch_size={batch_size} x grad_accum={grad_accum} x {world} process(es) is larger than the "
            f"training set ({n} samples): not one optimizer step fits in an epoch; lower train.batch_size"
        )
    return per_rank // grad_accum


def dataset_steps_per_epoch(dataset: Any, batch_size: int, grad_accum: int = 1, world: int = 1) -> int:
    """:func:`steps_per_epoch` of a dataset, counting bucketed datasets' batches the way they are dealt."""
    keys = bucket_keys(dataset)
    per_rank = None
    if keys is not None:
        per_rank = bucket_batches_per_epoch(keys, batch_size, world, bool(getattr(dataset, "bucket_drop_last", False)))
    return steps_per_epoch(len(dataset), batch_size, grad_accum, world, per_rank)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    collate: Callable[[list[Any]], Any],
    rank: int = 0,
    world: int = 1,
    train: bool = True,
    start_batch: int = 0,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader for epoch ``epoch`` that skips the first ``start_batch`` batches of this rank."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)  # per-sample augmentation seeds follow (seed, epoch, index)
    keys = bucket_keys(dataset)
    if keys is not None:
        drop = bool(getattr(dataset, "bucket_drop_last", False))
        batches = BucketBatchSampler(keys, seed, epoch, rank, world, batch_size, train, start_batch, drop)
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate,
            generator=epoch_generator(seed + 7, epoch),
            pin_memory=pin_memory,
            persistent_workers=False,
        )
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
