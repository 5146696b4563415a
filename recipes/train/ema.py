"""Exponential moving average of a model's weights (timm ``ModelEmaV3`` in spirit, minimal)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after each optimizer step; buffers are copied.

    ``warmup=True`` uses ``min(decay, (1 + step) / (10 + step))`` so early averages are not stuck
    at the initial weights. The EMA module lives on the model's device and is never trained.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay must lie in (0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_p = [p for p in self.module.parameters()]
        src_p = [p.detach() for p in model.parameters()]
        floats = [(e, s) for e, s in zip(ema_p, src_p, strict=True) if e.dtype.is_floating_point]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [s for _, s in floats], 1.0 - d)
        for e, s in zip(self.module.buffers(), model.buffers(), strict=True):
            e.copy_(s)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
