"""Bridges from the library to other trainers (mmengine, transformers, Lightning, timm).

Which groups go with which scheduler (``docs/integrations.md`` has the full table):

* ``build_param_groups`` groups hold ``lr = base x lr_scale`` and ``lr_scale``. Every scheduler that
  multiplies each group's *initial* LR (torch, transformers' ``get_scheduler``, mmengine param
  schedulers, Lightning) keeps the per-group ratios, and so does every hand-off that sets
  ``lr = value x lr_scale`` from a base value (BEiT / VideoMAEv2, ``recipes.schedules``).
* timm's schedulers do both (``initial lr x value x lr_scale``): give them
  :func:`recipes.integrations.timm.timm_scheduler_groups` instead, or use
  :func:`recipes.integrations.timm.create_optimizer`.

Each bridge imports its upstream package only when imported itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger("recipes")


def with_optimizer_weight_decay(strategy: Any, optimizer_cls: Any, where: str) -> Any:
    """A strategy dict without ``weight_decay`` takes the optimizer class's default (AdamW: 0.01), and says so.

    Without this every group would train at the strategy's default 0 where the optimizer alone (and
    mmengine's own constructor) decays at its default. A built ``Strategy`` is taken as it is.
    """
    if not isinstance(strategy, Mapping) or "weight_decay" in strategy:
        return strategy
    param = inspect.signature(optimizer_cls).parameters.get("weight_decay")
    default = param.default if param is not None and isinstance(param.default, (int, float)) else 0.0
    log.info(f"{where}: strategy.weight_decay not given; using {optimizer_cls.__name__}'s default {default:g}")
    return {**strategy, "weight_decay": float(default)}


def implied_base_lrs(param_groups: Iterable[Mapping[str, Any]]) -> list[float | None]:
    """``lr / lr_scale`` of every group (``None`` where ``lr_scale`` is 0): one value when ratios hold."""
    return [g["lr"] / g.get("lr_scale", 1.0) if g.get("lr_scale", 1.0) else None for g in param_groups]


def current_base_lr(param_groups: Iterable[Mapping[str, Any]], rel_tol: float = 1e-6) -> float:
    """The LR of ``lr_scale`` 1.0 right now, read from live optimizer groups (what to log as "the" LR).

    Raises ``ValueError`` when the groups disagree, i.e. a scheduler broke the ratios between them
    (an absolute ``eta_min``, ``OneCycleLR`` with one ``max_lr`` for all groups, timm's scheduler on
    groups whose ``lr`` already holds the scale).
    """
    groups = list(param_groups)
    named = [(g.get("name", f"#{i}"), b) for i, (g, b) in enumerate(zip(groups, implied_base_lrs(groups), strict=True))]
    named = [(n, b) for n, b in named if b is not None]
    if not named:
        raise ValueError("param groups: every group has lr_scale 0; there is no base LR to report")
    ref_name, ref = named[0]
    for name, b in named[1:]:
        if abs(b - ref) > rel_tol * max(abs(ref), abs(b), 1e-30):
            raise ValueError(
                f"param groups: group {name!r} runs at {b:.6g} x its lr_scale but {ref_name!r} at {ref:.6g}; "
                "the scheduler did not keep the ratios between groups (see docs/integrations.md)"
            )
    return ref
