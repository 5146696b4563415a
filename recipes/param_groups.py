"""``build_param_groups``: a model and a strategy in, merged optimizer groups out.

Every group is a plain dict that any torch optimizer accepts. ``lr`` already equals
``base_lr * lr_scale``, so torch, transformers, mmengine and Lightning schedulers (which scale each
group's initial LR) keep every group's ratio, and ``recipes.schedules`` sets ``value(step) * lr_scale``
at each step. timm's schedulers multiply ``lr_scale`` a second time: hand them
``recipes.integrations.timm.timm_scheduler_groups(groups)`` instead.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import canonical_name, unwrap_model
from recipes.norms import generic_no_decay, norm_param_names, walk_parameters
from recipes.options import accepted_options, check_keys
from recipes.registry import ADAPTERS, STRATEGIES
from recipes.strategies import Strategy


def build_strategy(spec: Mapping[str, Any] | Strategy) -> Strategy:
    """Build a strategy from ``dict(type=..., lr=..., ...)``, rejecting keys it does not read."""
    if isinstance(spec, Strategy):
        return spec
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        spec = dataclasses.asdict(spec)
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise TypeError(f"strategy: expected a dict with a 'type' key (e.g. 'layer_decay'), got {spec!r}")
    kwargs = dict(spec)
    cls = STRATEGIES.lookup(kwargs.pop("type"))
    check_keys("strategy.", kwargs, _accepted_keys(cls))
    return cls(**kwargs)


@functools.cache
def _accepted_keys(cls: type) -> frozenset[str]:
    return accepted_options(cls, skip=("self", "common")) or frozenset()


class NoAdapterError(ValueError):
    """``adapter='auto'`` found no adapter for the model."""


def resolve_adapter(model: nn.Module, adapter: str | Adapter | type = "auto") -> Adapter:
    """``"auto"`` asks every registered adapter; a name, a class or an instance is taken as is.

    Where several claim the model, the most specific wins: an adapter steps back for a subclass of it
    that claims the model too (``timm`` for ``timm_vit``); two unrelated claims are an error.
    """
    if isinstance(adapter, Adapter):
        return adapter
    if isinstance(adapter, type) and issubclass(adapter, Adapter):
        return adapter()
    if adapter != "auto":
        return ADAPTERS.lookup(adapter)()
    base = unwrap_model(model)
    claims = [(name, cls) for name, cls in ADAPTERS.entries() if cls.matches(base)]
    # the most specific claim wins: an adapter whose subclass claims the model too steps back
    claims = [(n, c) for n, c in claims if not any(o is not c and issubclass(o, c) for _, o in claims)]
    if len({cls for _, cls in claims}) == 1:  # one class, maybe under an alias too
        return claims[0][1]()
    what = f"{type(base).__module__}.{type(base).__qualname__}"
    if not claims:
        raise NoAdapterError(
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


def _depth_help(what: str, strategy: Strategy) -> str:
    kind = type(strategy).__name__
    return (
        f"{kind} needs the model's depth, and no registered adapter knows {what}. Give it one: "
        "adapter=<name> (a registered adapter: recipes.registry.ADAPTERS), your own Adapter subclass with a "
        "`stacks` table (@ADAPTERS.register_module()), or strategy prefix='backbone.' when a known backbone "
        "sits inside this model; or use type='flat' (one LR, any model)"
    )


def describe_any(model: nn.Module, names: list[str]) -> ModelMap:
    """The map of a model no adapter knows: no depth, every parameter at layer 0, component ``norm``
    (:func:`recipes.adapter.is_norm`) or ``other``; enough for ``flat``, LoRA+ and per-role LRs."""
    norms = norm_param_names(model)
    infos = {}
    for n in names:
        norm = n in norms
        infos[n] = ParamInfo(n, 0, "norm" if norm else "other", generic_no_decay(n, norm=norm), norm=norm)
    return ModelMap("any", infos, {}, head_layer_id=0, has_depth=False)


def describe_model(
    model: nn.Module,
    strategy: Mapping[str, Any] | Strategy,
    adapter: str | Adapter | type = "auto",
    names: list[str] | None = None,
    norms: set[str] | None = None,
) -> tuple[Adapter | None, ModelMap]:
    """The adapter and :class:`ModelMap` that :func:`build_param_groups` builds its groups from.

    Every parameter, frozen ones too, with the strategy's ``prefix`` option and the any-module fallback
    (adapter None: no adapter knows the model and the strategy needs no depth). ``names`` / ``norms``:
    the canonical names of all parameters and of the norm ones (:func:`recipes.norms.walk_parameters`),
    where the caller has walked the model already.
    """
    strategy = build_strategy(strategy)
    if names is None or norms is None:
        params, norms = walk_parameters(model)
        names = [canonical_name(n)[0] for n, _ in params]
    base = unwrap_model(model)
    prefix = strategy.prefix
    if prefix is None:
        try:
            adp = resolve_adapter(model, adapter)
        except NoAdapterError:
            if strategy.needs_depth:
                raise ValueError(_depth_help(f"{type(base).__module__}.{type(base).__qualname__}", strategy)) from None
            return None, describe_any(model, names)
        return adp, adp.describe(model, names, norms)
    path = prefix[:-1]
    try:
        sub = base.get_submodule(path)
    except AttributeError:
        top = sorted(n for n, _ in base.named_children())
        raise ValueError(
            f"strategy.prefix={prefix!r}: the model has no submodule {path!r} (top level: {top})"
        ) from None
    inner = [n[len(prefix) :] for n in names if n.startswith(prefix)]
    try:
        adp = resolve_adapter(sub, adapter)
    except NoAdapterError:
        if strategy.needs_depth:
            raise ValueError(_depth_help(f"{prefix!r} ({type(sub).__qualname__})", strategy)) from None
        adp = None
    inner_norms = {n[len(prefix) :] for n in norms if n.startswith(prefix)}
    sub_map = describe_any(sub, inner) if adp is None else adp.describe(sub, inner, inner_norms)
    # a headless backbone (nothing after its last block but a final norm): the rest of the model is its head,
    # one past the last block, and the final norm goes with it, as in mmpretrain's
    # LearningRateDecayOptimWrapperConstructor (the last block gets decay ** 1); a backbone with its own head
    # keeps its adapter's map, exactly as when grouped alone
    last_block = max((i.layer_id for i in sub_map.params.values() if i.stack is not None), default=-1)
    headless = 1 <= last_block and sub_map.max_layer_id <= last_block
    head_id = last_block + 1 if headless else sub_map.max_layer_id
    infos = {
        prefix + n: dataclasses.replace(
            i, name=prefix + n, layer_id=head_id if headless and _after_blocks(i, last_block) else i.layer_id
        )
        for n, i in sub_map.params.items()
    }
    for n in names:  # the rest of the model: the head's treatment
        if not n.startswith(prefix):
            norm = n in norms
            infos[n] = ParamInfo(n, head_id, "head", generic_no_decay(n, norm=norm), norm=norm)
    unmatched = [prefix + n for n in sub_map.unmatched]
    mmap = dataclasses.replace(sub_map, params=infos, unmatched=unmatched, head_layer_id=head_id)
    return adp, mmap


def _after_blocks(info: ParamInfo, last_block: int) -> bool:
    """A backbone's tensor after its last block (a final norm): the head's layer under ``prefix``, as in mmpretrain."""
    return info.stack is None and info.layer_id >= last_block


def _peft_roles(model: nn.Module, names: list[str]) -> tuple[set[str], set[str]]:
    """peft LoRA+ (``create_loraplus_optimizer``): of ``names``, those whose tuner layer (the module two
    name parts up) is a LoRA ``Embedding``, and those transformers' ``get_parameter_names(model,
    [nn.LayerNorm])`` leaves out (held inside an ``nn.LayerNorm``)."""
    try:
        from peft.tuners.lora.layer import Embedding as LoraEmbedding
    except ImportError:  # no peft: no peft embedding layers either
        LoraEmbedding = None  # noqa: N806
    embedding, in_layernorm = set(), set()
    if LoraEmbedding is not None:
        for name in names:
            owner = ".".join(name.split(".")[:-2])
            if owner and isinstance(model.get_submodule(owner), LoraEmbedding):
                embedding.add(name)
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.LayerNorm):
            in_layernorm.update(f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters())
    return embedding, in_layernorm


class ParamGroups(list):
    """The groups (a plain ``list`` of dicts for any optimizer) and the :class:`ModelMap` they came from.

    ``model_map`` is what the reports read (layer labels, components); ``adapter`` the adapter used (None
    where no adapter knew the model). Copied as a list (``type(groups)(iterable)``, as mmengine's
    ``ConfigDict`` does), it keeps the groups and has no map.
    """

    def __init__(
        self, groups: Iterable[dict[str, Any]] = (), model_map: ModelMap | None = None, adapter: Adapter | None = None
    ) -> None:
        super().__init__(groups)
        self.model_map = model_map
        self.adapter = adapter


def build_param_groups(
    model: nn.Module,
    strategy: Mapping[str, Any] | Strategy | None = None,
    adapter: str | Adapter | type = "auto",
    **renamed: Any,
) -> ParamGroups:
    """Merged parameter groups for any torch optimizer.

    ``strategy``: ``dict(type=..., lr=..., ...)`` (a registered strategy and its options) or a built
    :class:`~recipes.strategies.Strategy`. Each group holds ``params``, ``param_names``, ``lr`` (= base
    lr x ``lr_scale``), ``lr_scale``, ``weight_decay`` and a readable ``name``. Frozen parameters are left
    out; every trainable one lands in exactly one group; groups with identical hyper-parameters are
    merged. The result is a list that also carries the model map it was built from (``.model_map``).

    >>> import timm, torch
    >>> model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
    >>> groups = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.75, weight_decay=0.05))
    >>> opt = torch.optim.AdamW(groups)
    >>> groups[-1]["name"], groups[-1]["lr_scale"]
    ('head.decay', 1.0)
    """
    if "recipe" in renamed:
        raise TypeError("build_param_groups: the argument `recipe` is now called `strategy`; rename it")
    if renamed:
        raise TypeError(f"build_param_groups: unexpected arguments {sorted(renamed)}")
    if strategy is None:
        raise TypeError("build_param_groups: give a strategy, e.g. dict(type='layer_decay', lr=1e-3, decay=0.75)")
    strategy = build_strategy(strategy)
    params, norms = walk_parameters(model)
    named = [(n, p, *canonical_name(n)) for n, p in params]
    adp, mmap = describe_model(model, strategy, adapter, [c for _, _, c, _ in named], norms)
    strategy.prepare(mmap)
    strategy.check_towers(mmap)
    peft = strategy.loraplus_mode == "peft"
    decides = bool(getattr(adp, "decides_decay", False))  # the adapter's verdict stands alone (transformers' rule)
    if peft:
        embedding, in_layernorm = _peft_roles(model, [n for n, p, _, _ in named if p.requires_grad])
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
            where = (info.layer_id, info.component, info.stack, info.stack_index, info.lora, info.tower)
            scale = scales.get(where)
            if scale is None:
                scale = scales[where] = strategy.lr_scale(strategy.placed(info), mmap)
        if roles:
            scale *= strategy.role_factor(canon, info, lora, ndim)
        if peft:  # peft's create_loraplus_optimizer, tensor by tensor
            if full_name in embedding:
                scale *= strategy.loraplus_lr_embedding / strategy.base_lr
                wd = strategy.weight_decay
            elif "lora_B" in full_name or ndim == 1:
                scale *= strategy.loraplus_ratio
                decays = full_name not in in_layernorm and "bias" not in full_name
                wd = strategy.weight_decay if decays else 0.0
            else:
                wd = strategy.weight_decay
        else:
            if lora == "lora_B" and strategy.loraplus_ratio:
                scale *= strategy.loraplus_ratio
            wd = strategy.weight_decay_for(info, _no_decay(canon, info, ndim, extra, decides))
        bucket = buckets.get((scale, wd))
        if bucket is None:
            bucket = buckets[(scale, wd)] = {"params": [], "param_names": [], "where": {}}
        bucket["params"].append(p)
        bucket["param_names"].append(full_name)
        bucket["where"].setdefault(where, info)
    _check_unmatched(unmatched, mmap.adapter, strategy)
    return ParamGroups(_finalise(buckets, strategy.base_lr, mmap), mmap, adp)


def _check_unmatched(unmatched: list[str], adapter_name: str, strategy: Strategy) -> None:
    if not unmatched:
        return
    shown = ", ".join(repr(n) for n in unmatched[:5])
    msg = f"{adapter_name}: {len(unmatched)} trainable parameters match no layer/component rule (e.g. {shown})"
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
    if not mmap.has_depth:
        return "head" if info.component == "head" else "model"
    return mmap.param_label(info)


def _runs(ids: list[int], label: Any) -> str:
    """Sorted ids as runs: ``00-04`` only for all of 0..4; ``00+04`` for 0 and 4, ``00-02+05`` for 0, 1, 2, 5."""
    runs: list[list[int]] = []
    for k in ids:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    return "+".join(label(r[0]) if len(r) == 1 else f"{label(r[0])}-{label(r[-1])}" for r in runs)


def group_name(infos: list[ParamInfo | None], decay: bool, mmap: ModelMap) -> str:
    """``<location>.<component>.<lora role>.<decay|no_decay>``, each part kept only when shared.

    ``infos``: one representative per distinct position in the group.
    """
    parts = []
    locs = list(dict.fromkeys(_location(i, mmap) for i in infos))
    if len(locs) == 1:
        parts.append(locs[0])
    elif mmap.labels and all(i is not None and i.tower is None and i.layer_id in mmap.labels for i in infos):
        ids = sorted({i.layer_id for i in infos})
        parts.append(_runs(ids, lambda k: mmap.labels[k]))
    elif all(i is not None and i.stack is not None and i.stack == infos[0].stack for i in infos):
        idx = sorted({i.stack_index for i in infos})
        parts.append(f"{infos[0].stack}.{_runs(idx, lambda k: f'{k:02d}')}")
    elif all(i is not None and i.tower is not None for i in infos):  # layers of towers: the towers
        parts.append("+".join(dict.fromkeys(i.tower for i in infos)))
    comps = {i.component for i in infos if i is not None}
    whole = len(comps) == 1 and all(i is not None for i in infos) and (comp := comps.pop()) not in parts
    if whole and comp != infos[0].tower:  # a tower's component is its name, said by the location already
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
