"""Exponential moving average of a model's trainable weights (timm ``ModelEmaV3`` in spirit, minimal)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """``ema = decay * ema + (1 - decay) * weights`` after each optimizer step, for trainable tensors only.

    Frozen parameters are shared with the live model, not copied (LoRA on a large model keeps one
    copy of the frozen base); buffers are copied after each update. ``warmup=True`` uses
    ``min(decay, (1 + step) / (10 + step))`` so early averages are not stuck at the initial weights.
    The EMA module lives on the model's device and is never trained.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema.decay must lie in (0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
        self.module = copy.deepcopy(model, memo=dict(frozen)).eval()
        self.averaged = [n for n, p in model.named_parameters() if p.requires_grad]
        own = dict(self.module.named_parameters())
        self._ema = [own[n] for n in self.averaged]
        for p in self._ema:
            p.requires_grad_(False)
        self.frozen_names = {n for n, p in model.named_parameters() if not p.requires_grad}

    @classmethod
    def from_option(cls, model: nn.Module, option: Any) -> ModelEMA | None:
        """``train.ema``: None / False (no EMA), a decay, or ``dict(decay=..., warmup=...)``."""
        if not option:
            return None
        return cls(model, **({"decay": option} if isinstance(option, int | float) else option))

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        src = dict(model.named_parameters())
        pairs = [
            (e, src[n].detach()) for e, n in zip(self._ema, self.averaged, strict=True) if e.dtype.is_floating_point
        ]
        if pairs:
            torch._foreach_lerp_([e for e, _ in pairs], [s for _, s in pairs], 1.0 - d)
        for e, s in zip(self.module.buffers(), model.buffers(), strict=True):
            e.copy_(s)

    def state_dict(self, full: bool = False) -> dict[str, torch.Tensor]:
        """The averaged tensors and the buffers; ``full`` adds the frozen rest (shared with the model)."""
        return {k: v for k, v in self.module.state_dict().items() if full or k not in self.frozen_names}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing, unexpected = self.module.load_state_dict(dict(state), strict=False)
        if unexpected or set(missing) - self.frozen_names:
            raise ValueError(
                f"the checkpoint's EMA does not fit this model (missing {sorted(set(missing) - self.frozen_names)[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
