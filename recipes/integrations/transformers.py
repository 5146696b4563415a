"""transformers: the optimizer and scheduler for ``Trainer``, and per-group LR logging.

``Trainer`` has no per-group LRs of its own; hand it ours (transformers 5.24)::

    opt, sched = create_optimizer_and_scheduler(model, dict(type="layer_decay", lr=5e-4, decay=0.75,
                                                weight_decay=0.05), num_training_steps=1000,
                                                scheduler="cosine", num_warmup_steps=100)
    trainer = Trainer(model, args, train_dataset=ds, optimizers=(opt, sched))
    GroupLRCallback.attach(trainer)

Or keep everything in ``TrainingArguments`` (``learning_rate``, ``weight_decay``, ``optim``,
``lr_scheduler_type``, ``warmup_steps``) and subclass: ``RecipesTrainer(model, args, strategy=dict(
type="layer_decay", decay=0.75), train_dataset=ds)`` builds the groups in ``create_optimizer`` and
logs through :class:`GroupLRCallback`.

transformers' schedulers are ``LambdaLR``s: each group's LR is its initial ``lr`` times the same
factor, so the ratios hold. Their floors (``min_lr`` of ``cosine_with_min_lr``, ``lr_end`` of
``polynomial``) are read against the optimizer's default ``lr``, which is set to the base LR here.
``Trainer`` logs ``learning_rate`` as the first group's LR (the embeddings' under layer decay) used
by the step; :class:`GroupLRCallback` replaces it with the base LR and adds ``lr/<group name>`` for
every group, read at the same moment (after the optimizer step, before the scheduler's).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, get_scheduler

from recipes.adapter import Adapter
from recipes.integrations import current_base_lr, implied_base_lrs
from recipes.param_groups import build_param_groups, build_strategy
from recipes.schedules import Schedule, build_schedule
from recipes.strategies import Strategy


def create_optimizer_and_scheduler(
    model: nn.Module,
    strategy: Mapping[str, Any] | Strategy,
    *,
    num_training_steps: int,
    scheduler: str | Mapping[str, Any] | Schedule = "linear",
    num_warmup_steps: int = 0,
    scheduler_kwargs: Mapping[str, Any] | None = None,
    optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
    adapter: str | Adapter | type = "auto",
    **optimizer_kwargs: Any,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """``(optimizer, scheduler)`` for ``Trainer(optimizers=...)``.

    ``scheduler``: a transformers schedule name (``linear``, ``cosine``, ``cosine_with_min_lr``,
    ``warmup_stable_decay``...; ``num_warmup_steps`` and ``scheduler_kwargs`` go to
    ``transformers.get_scheduler``) or one of ours (``dict(type="cosine", warmup_steps=...)`` or a
    built ``Schedule``, whose own warm-up applies: then ``num_warmup_steps`` and
    ``scheduler_kwargs`` must stay unset). ``optimizer_kwargs`` go to the optimizer (``betas``...).
    """
    strat = build_strategy(strategy)
    if "lr" in optimizer_kwargs or "weight_decay" in optimizer_kwargs:
        raise TypeError("create_optimizer_and_scheduler: lr and weight_decay come from the strategy; set them there")
    groups = build_param_groups(model, strat, adapter=adapter)
    opt = optimizer(groups, lr=strat.base_lr, **optimizer_kwargs)
    if isinstance(scheduler, str):
        sched = get_scheduler(scheduler, opt, num_warmup_steps=num_warmup_steps,
                              num_training_steps=num_training_steps,
                              scheduler_specific_kwargs=dict(scheduler_kwargs or {}))  # fmt: skip
        return opt, sched
    if num_warmup_steps or scheduler_kwargs:
        raise ValueError(
            "create_optimizer_and_scheduler: num_warmup_steps / scheduler_kwargs only apply to a transformers "
            "schedule name; put warm-up and options in the recipes schedule dict"
        )
    if not isinstance(scheduler, Schedule):
        scheduler = build_schedule(scheduler, total_steps=num_training_steps, lr=strat.base_lr)
    return opt, scheduler.lambda_lr(opt)


class GroupLRCallback(TrainerCallback):
    """Log ``learning_rate`` as the base LR (``lr_scale`` 1.0) and ``lr/<group>`` for every group.

    Use :meth:`attach` so it runs before the reporting callbacks (TensorBoard, W&B...) and they see
    the same values as ``trainer.state.log_history``.
    """

    def __init__(self) -> None:
        self._warned = False
        self._used: dict[str, float] | None = None

    @classmethod
    def attach(cls, trainer: Any) -> GroupLRCallback:
        """Put a new callback first in ``trainer``'s list and return it."""
        cb = cls()
        trainer.callback_handler.callbacks.insert(0, cb)
        return cb

    def group_lrs(self, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        groups = optimizer.param_groups
        row = {"learning_rate": self._base(groups)}
        row.update({f"lr/{g.get('name', f'group_{i}')}": g["lr"] for i, g in enumerate(groups)})
        return row

    def _base(self, groups: list[dict[str, Any]]) -> float:
        try:
            return current_base_lr(groups)
        except ValueError as e:  # an absolute floor, or a scheduler that flattened the groups
            if not self._warned:
                warnings.warn(f"GroupLRCallback: {e}; logging the largest-scale group's value", stacklevel=2)
                self._warned = True
            top = max(range(len(groups)), key=lambda i: groups[i].get("lr_scale", 1.0))
            return implied_base_lrs(groups)[top] or 0.0

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):  # noqa: ANN001
        # Trainer logs the LR the step used, read before the scheduler steps: so do we
        if optimizer is not None:
            self._used = self.group_lrs(optimizer)

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):  # noqa: ANN001
        if logs is None or optimizer is None or "learning_rate" not in logs:
            return
        row = self._used if self._used is not None else self.group_lrs(optimizer)
        logs.update(row)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(row)


class RecipesTrainer(Trainer):
    """``Trainer`` whose optimizer holds a strategy's groups; LR and weight decay stay in ``TrainingArguments``.

    ``strategy``: e.g. ``dict(type="layer_decay", decay=0.75)``, without ``lr`` / ``weight_decay``
    (``args.learning_rate`` / ``args.weight_decay`` fill them). The optimizer class and its options
    come from ``args.optim`` as in ``Trainer``; the scheduler from ``args.lr_scheduler_type``.
    """

    def __init__(self, *args: Any, strategy: Mapping[str, Any], adapter: str | Adapter | type = "auto", **kwargs: Any):
        given = sorted(k for k in ("lr", "weight_decay") if k in strategy)
        if given:
            raise ValueError(
                f"RecipesTrainer: strategy sets {given}; set TrainingArguments.learning_rate / weight_decay instead"
            )
        if (kwargs.get("optimizers") or (None, None))[0] is not None:
            raise ValueError("RecipesTrainer builds the optimizer from `strategy`; drop optimizers=(...)")
        self.strategy_cfg, self.adapter = dict(strategy), adapter
        super().__init__(*args, **kwargs)
        GroupLRCallback.attach(self)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            cfg = {**self.strategy_cfg, "weight_decay": self.args.weight_decay}
            if cfg.get("type") != "component_depth":  # its base LR is default_lr
                cfg["lr"] = self.args.learning_rate
            strategy = build_strategy(cfg)
            groups = build_param_groups(self.model if model is None else model, strategy, adapter=self.adapter)
            cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model if model is None else model)
            if any(k in kwargs for k in ("params", "model", "optimizer_dict")):
                raise ValueError(
                    f"RecipesTrainer: optim={self.args.optim!r} builds its own groups; use a plain optimizer"
                )
            self.optimizer = cls(groups, **{**kwargs, "lr": strategy.base_lr})
        return self.optimizer
