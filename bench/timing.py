"""What the benchmarks share: best-of-N wall time, and the per-step timing of an engine and of a hand loop."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """The shortest of ``repeat`` wall times of ``fn()``, in seconds (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def engine_round(trainer: Any, steps: int) -> float:
    """Seconds per optimizer step of ``trainer._one_step`` from step 0, epochs back to back."""
    it = itertools.chain.from_iterable(trainer._loader(e) for e in itertools.count())
    trainer.step = 0
    start = time.perf_counter()
    for _ in range(steps):
        trainer._one_step(it, 0)
    return (time.perf_counter() - start) / steps


def hand_loop_round(loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, steps: int) -> float:
    """Seconds per step of a minimal hand-written loop: ``loss_fn()``, backward, step, zero_grad."""
    start = time.perf_counter()
    for _ in range(steps):
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps
