"""The random draws of a diffusion training step, per sample: noise, timestep, caption dropout, latent sample.

In training each sample draws from its own generator seeded from (run seed, optimizer step, dataset
index) instead of the process's global RNG, so what a sample draws does not depend on which rank
holds it or what else is in its batch: a run on N processes with batch B draws what one process with
batch N x B draws (losses equal step for step, tests/test_diffusion_distributed.py), and a resumed run
draws what the uninterrupted one drew. Evaluation passes one fixed generator for the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Draw = torch.Generator | list[torch.Generator] | None

_MIX = 1_000_003  # a prime: (seed, step, index) -> one 63-bit seed without collisions for realistic values


def sample_generators(seed: int, step: int, indices: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One generator per sample, seeded from (seed, step, dataset index)."""
    return [
        torch.Generator(device).manual_seed(((int(seed) * _MIX + int(step)) * _MIX + int(i)) % (2**63 - 1))
        for i in indices
    ]


def randn(shape: Sequence[int], generator: Draw, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.randn(shape)``; with a list of generators, row ``i`` from generator ``i``."""
    if not isinstance(generator, list):
        return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
    row = (1, *shape[1:])
    return torch.cat([torch.randn(row, generator=g, device=device, dtype=dtype) for g in generator])


def rand(n: int, generator: Draw, device: torch.device) -> torch.Tensor:
    """``torch.rand(n)``, per sample with a list of generators."""
    if not isinstance(generator, list):
        return torch.rand(n, generator=generator, device=device)
    return torch.cat([torch.rand(1, generator=g, device=device) for g in generator])


def randint(high: int, n: int, generator: Draw, device: torch.device) -> torch.Tensor:
    """``torch.randint(0, high, (n,))``, per sample with a list of generators."""
    if not isinstance(generator, list):
        return torch.randint(0, high, (n,), generator=generator, device=device)
    return torch.cat([torch.randint(0, high, (1,), generator=g, device=device) for g in generator])
