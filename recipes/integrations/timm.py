"""timm: groups for timm's schedulers and a one-call ``create_optimizer`` like ``create_optimizer_v2``.

timm's schedulers (``CosineLRScheduler``, ``StepLRScheduler``, everything ``create_scheduler_v2``
builds; timm 1.0.31 ``timm/scheduler/scheduler.py``) record each group's ``initial_lr`` and then set
``lr = value(t) x lr_scale``, ``value`` starting from that initial LR. timm's own groups carry no
``lr`` (the optimizer's default, the base LR) so this is right for them; groups from
``build_param_groups`` already hold ``lr = base x lr_scale`` and would be scaled twice.
:func:`timm_scheduler_groups` fixes the starting point instead: ``initial_lr`` = the base LR, so
timm's floors (``lr_min``) and warm-up start (``warmup_lr_init``) scale per group exactly as with
timm's own groups, and ``lr`` is right before the first scheduler step too.

Those groups are for timm's schedulers only: a torch scheduler also starts from ``initial_lr`` and
would run every group at the base LR. Use plain ``build_param_groups`` groups there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recipes.adapter import Adapter
from recipes.param_groups import base_lr_of, build_param_groups, build_strategy
from recipes.strategies import Strategy

SCHEDULER_KINDS = ("timm", "torch")
# create_optimizer_v2 options that build groups themselves: the strategy does that here.
_GROUPING_KEYS = ("filter_bias_and_bn", "layer_decay", "layer_decay_min_scale", "layer_decay_no_opt_scale",
                  "param_group_fn", "fallback_list", "fallback_no_weight_decay")  # fmt: skip


def timm_scheduler_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``groups`` whose ``initial_lr`` is the base LR, for timm's schedulers.

    >>> g = timm_scheduler_groups([dict(params=[], lr=0.25, lr_scale=0.5)])[0]
    >>> g["lr"], g["initial_lr"], g["lr_scale"]
    (0.25, 0.5, 0.5)
    """
    base = base_lr_of(groups)
    out = []
    for g in groups:
        scale = g.get("lr_scale", 1.0)
        if "initial_lr" in g:
            raise ValueError(
                f"group {g.get('name', '?')!r} already has an initial_lr (a scheduler ran on it); "
                "build fresh groups for timm's scheduler"
            )
        out.append({**g, "initial_lr": g["lr"] / scale if scale else base})
    return out


def create_optimizer(
    model: nn.Module,
    strategy: Mapping[str, Any] | Strategy,
    optimizer: str = "adamw",
    adapter: str | Adapter | type = "auto",
    scheduler: str = "timm",
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the strategy's groups and hand them to ``timm.optim.create_optimizer_v2``.

    ``optimizer`` is any name timm knows (``adamw``, ``lamb``, ``sgd``, ``adan``...); ``kwargs``
    go to it (``momentum``, ``betas``, ``foreach``...). ``scheduler="timm"`` (default) makes the
    groups ready for timm's schedulers (:func:`timm_scheduler_groups`); ``"torch"`` for torch /
    transformers / Lightning schedulers.

    >>> import timm
    >>> model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    >>> opt = create_optimizer(model, dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05))
    >>> type(opt).__name__, opt.defaults["lr"]
    ('AdamW', 0.001)
    """
    from timm.optim import create_optimizer_v2

    if scheduler not in SCHEDULER_KINDS:
        raise ValueError(f"create_optimizer: scheduler must be one of {SCHEDULER_KINDS}, got {scheduler!r}")
    clash = sorted(k for k in ("lr", "weight_decay", *_GROUPING_KEYS) if k in kwargs)
    if clash:
        raise TypeError(
            f"create_optimizer: {clash} are set by the strategy here (its lr, weight_decay, decay, ...); "
            "move them into the strategy dict"
        )
    strat = build_strategy(strategy)
    groups = build_param_groups(model, strat, adapter=adapter)
    if scheduler == "timm":
        groups = timm_scheduler_groups(groups)
    return create_optimizer_v2(groups, opt=optimizer, lr=strat.base_lr, weight_decay=strat.weight_decay, **kwargs)
