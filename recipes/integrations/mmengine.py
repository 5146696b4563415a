"""mmengine: an ``OptimWrapperConstructor`` that builds the optimizer from a strategy's groups.

Importing this module registers ``RecipesOptimWrapperConstructor`` in mmengine's
``OPTIM_WRAPPER_CONSTRUCTORS`` (mmengine 0.10.7). In a plain mmengine / mmpretrain / mmdet config::

    custom_imports = dict(imports=["recipes.integrations.mmengine"], allow_failed_imports=False)
    optim_wrapper = dict(
        constructor="RecipesOptimWrapperConstructor",
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(strategy=dict(type="layer_decay", decay=0.75), adapter="auto", prefix="backbone."),
    )

The strategy's ``lr`` and ``weight_decay`` default to the optimizer's (giving both, different, is an
error; neither gives weight decay: the optimizer class's default, AdamW's 0.01, as mmengine's own
constructor would). ``prefix``: the strategy's own ``prefix`` option: groups for the submodule under it
(the backbone of an mmpretrain / mmdet model), every other parameter at the head's layer, one past the
backbone's last block, as mmpretrain's ``LearningRateDecayOptimWrapperConstructor`` does (the last
block gets ``decay``, even where the backbone has no final norm), with the usual no-decay rules. Groups carry ``lr = base x lr_scale``, so
mmengine's param schedulers keep the ratios (use ``eta_min_ratio``, not an absolute ``eta_min``), and
mmengine logs the scheduled base LR as ``base_lr`` (the optimizer's default ``lr``), ``lr`` being the
first group's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from recipes.integrations import with_optimizer_weight_decay
from recipes.param_groups import build_param_groups, build_strategy

PARAMWISE_KEYS = ("strategy", "adapter", "prefix")


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class RecipesOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``paramwise_cfg=dict(strategy=dict(type=...), adapter="auto", prefix=None)``; see the module doc."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None) -> None:
        if not isinstance(paramwise_cfg, Mapping) or "strategy" not in paramwise_cfg:
            raise ValueError(
                "RecipesOptimWrapperConstructor: paramwise_cfg needs a `strategy`, e.g. "
                "paramwise_cfg=dict(strategy=dict(type='layer_decay', decay=0.75))"
            )
        unknown = sorted(set(paramwise_cfg) - set(PARAMWISE_KEYS))
        if unknown:
            raise KeyError(
                f"RecipesOptimWrapperConstructor: paramwise_cfg keys {unknown} are not read (mmengine's "
                f"custom_keys / *_decay_mult belong to DefaultOptimWrapperConstructor); it accepts {list(PARAMWISE_KEYS)}"
            )
        super().__init__(optim_wrapper_cfg, None)
        strategy = self._merge_strategy(dict(paramwise_cfg["strategy"]), self.optimizer_cfg)
        where = "RecipesOptimWrapperConstructor"  # no weight_decay anywhere: the optimizer's default, as mmengine's
        self.strategy_cfg = with_optimizer_weight_decay(strategy, _optimizer_class(self.optimizer_cfg), where)
        self.adapter = paramwise_cfg.get("adapter", "auto")
        prefix = paramwise_cfg.get("prefix")
        if prefix is not None and (not isinstance(prefix, str) or not prefix.endswith(".")):
            raise ValueError(
                f"paramwise_cfg.prefix must be a module path ending in '.', e.g. 'backbone.', got {prefix!r}"
            )
        if prefix is not None and "prefix" in paramwise_cfg["strategy"]:
            raise ValueError(
                "RecipesOptimWrapperConstructor: give prefix in paramwise_cfg or in the strategy, not both"
            )
        self.prefix = prefix

    @staticmethod
    def _merge_strategy(strategy: dict, optimizer_cfg: dict) -> dict:
        for key in ("lr", "weight_decay"):
            if key not in optimizer_cfg:
                continue
            if key in strategy and strategy[key] != optimizer_cfg[key]:
                raise ValueError(
                    f"RecipesOptimWrapperConstructor: optimizer.{key}={optimizer_cfg[key]} but "
                    f"paramwise_cfg.strategy.{key}={strategy[key]}; give it in one place"
                )
            if key == "lr" and strategy.get("type") == "component_depth":
                continue  # its base LR is default_lr; checked against the optimizer's below
            strategy.setdefault(key, optimizer_cfg[key])
        return strategy

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, "module"):
            model = model.module
        strategy = build_strategy(self.strategy_cfg)
        optimizer_cfg = self.optimizer_cfg.copy()
        given = optimizer_cfg.get("lr")
        if given is not None and abs(given - strategy.base_lr) > 1e-12 * max(given, 1.0):
            raise ValueError(
                f"RecipesOptimWrapperConstructor: optimizer.lr={given} but the strategy's base LR is "
                f"{strategy.base_lr}; mmengine logs and schedules the optimizer's lr as the base LR"
            )
        optimizer_cfg["lr"] = strategy.base_lr
        if self.prefix is not None:  # the library's own prefix option: the backbone's groups, the rest as the head
            strategy = build_strategy({**self.strategy_cfg, "prefix": self.prefix})
        groups = build_param_groups(model, strategy, adapter=self.adapter)
        first_arg = next(iter(inspect.signature(_optimizer_class(optimizer_cfg)).parameters))
        optimizer_cfg[first_arg] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


def _optimizer_class(optimizer_cfg: Mapping) -> type:
    """The optimizer class an mmengine ``optimizer=dict(type=...)`` names (a class is taken as it is)."""
    cls = optimizer_cfg["type"]
    if isinstance(cls, str):
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            found = registry.get(cls)
        if found is None:
            raise KeyError(f"RecipesOptimWrapperConstructor: optimizer.type={cls!r} is not a registered optimizer")
        cls = found
    return cls
