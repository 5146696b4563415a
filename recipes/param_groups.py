"""``build_param_groups``: a model and a recipe in, merged optimizer groups out.

Every group is a plain dict that any torch optimizer accepts. ``lr`` already equals
``base_lr * lr_scale``, so a plain torch / HF / Lightning scheduler gets the right per-group
values, and ``recipes.schedules`` (like timm's schedulers) multiplies ``lr_scale`` in each step.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import warnings
from collections.abc import Mapping
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo, canonical_name, generic_no_decay, unwrap_model
from recipes.registry import ADAPTERS, STRATEGIES
from recipes.strategies import Strategy


def build_strategy(recipe: Mapping[str, Any] | Strategy) -> Strategy:
    """Build a strategy from ``dict(type=..., lr=..., ...)``, rejecting keys it does not read."""
    if isinstance(recipe, Strategy):
        return recipe
    if dataclasses.is_dataclass(recipe) and not isinstance(recipe, type):
        recipe = dataclasses.asdict(recipe)
    if not isinstance(recipe, Mapping) or "type" not in recipe:
        raise TypeError(f"strategy: expected a dict with a 'type' key (e.g. 'layer_decay'), got {recipe!r}")
    kwargs = dict(recipe)
    cls = STRATEGIES.lookup(kwargs.pop("type"))
    allowed = _accepted_keys(cls)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise KeyError(f"strategy {recipe['type']!r}: unknown keys {unknown}; it accepts {sorted(allowed)}")
    return cls(**kwargs)


@functools.cache
def _accepted_keys(cls: type) -> frozenset[str]:
    keys: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            keys |= {p for p in inspect.signature(klass.__init__).parameters if p not in ("self", "common")}
    return frozenset(keys)


def resolve_adapter(model: nn.Module, adapter: str | Adapter | type = "auto") -> Adapter:
    """``"auto"`` asks every registered adapter; a name, a class or an instance is taken as is."""
    if isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, type) and issubclass(adapter, Adapter):
        return adapter()
    if adapter != "auto":
        return ADAPTERS.lookup(adapter)()
    base = unwrap_model(model)
    claims = [(name, cls) for name, cls in ADAPTERS.entries() if cls.matches(base)]
    if len(claims) == 1:
        return claims[0][1]()
    what = f"{type(base).__module__}.{type(base).__qualname__}"
    if not claims:
        raise ValueError(
            f"adapter='auto': no registered adapter recognises {what}. Pass adapter=<name> "
            f"(known: {', '.join(ADAPTERS.names())}) or register your own with @ADAPTERS.register_module()"
        )
    names = [name for name, _ in claims]
    raise ValueError(f"adapter='auto': adapters {names} all claim {what}; pass adapter=<name> to choose one")


def _no_decay(name: str, info: ParamInfo | None, ndim: int, extra: list[re.Pattern[str]], own: bool = False) -> bool:
    """1-D tensors, biases, the adapter's and the generic name rules, the recipe's own patterns.

    ``own``: the adapter decides alone (``Adapter.decides_decay``), the recipe's patterns on top.
    """
    if own and info is not None:
        return info.no_decay or any(rx.search(name) for rx in extra)
    if ndim <= 1 or name.endswith(".bias"):
        return True
    if info is not None:
        if info.no_decay:
            return True
    elif generic_no_decay(name):
        return True
    return any(rx.search(name) for rx in extra)


def build_param_groups(
    model: nn.Module,
    recipe: Mapping[str, Any] | Strategy,
    adapter: str | Adapter | type = "auto",
) -> list[dict[str, Any]]:
    """Merged parameter groups for any torch optimizer.

    Each group holds ``params``, ``param_names``, ``lr`` (= base lr x ``lr_scale``), ``lr_scale``,
    ``weight_decay`` and a readable ``name``. Frozen parameters are left out; every trainable one
    lands in exactly one group; groups with identical hyper-parameters are merged.

    >>> import timm, torch
    >>> model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    >>> groups = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05))
    >>> opt = torch.optim.AdamW(groups)
    >>> groups[-1]["name"], groups[-1]["lr_scale"]
    ('head.decay', 1.0)
    """
    strategy = build_strategy(recipe)
    adp = resolve_adapter(model, adapter)
    named = [(n, p, *canonical_name(n)) for n, p in model.named_parameters()]
    mmap = adp.describe(model, [c for _, _, c, _ in named])
    strategy.prepare(mmap)
    extra = [re.compile(p) for p in strategy.no_decay]
    buckets: dict[tuple[float, float], dict[str, Any]] = {}
    scales: dict[tuple, float] = {}  # strategies are pure in (layer, component, stack position)
    unmatched: list[str] = []
    lookup = mmap.params.get
    roles = (strategy.lr_lora is not None or strategy.lr_norm is not None
             or type(strategy).role_factor is not Strategy.role_factor)  # fmt: skip
    for full_name, p, canon, lora in named:
        if not p.requires_grad:
            continue
        info, ndim = lookup(canon), p.dim()
        if info is None:
            unmatched.append(full_name)
            scale = strategy.default_scale()
            where = None
        else:
            if lora:
                info = dataclasses.replace(info, lora=lora)
            where = (info.layer_id, info.component, info.stack, info.stack_index, info.lora)
            scale = scales.get(where)
            if scale is None:
                scale = scales[where] = strategy.lr_scale(info, mmap)
        if roles:
            scale *= strategy.role_factor(canon, info, lora, ndim)
        if lora == "lora_B" and strategy.loraplus_ratio:
            scale *= strategy.loraplus_ratio
        wd = strategy.weight_decay_for(info, _no_decay(canon, info, ndim, extra, adp.decides_decay))
        bucket = buckets.get((scale, wd))
        if bucket is None:
            bucket = buckets[(scale, wd)] = {"params": [], "param_names": [], "where": {}}
        bucket["params"].append(p)
        bucket["param_names"].append(full_name)
        bucket["where"].setdefault(where, info)
    _check_unmatched(unmatched, adp, strategy)
    return _finalise(buckets, strategy.base_lr, mmap)


def _check_unmatched(unmatched: list[str], adp: Adapter, strategy: Strategy) -> None:
    if not unmatched:
        return
    shown = ", ".join(repr(n) for n in unmatched[:5])
    msg = f"{adp.name or type(adp).__name__}: {len(unmatched)} trainable parameters match no layer/component rule (e.g. {shown})"
    if strategy.on_unmatched == "error":
        raise ValueError(f"{msg}; add a rule to the adapter or set on_unmatched='default'")
    warnings.warn(f"{msg}; they get the default LR (on_unmatched='default')", stacklevel=3)


def _finalise(buckets: dict, base_lr: float, mmap: ModelMap) -> list[dict[str, Any]]:
    groups, seen = [], set()
    for (scale, wd), b in buckets.items():
        name = group_name(list(b["where"].values()), wd > 0, mmap)
        if name in seen:
            k = 2
            while f"{name}#{k}" in seen:
                k += 1
            name = f"{name}#{k}"
        seen.add(name)
        groups.append(
            {
                "name": name,
                "params": b["params"],
                "param_names": b["param_names"],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "weight_decay": wd,
            }
        )
    return groups


def _location(info: ParamInfo | None, mmap: ModelMap) -> str:
    if info is None:
        return "unmatched"
    if info.stack is not None:
        return mmap.block_label(info.stack, info.stack_index)
    if info.layer_id == 0:
        return "embed"
    if info.layer_id >= mmap.max_layer_id:
        return "head"
    # a non-block parameter placed at a block's depth (timm's final norm joins the last block)
    return mmap.layer_label(info.layer_id)


def group_name(infos: list[ParamInfo | None], decay: bool, mmap: ModelMap) -> str:
    """``<location>.<component>.<lora role>.<decay|no_decay>``, each part kept only when shared.

    ``infos``: one representative per distinct position in the group.
    """
    parts = []
    locs = list(dict.fromkeys(_location(i, mmap) for i in infos))
    if len(locs) == 1:
        parts.append(locs[0])
    elif all(i is not None and i.stack is not None and i.stack == infos[0].stack for i in infos):
        idx = sorted({i.stack_index for i in infos})
        parts.append(f"{infos[0].stack}.{idx[0]:02d}-{idx[-1]:02d}")
    comps = {i.component for i in infos if i is not None}
    if len(comps) == 1 and all(i is not None for i in infos) and (comp := comps.pop()) not in parts:
        parts.append(comp)
    roles = {i.lora if i is not None else None for i in infos}
    if len(roles) == 1 and (role := roles.pop()):
        parts.append(role)
    parts.append("decay" if decay else "no_decay")
    return ".".join(parts)


def base_lr_of(groups: list[dict[str, Any]]) -> float:
    """The LR of ``lr_scale`` 1.0 implied by built groups (``lr / lr_scale`` of any scaled group)."""
    for g in groups:
        if g.get("lr_scale"):
            return g["lr"] / g["lr_scale"]
    raise ValueError("groups: no group has a non-zero lr_scale; cannot infer the base LR")
