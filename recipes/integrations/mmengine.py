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
error). ``prefix``: groups are built for the submodule under it (the backbone of an mmpretrain /
mmdet model); every other parameter gets the base LR (``lr_scale`` 1.0, the head's treatment) and
the usual no-decay rules (1-D tensors, biases, norms). Groups carry ``lr = base x lr_scale``, so
mmengine's param schedulers keep the ratios (use ``eta_min_ratio``, not an absolute ``eta_min``), and
mmengine logs the scheduled base LR as ``base_lr`` (the optimizer's default ``lr``), ``lr`` being the
first group's.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch import nn

from recipes.adapter import canonical_name, generic_no_decay
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
        self.strategy_cfg = self._merge_strategy(dict(paramwise_cfg["strategy"]), self.optimizer_cfg)
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
        if self.prefix is not None and _strategies_take_prefix(self.strategy_cfg):
            strategy = build_strategy({**self.strategy_cfg, "prefix": self.prefix})
            groups = build_param_groups(model, strategy, adapter=self.adapter)
        else:
            groups = param_groups_under(model, strategy, self.adapter, self.prefix)
        optimizer_cls = optimizer_cfg["type"]
        if isinstance(optimizer_cls, str):
            with OPTIMIZERS.switch_scope_and_registry(None) as registry:
                optimizer_cls = registry.get(optimizer_cfg["type"])
        first_arg = next(iter(inspect.signature(optimizer_cls).parameters))
        optimizer_cfg[first_arg] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = self.optim_wrapper_cfg.copy()
        wrapper_cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))


def _strategies_take_prefix(strategy_cfg: Mapping[str, Any]) -> bool:
    """True where the library's strategies have their own ``prefix`` option (then it does the work)."""
    from recipes.param_groups import _accepted_keys
    from recipes.registry import STRATEGIES

    return "prefix" in _accepted_keys(STRATEGIES.lookup(strategy_cfg["type"]))


def param_groups_under(model: nn.Module, strategy: Any, adapter: Any = "auto", prefix: str | None = None) -> list[dict]:
    """The strategy's groups for ``model``, or for its submodule at ``prefix`` plus base-LR groups for the rest.

    Used where the strategies have no ``prefix`` option of their own.
    """
    if prefix is None:
        return build_param_groups(model, strategy, adapter=adapter)
    path = prefix[:-1]
    try:
        sub = model.get_submodule(path)
    except AttributeError:
        top = sorted({n.split(".")[0] for n, _ in model.named_children()})
        raise ValueError(
            f"paramwise_cfg.prefix={prefix!r}: the model has no submodule {path!r} (it has {top})"
        ) from None
    groups = build_param_groups(sub, strategy, adapter=adapter)
    for g in groups:
        g["param_names"] = [prefix + n for n in g["param_names"]]
    inside = {id(p) for p in sub.parameters()}
    rest: dict[bool, dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if id(p) in inside or not p.requires_grad:
            continue
        canon = canonical_name(name)[0]
        no_decay = p.dim() <= 1 or canon.endswith(".bias") or generic_no_decay(canon)
        g = rest.setdefault(no_decay, {
            "name": f"rest.{'no_decay' if no_decay else 'decay'}", "params": [], "param_names": [],
            "lr": strategy.base_lr, "lr_scale": 1.0, "weight_decay": 0.0 if no_decay else strategy.weight_decay,
        })  # fmt: skip
        g["params"].append(p)
        g["param_names"].append(name)
    return groups + [rest[k] for k in sorted(rest)]
