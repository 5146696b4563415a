"""Step schedules: closed forms of the global step, so resuming needs nothing but the step.

``value(step)`` is the LR of a group whose ``lr_scale`` is 1.0 at global step ``step``
(0-indexed: the ``step``-th optimizer update). ``apply(optimizer, step)`` sets
``group["lr"] = value(step) * group["lr_scale"]`` for every group, so the ratio between any two
groups holds at every step, and a weight-decay schedule (cosine from ``weight_decay`` to
``weight_decay_end``) only touches groups whose weight decay is non-zero, keeping their ratios.

Warm-up is linear from ``warmup_start_lr`` (default 0) to the peak ``lr`` over ``warmup_steps``;
step 0 gets ``warmup_start_lr``, step ``warmup_steps`` the peak (as in timm and transformers).
Floors (``min_lr`` / ``min_lr_ratio``) are relative to each group's own peak by default
(``floor_mode="relative"``: a group at ``lr_scale`` s ends at ``min_lr * s``). With
``floor_mode="absolute"`` every group ends at exactly ``min_lr`` (torch / mmengine ``eta_min``):
that is what some recipes ask for, and it does not keep the ratios between groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from recipes.registry import SCHEDULES

# `*_epochs` keys and the step keys they convert to with `steps_per_epoch`.
EPOCH_KEYS = {
    "warmup_epochs": "warmup_steps",
    "decay_epochs": "decay_steps",
    "step_size_epochs": "step_size",
    "milestones_epochs": "milestones",
}


def _num(where: str, value: Any, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"schedule.{where}: expected a finite number, got {value!r}")
    if value < low:
        raise ValueError(f"schedule.{where} must be >= {low}, got {value}")
    return float(value)


def _check_step(step: int) -> None:
    if step < 0:
        raise ValueError(f"schedule: step must be >= 0 (steps count from 0), got {step}")


class Schedule:
    """Linear warm-up, then ``decay(t)`` from the peak to the floor over the remaining steps."""

    uses_lr = True
    #: the formula itself takes a warm-up longer than the run (Noam): ``fit_warmup`` leaves it alone
    warmup_may_exceed_run = False

    def __init__(
        self,
        total_steps: int,
        lr: float | None = None,
        warmup_steps: int = 0,
        warmup_start_lr: float = 0.0,
        min_lr: float = 0.0,
        min_lr_ratio: float | None = None,
        floor_mode: str = "relative",
        weight_decay: float | None = None,
        weight_decay_end: float | None = None,
    ) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"schedule: total_steps must be a positive int, got {total_steps!r}")
        if self.uses_lr and lr is None:
            raise ValueError(
                "schedule: `lr` (the peak LR of lr_scale 1.0) is required; set it in the schedule or recipe"
            )
        self.total_steps = total_steps
        self.lr = _num("lr", lr) if lr is not None else 0.0
        self.warmup_steps = int(_num("warmup_steps", warmup_steps))
        if self.warmup_steps > total_steps:
            raise ValueError(
                f"schedule: warmup_steps={self.warmup_steps} is longer than the schedule "
                f"(total_steps={total_steps}); shorten the warm-up or train longer"
            )
        self.warmup_start_lr = _num("warmup_start_lr", warmup_start_lr)
        if min_lr_ratio is not None:
            if min_lr:
                raise ValueError("schedule: give `min_lr` or `min_lr_ratio`, not both")
            if _num("min_lr_ratio", min_lr_ratio) > 1:
                raise ValueError(
                    f"schedule.min_lr_ratio={min_lr_ratio} is above 1: the LR would climb instead of "
                    "decay; use a ratio in [0, 1]"
                )
            min_lr = self.lr * min_lr_ratio
        self.min_lr = _num("min_lr", min_lr)
        if self.uses_lr:
            self._check_peak()
        if floor_mode not in ("relative", "absolute"):
            raise ValueError(f"schedule.floor_mode must be 'relative' or 'absolute', got {floor_mode!r}")
        self.floor_mode = floor_mode
        if (weight_decay is None) != (weight_decay_end is None):
            raise ValueError("schedule: a weight-decay schedule needs both `weight_decay` and `weight_decay_end`")
        self.wd_start = None if weight_decay is None else _num("weight_decay", weight_decay)
        self.wd_end = None if weight_decay_end is None else _num("weight_decay_end", weight_decay_end)

    def _check_peak(self) -> None:
        """Floors and warm-up starts above the peak are typos (a climbing "decay", step 0 at 1000x the peak)."""
        if self.min_lr > self.lr:
            raise ValueError(
                f"schedule: min_lr={self.min_lr:g} is above the peak lr={self.lr:g}: the LR would climb "
                "instead of decay; a floor must be <= lr"
            )
        if self.warmup_start_lr > self.lr:
            raise ValueError(
                f"schedule: warmup_start_lr={self.warmup_start_lr:g} is above the peak lr={self.lr:g}; "
                "the warm-up starts low and rises to lr"
            )
        if self.lr == 0:
            msg = "schedule: lr=0: no parameter will change (use a policy to freeze parameters instead)"
            warnings.warn(msg, stacklevel=3)

    # --- the closed form ---------------------------------------------------------------------
    def decay(self, t: float) -> float:
        """1.0 at the end of warm-up, 0.0 at the end of the schedule (``t`` in [0, 1])."""
        return 1.0

    def _progress(self, step: int) -> float:
        span = self.total_steps - self.warmup_steps
        return 1.0 if span <= 0 else min(1.0, max(0.0, (step - self.warmup_steps) / span))

    def value(self, step: int) -> float:
        """LR of a group with ``lr_scale`` 1.0 at global step ``step``."""
        return self.group_lr(step, 1.0)

    def group_lr(self, step: int, lr_scale: float) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            start, peak = self.warmup_start_lr * lr_scale, self.lr * lr_scale
            return start + (peak - start) * step / self.warmup_steps
        floor = self.min_lr if self.floor_mode == "absolute" else self.min_lr * lr_scale
        peak = self.lr * lr_scale
        return floor + (peak - floor) * self.decay(self._progress(step))

    def weight_decay_value(self, step: int) -> float | None:
        """Cosine from ``weight_decay`` to ``weight_decay_end`` over the whole run (MAE / DINO)."""
        if self.wd_start is None:
            return None
        t = min(1.0, max(0.0, step / max(1, self.total_steps - 1)))
        return self.wd_end + (self.wd_start - self.wd_end) * 0.5 * (1.0 + math.cos(math.pi * t))

    # --- hand-off to an optimizer --------------------------------------------------------------
    def apply(self, optimizer: torch.optim.Optimizer, step: int, weight_decays: Sequence[float] | None = None) -> float:
        """Set every group's ``lr`` (and scheduled weight decay) for ``step``; returns ``value(step)``.

        With a weight-decay schedule, ``weight_decays`` are the groups' weight decays as built (taken before the
        first step, e.g. ``[g["weight_decay"] for g in optimizer.param_groups]``): each decayed group gets
        ``weight_decay_value(step) * built / weight_decay``, a closed form of the step and the groups as built,
        so a resumed optimizer gets the same values. Nothing is stored in the groups but ``lr`` and ``weight_decay``.
        """
        wd = self.weight_decay_value(step)
        if wd is not None:
            built = self._built_weight_decays(optimizer, weight_decays)
        for i, g in enumerate(optimizer.param_groups):
            g["lr"] = self.group_lr(step, g.get("lr_scale", 1.0))
            if wd is not None and built[i] > 0:
                g["weight_decay"] = wd * (built[i] / self.wd_start if self.wd_start else 1.0)
        return self.value(step)

    def _built_weight_decays(self, optimizer: torch.optim.Optimizer, weight_decays: Sequence[float] | None) -> list:
        n = len(optimizer.param_groups)
        if weight_decays is None:
            raise ValueError(
                "schedule.apply: this schedule changes the weight decay (weight_decay -> weight_decay_end); pass "
                "weight_decays=[g['weight_decay'] for g in optimizer.param_groups], taken before the first step"
            )
        if len(weight_decays) != n:
            raise ValueError(f"schedule.apply: {len(weight_decays)} weight_decays for {n} parameter groups")
        return [float(w) for w in weight_decays]

    def lambda_lr(self, optimizer: torch.optim.Optimizer, last_step: int = -1) -> torch.optim.lr_scheduler.LambdaLR:
        """The same LR schedule as a torch ``LambdaLR`` for a loop of your own (step it once per update).

        Each group's lambda is ``group_lr(step, lr_scale) / initial lr``, so absolute floors work too.
        The weight-decay schedule is not part of it: call ``apply`` (with ``weight_decays``) for that.
        """
        lambdas: list[Callable[[int], float]] = []
        for g in optimizer.param_groups:
            scale = g.get("lr_scale", 1.0)
            initial = g.get("initial_lr", g["lr"])
            if initial == 0:
                lambdas.append(lambda s: 0.0)
            else:
                lambdas.append(lambda s, scale=scale, initial=initial: self.group_lr(s, scale) / initial)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas, last_epoch=last_step)


@SCHEDULES.register_module("constant")
class Constant(Schedule):
    """Warm-up, then the peak LR."""


@SCHEDULES.register_module("cosine")
class Cosine(Schedule):
    """Warm-up, then half a cosine from the peak to the floor (timm ``CosineLRScheduler``)."""

    def decay(self, t: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register_module("linear")
class Linear(Schedule):
    """Warm-up, then a straight line from the peak to the floor."""

    def decay(self, t: float) -> float:
        return 1.0 - t


@SCHEDULES.register_module("wsd")
class WarmupStableDecay(Schedule):
    """Warm-up, a stable plateau at the peak, then a decay over the last ``decay_steps``.

    Args:
        decay_steps: length of the final decay (default: ``decay_ratio`` of the schedule).
        decay_shape: ``linear``, ``cosine`` or ``sqrt`` (``1 - sqrt(t)``, as in MiniCPM).
    """

    def __init__(
        self,
        total_steps: int,
        decay_steps: int | None = None,
        decay_ratio: float = 0.1,
        decay_shape: str = "linear",
        **kw: Any,
    ) -> None:
        super().__init__(total_steps, **kw)
        if decay_steps is None:
            decay_steps = round(_num("decay_ratio", decay_ratio) * total_steps)
        self.decay_steps = int(_num("decay_steps", decay_steps))
        if self.warmup_steps + self.decay_steps > total_steps:
            raise ValueError(
                f"wsd: warmup_steps + decay_steps ({self.warmup_steps} + {self.decay_steps}) exceed total_steps={total_steps}"
            )
        if decay_shape not in ("linear", "cosine", "sqrt"):
            raise ValueError(f"wsd.decay_shape must be 'linear', 'cosine' or 'sqrt', got {decay_shape!r}")
        self.decay_shape = decay_shape

    def _progress(self, step: int) -> float:
        start = self.total_steps - self.decay_steps
        return 0.0 if step < start or self.decay_steps == 0 else min(1.0, (step - start) / self.decay_steps)

    def decay(self, t: float) -> float:
        if self.decay_shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0 - math.sqrt(t) if self.decay_shape == "sqrt" else 1.0 - t


class _Multiplicative(Schedule):
    """Schedules defined by a multiplier of the peak after warm-up (no floor)."""

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def group_lr(self, step: int, lr_scale: float) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return super().group_lr(step, lr_scale)
        return max(self.lr * self.factor(step), self.min_lr) * lr_scale


@SCHEDULES.register_module("step")
class Step(_Multiplicative):
    """Multiply by ``gamma`` every ``step_size`` steps after warm-up (torch ``StepLR``)."""

    def __init__(self, total_steps: int, step_size: int = 1, gamma: float = 0.1, **kw: Any) -> None:
        super().__init__(total_steps, **kw)
        if _num("step_size", step_size, 1) != int(step_size):
            raise ValueError(f"schedule.step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = int(step_size), _num("gamma", gamma)

    def factor(self, step: int) -> float:
        return self.gamma ** ((step - self.warmup_steps) // self.step_size)


@SCHEDULES.register_module("multistep")
class MultiStep(_Multiplicative):
    """Multiply by ``gamma`` at each global step in ``milestones`` (torch ``MultiStepLR``)."""

    def __init__(self, total_steps: int, milestones: Sequence[int] = (), gamma: float = 0.1, **kw: Any) -> None:
        super().__init__(total_steps, **kw)
        self.milestones = sorted(int(_num("milestones[]", m)) for m in milestones)
        self.gamma = _num("gamma", gamma)

    def factor(self, step: int) -> float:
        return self.gamma ** sum(1 for m in self.milestones if step >= m)


@SCHEDULES.register_module("inverse_sqrt")
class InverseSqrt(_Multiplicative):
    """After warm-up, ``lr * sqrt(timescale / (step - warmup + timescale))`` (transformers' form)."""

    def __init__(self, total_steps: int, timescale: int | None = None, **kw: Any) -> None:
        super().__init__(total_steps, **kw)
        self.timescale = _num("timescale", timescale if timescale is not None else (self.warmup_steps or 10_000), 1)

    def factor(self, step: int) -> float:
        return math.sqrt(self.timescale / (step - self.warmup_steps + self.timescale))


@SCHEDULES.register_module("noam")
class Noam(Schedule):
    """Vaswani et al. 2017: ``factor * d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)``, ``n = step + 1``.

    The formula is authoritative; the example table published with it does not follow from it (for d_model 512
    and warmup 4000 the formula peaks at 6.99e-4 at n = 4000; the table says 1.56e-4).
    The LR comes from the formula, so this schedule takes no ``lr``.
    """

    uses_lr = False
    warmup_may_exceed_run = True

    def __init__(
        self, total_steps: int, d_model: int = 512, warmup_steps: int = 4000, factor: float = 1.0, **kw: Any
    ) -> None:
        if kw.get("lr") is not None:
            raise ValueError("noam: the LR comes from d_model and warmup_steps; scale it with `factor`, not `lr`")
        kw.pop("lr", None)
        if warmup_steps < 1:
            raise ValueError("noam: warmup_steps must be >= 1")
        super().__init__(total_steps, warmup_steps=min(warmup_steps, total_steps), **kw)
        self.noam_warmup = int(warmup_steps)
        self.d_model, self.factor = int(_num("d_model", d_model, 1)), _num("factor", factor)

    def group_lr(self, step: int, lr_scale: float) -> float:
        _check_step(step)
        n = step + 1
        return self.factor * self.d_model**-0.5 * min(n**-0.5, n * self.noam_warmup**-1.5) * lr_scale


def build_schedule(
    cfg: Mapping[str, Any],
    total_steps: int,
    steps_per_epoch: int | None = None,
    lr: float | None = None,
    fit_warmup: bool = False,
) -> Schedule:
    """Build a registered schedule. ``*_epochs`` keys convert to steps with ``steps_per_epoch``.

    ``lr`` is the peak used when the config has none (``tools/train.py`` passes the recipe's).
    ``fit_warmup``: a warm-up longer than ``total_steps`` is cut to ``total_steps`` with a warning
    instead of an error (the engine sets it when ``train.max_steps`` shortens a run).

    >>> s = build_schedule(dict(type="cosine", lr=1e-3, warmup_steps=10, min_lr_ratio=0.01), total_steps=100)
    >>> s.value(0), s.value(10), round(s.value(100), 8)
    (0.0, 0.001, 1e-05)
    """
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise TypeError(f"schedule: expected a dict with a 'type' key (e.g. 'cosine'), got {cfg!r}")
    kwargs = dict(cfg)
    cls = SCHEDULES.lookup(kwargs.pop("type"))
    for ek, sk in EPOCH_KEYS.items():
        if ek not in kwargs:
            continue
        if sk in kwargs:
            raise ValueError(f"schedule: give `{sk}` or `{ek}`, not both")
        if not steps_per_epoch:
            raise ValueError(f"schedule: `{ek}` needs steps_per_epoch to convert epochs to steps")
        v = kwargs.pop(ek)
        kwargs[sk] = (
            [round(e * steps_per_epoch) for e in v] if isinstance(v, (list, tuple)) else round(v * steps_per_epoch)
        )
    if lr is not None and cls.uses_lr:
        kwargs.setdefault("lr", lr)
    warmup = kwargs.get("warmup_steps")
    if fit_warmup and not cls.warmup_may_exceed_run and isinstance(warmup, (int, float)) and warmup > total_steps:
        kwargs["warmup_steps"] = total_steps
        msg = (
            f"schedule: warmup_steps={warmup:g} is longer than this run ({total_steps} steps); the warm-up is "
            f"cut to {total_steps} steps, so the LR never reaches its peak"
        )
        warnings.warn(msg, stacklevel=2)
    try:
        return cls(total_steps=total_steps, **kwargs)
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise TypeError(f"schedule {cfg['type']!r}: {e}; see recipes/schedules.py for its options") from None
        raise
