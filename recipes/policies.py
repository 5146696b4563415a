"""Trainable policies: which parameters train, and where LoRA goes.

``apply_policy(model, dict(type=..., ...))`` changes the model in place (peft's
``inject_adapter_in_model``, so parameter names stay the architecture's own plus ``lora_A/B``)
and sets ``requires_grad``; it returns the model. Blocks, norms and the head are found
generically: the block index of a module comes from the model's registered adapter
(``recipes.adapter``), a norm is what :func:`recipes.adapter.is_norm` says (the one rule: the holder is
a ``LayerNorm / GroupNorm / BatchNorm* / RMSNorm`` or a class named ``*Norm``), the head is
``model.get_classifier()`` (timm) or ``head`` (a regex).

``targets`` follow peft's ``target_modules`` rules exactly (``check_target_module_exists``): a list
matches a module whose full name equals an entry or ends in ``.<entry>`` (so ``qkv``, ``to_out.0``,
``ff.net.2`` all work); a string is one regex that must match the whole module name
(``re.fullmatch``); ``"all-linear"`` is every ``nn.Linear``. Matches are then restricted to the chosen
blocks and to layers LoRA can wrap (Linear, Conv1d/2d/3d, Embedding, transformers' Conv1D). Every list
entry that matches nothing there is an error naming it, and so is a regex that matches nothing.

Policies (N blocks, ``k = lora_blocks``, default ``round(N / 3)``):

- ``full``: every parameter trains.
- ``linear_probe``: only the head trains; everything else is frozen.
- ``lora_only``: LoRA on ``targets`` in every block; the head trains; all else frozen.
- ``norm_only``: every norm (in blocks and outside) and the head train; all else frozen.
- ``hybrid_layerwise`` with ``layout``:
    - ``deep_lora``: LoRA on ``targets`` in the last k blocks (N-k..N-1); the norms of blocks 0..N-k-1
      train; the head trains; norms outside blocks (a ViT's final ``norm``) stay frozen unless
      ``outside_norms=True``. ViT-S/16 with CIFAR-100's head: 247,396 trainable (docs/training.md).
    - ``shallow_lora``: the mirror image (LoRA in blocks 0..k-1, norms in blocks k..N-1).

The adapter is LoRA unless ``kind`` says otherwise: ``kind="lokr"`` / ``"loha"`` inject peft's
``LoKrConfig`` / ``LoHaConfig`` (LyCORIS' Kronecker / Hadamard products) on the same modules, with the
same ``r`` and ``alpha``; ``dora=True`` is LoRA's DoRA (``use_dora``). Their tensors keep the
architecture's names (``recipes.names.canonical_name``), so every strategy puts them in their layer's
group. ``dropout`` is LoRA's; LoKr / LoHa have none here (an error). Value errors name the key
(``policy.r must be a whole number >= 1``), before peft would blame ``target_modules``.

LRs per role live in the recipe (``lr``, ``lr_lora``, ``lr_norm``, ``loraplus_ratio``);
``freeze_lora_steps`` here is read by the engine: LoRA tensors get no gradient, update, optimizer
state or weight decay for the first N optimizer steps, while norms and head train.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from recipes.adapter import canonical_name, norm_param_names
from recipes.options import check_keys

POLICIES = ("full", "linear_probe", "lora_only", "norm_only", "hybrid_layerwise")
LAYOUTS = ("deep_lora", "shallow_lora")
ENGINE_KEYS = ("freeze_lora_steps",)  # read by recipes/engine.py, not here
ALL_LINEAR = "all-linear"  # peft's shorthand
KINDS = ("lora", "lokr", "loha")  # peft's LoraConfig, LoKrConfig, LoHaConfig
ADAPTER_KEYS = ("kind", "r", "alpha", "dropout", "targets", "dora")  # the adapter's own settings


def _lora_layer_types(kind: str = "lora") -> tuple[type, ...]:
    """Layers peft wraps: LoRA's (``peft.tuners.lora.model.LoraModel._create_new_module``), LoKr / LoHa's
    (``layers_mapping`` of ``peft.tuners.lokr.model`` / ``loha.model``: Linear, Conv1d, Conv2d)."""
    if kind != "lora":
        return (nn.Linear, nn.Conv1d, nn.Conv2d)
    types: list[type] = [nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding]
    try:
        from transformers.pytorch_utils import Conv1D

        types.append(Conv1D)
    except ImportError:
        pass
    return tuple(types)


def target_matches(names: Sequence[str], targets: str | Sequence[str]) -> dict[str, list[str]]:
    """peft's ``target_modules`` rule: ``{target: [matching module names]}`` (a string is one target).

    A list entry matches a name equal to it or ending in ``.<entry>``; a string must ``re.fullmatch``.
    """
    if isinstance(targets, str):
        rx = re.compile(targets)
        return {targets: [n for n in names if rx.fullmatch(n)]}
    out: dict[str, list[str]] = {}
    for t in targets:
        if not isinstance(t, str) or not t:
            raise TypeError(f"policy.targets: expected module names, got {t!r}")
        suffix = "." + t
        out[t] = [n for n in names if n == t or n.endswith(suffix)]
    return out


def block_of_modules(model: nn.Module, adapter: Any = "auto") -> tuple[dict[str, int | None], int]:
    """``{module name: block index or None}`` for modules with parameters, and the number of blocks."""
    from recipes.param_groups import resolve_adapter

    adp = resolve_adapter(model, adapter)
    names = [canonical_name(n)[0] for n, _ in model.named_parameters()]
    mmap = adp.describe(model, names)
    out: dict[str, int | None] = {}
    for mod_name, mod in model.named_modules():
        own = [f"{mod_name}.{p}" if mod_name else p for p, _ in mod.named_parameters(recurse=False)]
        infos = [mmap.params.get(canonical_name(n)[0]) for n in own]
        if infos:
            out[mod_name] = next((i.block for i in infos if i is not None), None)
    return out, mmap.num_layers


def head_names(model: nn.Module, head: str | None) -> set[str]:
    """Parameter names of the classifier head: ``head`` regex, else timm's ``get_classifier()``."""
    if head is None and hasattr(model, "get_classifier"):
        clf = model.get_classifier()
        ids = {id(p) for p in clf.parameters()} if isinstance(clf, nn.Module) else set()
        return {n for n, p in model.named_parameters() if id(p) in ids}
    rx = re.compile(head or r"^(?:head|fc|classifier)\.")
    return {n for n, _ in model.named_parameters() if rx.search(n)}


def _lora_modules(
    model: nn.Module, blocks: dict[str, int | None], chosen: set[int], targets: str | Sequence[str], kind: str = "lora"
) -> list[str]:
    """Module names LoRA goes on: ``targets`` by peft's rules, in the ``chosen`` blocks, of a wrappable type."""
    kinds = _lora_layer_types(kind)
    modules = dict(model.named_modules())
    in_blocks = [n for n in modules if n and blocks.get(n) in chosen]
    if targets == ALL_LINEAR:
        found = [n for n in in_blocks if isinstance(modules[n], nn.Linear)]
        if not found:
            raise ValueError(f"policy: targets={ALL_LINEAR!r} finds no nn.Linear in blocks {sorted(chosen)}")
        return found
    hits = target_matches(in_blocks, targets)
    found, missing = [], []
    for t, names in hits.items():
        ok = [n for n in names if isinstance(modules[n], kinds)]
        if not ok:
            missing.append(t)
        found += ok
    if missing:
        notes = []
        for t, names in target_matches([n for n in modules if n], missing).items():
            kinds_of = sorted({type(modules[n]).__name__ for n in names if not isinstance(modules[n], kinds)})
            if names and len(kinds_of) and not any(isinstance(modules[n], kinds) for n in names):
                notes.append(f"{t!r} matches only {kinds_of} (LoRA wraps Linear / Conv / Embedding)")
            elif names:
                notes.append(f"{t!r} matches only outside those blocks")
        hint = "; ".join(notes)
        kind = "regex" if isinstance(targets, str) else "targets"
        raise ValueError(
            f"policy: LoRA {kind} {missing} match no nn.Linear / Conv / Embedding in blocks {sorted(chosen)}"
            f"{': ' + hint if hint else ''}. peft's rule: a list entry matches a module named exactly so or "
            "ending in '.<entry>' (e.g. 'qkv', 'to_out.0', 'ff.net.2'); a string is one regex over the whole name"
        )
    return list(dict.fromkeys(found))


def check_adapter(cfg: Mapping[str, Any]) -> None:
    """The adapter settings of a policy (``kind``, ``r``, ``alpha``, ``dropout``, ``dora``), each named when wrong."""
    kind, r, alpha = cfg.get("kind", "lora"), cfg.get("r", 8), cfg.get("alpha", 16)
    dropout, dora = cfg.get("dropout", 0.0), cfg.get("dora", False)
    if kind not in KINDS:
        raise ValueError(f"policy.kind must be one of {KINDS} (peft's LoRA, LoKr, LoHa), got {kind!r}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"policy.r must be a whole number >= 1 (the adapter's rank, e.g. 16), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"policy.alpha must be a number > 0 (the scale is alpha / r), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"policy.dropout must lie in [0, 1), got {dropout!r}")
    if not isinstance(dora, bool):
        raise TypeError(f"policy.dora must be True or False, got {dora!r}")
    if kind != "lora" and dora:
        raise ValueError(f"policy.dora=True is LoRA's DoRA; policy.kind={kind!r} has no DoRA (drop one of them)")
    if kind != "lora" and dropout:
        raise ValueError(f"policy.dropout is LoRA's dropout; peft's {kind} has rank / module dropout instead, "
                         "which this policy does not set (use dropout=0)")  # fmt: skip


def adapter_config(cfg: Mapping[str, Any], target_modules: str | Sequence[str]) -> Any:
    """The peft config of a policy's adapter on ``target_modules``: ``LoraConfig`` / ``LoKrConfig`` / ``LoHaConfig``.

    >>> adapter_config(dict(kind="lokr", r=4, alpha=4), ["to_q"]).peft_type.value
    'LOKR'
    """
    check_adapter(cfg)
    kind, r, alpha = cfg.get("kind", "lora"), int(cfg.get("r", 8)), float(cfg.get("alpha", 16))
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    if kind == "lora":
        from peft import LoraConfig

        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=float(cfg.get("dropout", 0.0)),
                          target_modules=targets, use_dora=bool(cfg.get("dora", False)))  # fmt: skip
    from peft import LoHaConfig, LoKrConfig

    return (LoKrConfig if kind == "lokr" else LoHaConfig)(r=r, alpha=alpha, target_modules=targets)


def inject_lora(model: nn.Module, modules: list[str], cfg: Mapping[str, Any]) -> None:
    from peft import inject_adapter_in_model

    inject_adapter_in_model(adapter_config(cfg, modules), model)


def check_policy(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``policy`` section checked (type, keys) without a model: the framework calls it before building anything."""
    if not isinstance(cfg, Mapping) or cfg.get("type") not in POLICIES:
        got = cfg.get("type") if isinstance(cfg, Mapping) else cfg
        raise ValueError(f"policy.type must be one of {POLICIES}, got {got!r}")
    for key in ("lr", "lr_lora", "lr_norm", "loraplus_ratio"):
        if key in cfg:
            raise KeyError(
                f"policy.{key}: LRs live in the strategy (strategy.{key}=...), so the param groups carry them"
            )
    allowed = {
        "type",
        "layout",
        *ADAPTER_KEYS,
        "lora_blocks",
        "outside_norms",
        "head",
        "adapter",
        *ENGINE_KEYS,
    }
    check_keys("policy.", cfg, allowed)
    idle = [k for k in cfg if k in allowed and k not in _ACTS[cfg["type"]]]
    if idle:
        raise ValueError(f"policy.{idle[0]} does nothing with policy.type={cfg['type']!r} (it sets "
                         f"{sorted(_ACTS[cfg['type']] - {'type'}) or 'nothing else'}); remove it")  # fmt: skip
    check_adapter(cfg)
    return dict(cfg)


_LORA = {"type", "head", "adapter", *ADAPTER_KEYS, *ENGINE_KEYS}
#: the keys each policy type reads; any other key of the section is an error naming it
_ACTS = {
    "full": {"type"},
    "linear_probe": {"type", "head", "adapter"},
    "norm_only": {"type", "head", "adapter"},
    "lora_only": _LORA,
    "hybrid_layerwise": _LORA | {"layout", "lora_blocks", "outside_norms"},
}


def apply_policy(model: nn.Module, policy: Mapping[str, Any]) -> nn.Module:
    """Apply a trainable policy in place (see the module docstring) and return the model.

    >>> import timm
    >>> m = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=16, depth=3, num_classes=10)
    >>> _ = apply_policy(m, dict(type="hybrid_layerwise", layout="deep_lora", r=4, lora_blocks=1))
    >>> sorted({n.split(".")[1] for n, p in m.named_parameters() if p.requires_grad and n.startswith("blocks")})
    ['0', '1', '2']
    """
    cfg = check_policy(policy)
    kind = cfg["type"]
    if kind == "full":
        model.requires_grad_(True)
        return model
    blocks, n_blocks = _blocks_for(model, cfg, kind)
    head = head_names(model, cfg.get("head"))
    norms = {n: blocks.get(n) for n in _norm_modules(model) if n in blocks}
    lora_at: set[int] = set()
    norm_at: set[str] = set(norms) if kind == "norm_only" else set()
    if kind == "lora_only":
        lora_at = set(range(n_blocks))
    elif kind == "hybrid_layerwise":
        layout = cfg.get("layout", "deep_lora")
        if layout not in LAYOUTS:
            raise ValueError(f"policy.layout must be one of {LAYOUTS}, got {layout!r}")
        k = int(cfg.get("lora_blocks", round(n_blocks / 3)))
        if not 0 < k <= n_blocks:
            raise ValueError(f"policy.lora_blocks must lie in 1..{n_blocks} (the model's blocks), got {k}")
        lora_at = set(range(n_blocks - k, n_blocks)) if layout == "deep_lora" else set(range(k))
        norm_at = {
            n
            for n, b in norms.items()
            if (b is not None and b not in lora_at) or (b is None and cfg.get("outside_norms"))
        }
    if lora_at:
        targets = cfg.get("targets") or ("qkv", "proj", "fc1", "fc2")
        if not isinstance(targets, str):
            targets = tuple(targets)
        inject_lora(model, _lora_modules(model, blocks, lora_at, targets, cfg.get("kind", "lora")), cfg)
    trainable = set(head)
    for name, p in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        p.requires_grad_(name in trainable or canonical_name(name)[1] is not None or module in norm_at)
    return model


def _norm_modules(model: nn.Module) -> set[str]:
    """Names (as ``model.named_modules`` gives them) of the modules holding norm parameters (``is_norm``)."""
    norms = norm_param_names(model)
    return {n.rsplit(".", 1)[0] for n, _ in model.named_parameters() if "." in n and canonical_name(n)[0] in norms}


def _blocks_for(model: nn.Module, cfg: Mapping[str, Any], kind: str) -> tuple[dict[str, int | None], int]:
    """:func:`block_of_modules`; a model no adapter knows is one block for ``lora_only`` / ``norm_only``."""
    from recipes.param_groups import NoAdapterError

    try:
        return block_of_modules(model, cfg.get("adapter", "auto"))
    except NoAdapterError:
        if kind == "hybrid_layerwise":
            raise ValueError(
                "policy hybrid_layerwise needs the model's blocks and no registered adapter knows this model; "
                "pass policy.adapter=<name> or register an adapter"
            ) from None
        return {n: 0 for n, _ in model.named_modules() if n}, 1


def trainable_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameters by role: lora, norm, other; and the total."""
    out = {"lora": 0, "norm": 0, "other": 0}
    norms = norm_param_names(model)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        canon, lora = canonical_name(name)
        role = "lora" if lora else "norm" if canon in norms else "other"
        out[role] += p.numel()
    out["total"] = sum(out.values())
    return out
