"""The one place the framework talks to ``torch.distributed`` outside DDP itself: device, gather, mean, rank."""

from __future__ import annotations

import os
from typing import Any

import torch

from recipes.train.errors import BadInput


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


def init_device(requested: str | None, world: int) -> tuple[int, torch.device]:
    """(rank, device) of this process; under torchrun (``world`` > 1) the process group is joined here.

    ``requested`` is ``train.device`` (None: the GPU when one is visible); plain ``cuda`` picks ``LOCAL_RANK``'s GPU.
    """
    want = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput(
            f"train.device={want!r} but no CUDA GPU is visible here; set train.device='cpu' or leave it unset"
        )
    if want == "cuda":
        want = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(torch.device(want))
    device = torch.device(want)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return int(os.environ.get("RANK", "0")), device


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is set on this or any other rank (every rank gets the same answer)."""
    if not is_distributed():
        return flag
    t = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item())
