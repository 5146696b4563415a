"""Every timm architecture: layer ids from the model's own ``group_matcher``, exactly as timm groups them.

Rules read from timm 1.0.31: ``timm/optim/_param_groups.py`` (``param_groups_layer_decay``,
``auto_group_layers``) and ``timm/models/_manipulate.py`` (``group_with_matcher``). A model's
``group_matcher(coarse=False)`` is a dict of sections (``stem``, ``blocks``, sometimes more, such as
XCiT's ``cls_attn_blocks``), each a regex or a list of ``(regex, suffix)``; a name's sort key is
(section ordinal, captured indices, suffix), keys are numbered in sorted order into layer ids, a
suffix ending in 99999 (``MATCH_PREV_GROUP``) joins the previous id, and names no regex matches (the
neck and head) take the last id. A few models (CaiT) return a function instead of a dict; models
without a ``group_matcher`` are cut into runs of 12 parameters, the classifier named in
``pretrained_cfg["classifier"]`` last.

What this adapter adds on top of timm's ids:

* components: the ``stem`` section is ``embed``, what no regex matches is ``head``, and inside the
  block sections the module names say it: ``norm`` (the owning module is a norm, ``bn*``, ``ln*``),
  else the innermost of ``self_attn`` (``attn``, ``attention``, ``token_mixer``, layer scale 1),
  ``ffn`` (``mlp``, ``ffn``, layer scale 2), ``downsample`` (``downsample``, ``reduction``,
  ``transition``...), ``conv`` (``conv*``, ``dw``, ``pw``...); whatever is left is ``block``;
* stacks: one per block section, so ``component_depth`` counts depth over timm's own blocks;
* no weight decay exactly as timm: names in ``model.no_weight_decay()`` (fnmatch patterns); the
  engine adds 1-D tensors and biases. The generic name rules (``rel_pos``, ``pos_embed``...) are not
  applied, because timm decays e.g. ``attn.rel_pos.mlp.fc1.weight`` and Hiera's ``pos_embed_win``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo, canonical_name, is_norm_name, unwrap_model
from recipes.registry import ADAPTERS

MATCH_PREV = 99999.0  # timm's MATCH_PREV_GROUP: a suffix ending in it joins the group before
PARAMS_PER_GROUP = 12  # timm's auto_group_layers default, for models without a group_matcher
STEM, HEAD = "stem", ""  # sections that are not block stacks

# A token (one dotted part of the module path) -> component, the innermost token with a role wins.
_TOKEN_ROLES = (
    (re.compile(r"attn|attention|token_mixer|mlp_tokens|^ls1$|^gamma_?1$|^layer_scale_?1$"), "self_attn"),
    (re.compile(r"mlp|ffn|channel_mixer|^ls2$|^gamma_?2$|^layer_scale_?2$"), "ffn"),
    (re.compile(r"downsample|^down$|reduction|transition|merging|^merge"), "downsample"),
    (re.compile(r"conv|^dw|^pw|^se$|^ese$|^eca$"), "conv"),
)
_DIGITS = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)")


def block_component(name: str) -> str:
    """Component of a parameter inside timm's block sections, from its module names."""
    if is_norm_name(name):
        return "norm"
    parts = name.split(".")
    for token in reversed(parts):
        for rx, comp in _TOKEN_ROLES:
            if rx.search(token):
                return comp
    return "block"


@dataclasses.dataclass(frozen=True)
class Grouping:
    """timm's layer id of every name, and the section of the group matcher that placed it."""

    layer_ids: dict[str, int]
    sections: dict[str, str]  # STEM, HEAD (matched by nothing: neck and head) or a block section name
    joined: frozenset[str] = frozenset()  # names that join the previous group (a final norm): no block


def _compile(matcher: dict[str, Any]) -> list[tuple[re.Pattern[str], float, tuple[float, ...], str]]:
    rules = []
    for ordinal, (section, spec) in enumerate(matcher.items()):
        if spec is None:
            continue
        entries = spec if isinstance(spec, (tuple, list)) else [(spec, None)]
        for pattern, suffix in entries:
            rules.append((re.compile(pattern), float(ordinal), tuple(map(float, suffix or ())), section))
    return rules


def _keys_from_dict(names: Iterable[str], matcher: dict[str, Any]) -> dict[str, tuple[tuple[float, ...], str]]:
    rules = _compile(matcher)
    out = {}
    for name in names:
        for rx, ordinal, suffix, section in rules:
            m = rx.match(name)
            if m:
                out[name] = ((ordinal, *map(float, m.groups() or ()), *suffix), section)
                break
        else:
            out[name] = ((math.inf,), HEAD)
    return out


def _keys_from_function(names: Iterable[str], fn: Callable[[str], Any]) -> dict[str, tuple[tuple[float, ...], str]]:
    out = {}
    for name in names:
        key = fn(name)
        key = tuple(key) if isinstance(key, (tuple, list)) else (key,)
        out[name] = (key, HEAD if key == (math.inf,) else "blocks")
    return out


def _number(keys: dict[str, tuple[tuple[float, ...], str]]) -> dict[str, int]:
    """Sorted keys -> consecutive ids; a key ending in MATCH_PREV keeps the previous id."""
    ids: dict[tuple[float, ...], int] = {}
    lid = -1
    for key in sorted({k for k, _ in keys.values()}):
        if lid < 0 or key[-1] != MATCH_PREV:
            lid += 1
        ids[key] = lid
    return {name: ids[key] for name, (key, _) in keys.items()}


def _auto_groups(model: nn.Module, names: list[str]) -> Grouping:
    """timm's fallback: the trunk in runs of 12 parameters, the classifier prefix last."""
    head = getattr(model, "pretrained_cfg", None) or {}
    head = head.get("classifier") if isinstance(head, dict) else None
    prefixes = tuple(head) if isinstance(head, (tuple, list)) else ((head,) if head else None)
    trunk = [n for n in names if prefixes is not None and not n.startswith(prefixes)]
    ids = {n: i // PARAMS_PER_GROUP for i, n in enumerate(trunk)}
    last = -(len(trunk) // -PARAMS_PER_GROUP)
    sections = {n: STEM if i == 0 else "blocks" for n, i in ids.items()}
    for n in names:
        if n not in ids:
            ids[n], sections[n] = last, HEAD
    return Grouping(ids, sections)


def timm_grouping(model: nn.Module, names: list[str]) -> Grouping:
    """Layer ids of ``names`` (all parameters, frozen included) as ``param_groups_layer_decay`` gives them."""
    if not hasattr(model, "group_matcher"):
        return _auto_groups(model, names)
    matcher = model.group_matcher(coarse=False)
    if isinstance(matcher, dict):
        keys = _keys_from_dict(names, matcher)
    else:
        keys = _keys_from_function(names, matcher)
    ids = _number(keys)
    sections = {n: s for n, (_, s) in keys.items()}
    if not isinstance(matcher, dict):  # a function says nothing of sections: the first id is the stem
        sections = {n: STEM if ids[n] == 0 and s != HEAD else s for n, s in sections.items()}
    joined = frozenset(n for n, (k, _) in keys.items() if k[-1] == MATCH_PREV)
    return Grouping(ids, sections, joined)


def no_weight_decay_matcher(model: nn.Module) -> Callable[[str], bool]:
    """``name in model.no_weight_decay()``, with timm's fnmatch wildcards."""
    patterns = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    exact = {p for p in patterns if not any(c in p for c in "*?[")}
    wild = patterns - exact
    rx = re.compile("|".join(fnmatch.translate(p) for p in wild)) if wild else None
    if rx is None:
        return exact.__contains__
    return lambda n: n in exact or rx.match(n) is not None


@ADAPTERS.register_module("timm")
class Timm(Adapter):
    """Any timm model (recognised by its class's module, subclasses included), ViTs aside (``timm_vit``)."""

    name = "timm"
    upstream = "timm 1.0.31"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        from zoo.timm_vit import TimmViT

        return _is_timm(model) and not TimmViT.matches(model)

    def component(self, name: str, section: str) -> str | None:
        """Component of ``name``; a subclass with a ``components`` table answers from the table."""
        if self._components:
            return self.component_of(name)
        if section == STEM:
            return "embed"
        if section == HEAD:
            return "head"
        return block_component(name)

    def describe(self, model: nn.Module, names: list[str] | None = None) -> ModelMap:
        base = unwrap_model(model)
        if names is None:
            names = [canonical_name(n)[0] for n, _ in base.named_parameters()]
        names = list(dict.fromkeys(names))
        grouping = timm_grouping(base, names)
        ids, sections, joined = grouping.layer_ids, grouping.sections, grouping.joined
        span: dict[str, list[int]] = {}  # block section -> [first, last] layer id of its blocks
        for n in names:
            s = sections[n]
            if s not in (STEM, HEAD) and n not in joined:
                lo_hi = span.setdefault(s, [ids[n], ids[n]])
                lo_hi[0], lo_hi[1] = min(lo_hi[0], ids[n]), max(lo_hi[1], ids[n])
        sizes, offsets, total = {}, {}, 0
        for s in sorted(span, key=lambda s: span[s][0]):  # execution order
            sizes[s] = span[s][1] - span[s][0] + 1
            offsets[s], total = total, total + sizes[s]
        no_decay = no_weight_decay_matcher(base)
        infos: dict[str, ParamInfo] = {}
        unmatched: list[str] = []
        comp_cache: dict[tuple[str, str], str | None] = {}
        for n in names:
            s, lid = sections[n], ids[n]
            template = (_DIGITS.sub("#", n), s)
            comp = comp_cache.get(template, "?")
            if comp == "?":
                comp = comp_cache[template] = self.component(n, s)
            if comp is None:
                unmatched.append(n)
                continue
            nd = no_decay(n) or self.is_no_decay(n)
            if s in span and n not in joined:
                idx = lid - span[s][0]
                infos[n] = ParamInfo(n, lid, comp, nd, s, idx, offsets[s] + idx)
            else:
                infos[n] = ParamInfo(n, lid, comp, nd)
        head_id = max(ids.values()) if ids else 0
        return ModelMap(self.name, infos, sizes, unmatched, head_layer_id=head_id)

    def rule_hits(self, model: nn.Module) -> dict[str, int]:
        """Parameters per component (the tables are timm's own; a component with none is dead)."""
        if self._components:
            return super().rule_hits(model)
        mmap = self.describe(model)
        hits: dict[str, int] = {}
        for info in mmap.params.values():
            hits[f"component:{info.component}"] = hits.get(f"component:{info.component}", 0) + 1
        return hits


def _is_timm(model: nn.Module) -> bool:
    return any(c.__module__.startswith("timm.models.") for c in type(model).__mro__)
