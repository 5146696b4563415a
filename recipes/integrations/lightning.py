"""Lightning: ``configure_optimizers`` in one call, and the base LR in the logs (optional extra ``lightning``).

Inside a ``LightningModule`` (Lightning 2.6)::

    def configure_optimizers(self):
        return configure_optimizers(self, dict(type="layer_decay", lr=5e-4, decay=0.75, weight_decay=0.05),
                                    schedule=dict(type="cosine", warmup_steps=100, min_lr_ratio=0.01))

The schedule is one of ``recipes.schedules`` run as a ``LambdaLR`` stepped every optimizer step,
over ``trainer.estimated_stepping_batches`` unless ``total_steps`` is given. Lightning's own
``LearningRateMonitor`` then logs every group under its ``name`` (``lr-AdamW/blocks.03.decay``);
:class:`BaseLRLogger` adds ``lr-base``, the LR of ``lr_scale`` 1.0.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch

try:
    from lightning.pytorch import Callback
except ImportError as e:  # the optional extra
    raise ImportError("recipes.integrations.lightning needs Lightning: pip install 'zoo-recipes[lightning]'") from e
from torch import nn

from recipes.adapter import Adapter
from recipes.integrations import current_base_lr, log, with_optimizer_weight_decay
from recipes.param_groups import NoAdapterError, build_param_groups, build_strategy, resolve_adapter
from recipes.schedules import Schedule, build_schedule
from recipes.strategies import Strategy


def configure_optimizers(
    module: nn.Module,
    strategy: Mapping[str, Any] | Strategy,
    schedule: Mapping[str, Any] | Schedule | None = None,
    *,
    total_steps: int | None = None,
    optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
    adapter: str | Adapter | type = "auto",
    model: nn.Module | None = None,
    **optimizer_kwargs: Any,
) -> dict[str, Any]:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer and a per-step scheduler.

    ``model``: the network to group when it is an attribute of ``module`` (``self.backbone``...);
    by default ``module`` itself, where a strategy that needs depth (``layer_decay``) finds the one
    attribute a registered adapter knows (``self.net``) and gives everything else the head's LR.
    A strategy dict without ``weight_decay`` takes the optimizer's default (AdamW: 0.01).
    ``schedule=None``: no scheduler (constant LRs per group).
    """
    if "lr" in optimizer_kwargs or "weight_decay" in optimizer_kwargs:
        raise TypeError("configure_optimizers: lr and weight_decay come from the strategy; set them there")
    strat = build_strategy(with_optimizer_weight_decay(strategy, optimizer, "configure_optimizers"))
    if model is None:
        strat = _around_the_known_network(module, strat, adapter)
    opt = optimizer(build_param_groups(module if model is None else model, strat, adapter=adapter),
                    lr=strat.base_lr, **optimizer_kwargs)  # fmt: skip
    if schedule is None:
        if total_steps is not None:
            raise ValueError("configure_optimizers: total_steps is only read with a schedule")
        return {"optimizer": opt}
    if not isinstance(schedule, Schedule):
        if total_steps is None:
            trainer = getattr(module, "_trainer", None)
            if trainer is None:
                raise ValueError(
                    "configure_optimizers: give total_steps, or call it from a module attached to a Trainer"
                )
            total_steps = int(trainer.estimated_stepping_batches)
        schedule = build_schedule(schedule, total_steps=total_steps, lr=strat.base_lr)
    elif total_steps is not None:
        raise ValueError("configure_optimizers: a built Schedule has its own length; drop total_steps")
    return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule.lambda_lr(opt), "interval": "step"}}


def _around_the_known_network(module: nn.Module, strat: Strategy, adapter: Any) -> Strategy:
    """``strat`` with ``prefix`` set to the one child of ``module`` an adapter knows, where ``module`` needs it.

    A LightningModule holding its network as ``self.net`` is not itself a known architecture; the
    strategy's own ``prefix`` option then groups ``net`` by its adapter and the rest as the head.
    """
    if not strat.needs_depth or strat.prefix is not None:
        return strat
    try:
        resolve_adapter(module, adapter)
        return strat
    except NoAdapterError:
        pass
    known = []
    for name, child in module.named_children():
        try:
            resolve_adapter(child, adapter)
            known.append(name)
        except NoAdapterError:
            continue
    if len(known) != 1:
        found = f"the known networks are {known}" if known else "no attribute is a known network"
        raise ValueError(
            f"configure_optimizers: {type(strat).__name__} needs the network's depth and "
            f"{type(module).__name__} is no architecture an adapter knows ({found}); pass the network: "
            "configure_optimizers(self, strategy, model=self.<attribute>)"
        )
    log.info(f"configure_optimizers: grouping self.{known[0]} by its adapter; the rest of the module as the head")
    inner = copy.copy(strat)
    inner.prefix = known[0] + "."
    return inner


class BaseLRLogger(Callback):
    """Logs ``lr-base`` (the LR of ``lr_scale`` 1.0) at the start of every training batch."""

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        for i, opt in enumerate(trainer.optimizers):
            key = "lr-base" if len(trainer.optimizers) == 1 else f"lr-base/{i}"
            pl_module.log(key, current_base_lr(opt.param_groups), on_step=True, on_epoch=False, batch_size=1)
