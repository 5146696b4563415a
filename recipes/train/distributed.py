"""The one place the framework talks to ``torch.distributed`` outside DDP itself: gather, mean, rank."""

from __future__ import annotations

from typing import Any

import torch


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` on one process): evaluation shards, RNG states."""
    if not is_distributed():
        return [obj]
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, obj)
    return parts


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of a float over every rank (the float itself on one process)."""
    if not is_distributed():
        return value
    import torch.distributed as dist

    t = torch.tensor([value], device=device, dtype=torch.float64 if device.type != "mps" else torch.float32)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes files every rank would otherwise write."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
