"""Per-group gradient norm, update norm and the cosine between consecutive updates.

Measured on the optimizer's own groups, so a layer-decayed or LoRA/norm hybrid run shows each
group's dynamics by name. Measuring costs one copy of the trainable weights, so the engine asks
for it at the last two steps of each epoch (one cosine per epoch), or every step with
``strategy.log_grad_norms`` / ``train.log_grad_norms``.
"""

from __future__ import annotations

import math

import torch

from recipes.train.errors import NonFiniteLoss


def _flat(ts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).float() for t in ts]) if ts else torch.zeros(0)


class UpdateTracker:
    """``before(optimizer)`` just before ``optimizer.step()``, ``after(optimizer)`` just after."""

    def __init__(self) -> None:
        self._old: list[list[torch.Tensor]] | None = None
        self._grad_norms: list[float] = []
        self._prev: dict[int, torch.Tensor] = {}
        self._prev_step: int | None = None

    @staticmethod
    def due(step: int, steps_per_epoch: int, total_steps: int, every_step: bool) -> bool:
        """Measure at this step? Every step with ``every_step``; else the last two of each epoch (one cosine each)."""
        pos = step % steps_per_epoch
        return every_step or pos >= steps_per_epoch - 2 or step >= total_steps - 2

    @torch.no_grad()
    def before(self, optimizer: torch.optim.Optimizer) -> None:
        self._old = [[p.detach().clone() for p in g["params"]] for g in optimizer.param_groups]
        self._grad_norms = [
            float(_flat([p.grad for p in g["params"] if p.grad is not None]).norm()) for g in optimizer.param_groups
        ]

    @torch.no_grad()
    def after(self, optimizer: torch.optim.Optimizer, step: int) -> list[dict[str, float | str | int]]:
        """One row per group: grad_norm, update_norm and update_cos (vs the previous measured step)."""
        if self._old is None:
            return []
        rows = []
        consecutive = self._prev_step == step - 1
        current: dict[int, torch.Tensor] = {}
        for i, (g, old) in enumerate(zip(optimizer.param_groups, self._old, strict=False)):
            delta = _flat([p.detach() - o for p, o in zip(g["params"], old, strict=True)])
            current[i] = delta
            cos = float("nan")
            prev = self._prev.get(i)
            if consecutive and prev is not None and prev.numel() == delta.numel():
                denom = float(prev.norm() * delta.norm())
                cos = float(prev @ delta) / denom if denom > 0 else float("nan")
            rows.append(
                {
                    "step": step,
                    "group": g.get("name", str(i)),
                    "grad_norm": self._grad_norms[i],
                    "update_norm": float(delta.norm()),
                    "update_cos": cos,
                }
            )
        self._prev, self._prev_step, self._old = current, step, None
        return rows


def check_gradients(optimizer: torch.optim.Optimizer, step: int) -> None:
    """A finite loss can still give an inf gradient: stop (``NonFiniteLoss``) before that step touches the weights.

    One fused norm per device over all gradients (the same pass ``clip_grad_norm_`` makes); under DDP
    the gradients are already all-reduced, so every rank stops at the same step.
    """
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if not math.isfinite(float(norm)):
        bad = next(
            g["name"]
            for g in optimizer.param_groups
            if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in g["params"])
        )
        raise NonFiniteLoss(
            f"gradient is {float(norm)} at step {step} (first in group {bad!r}); the update was not applied"
        )
