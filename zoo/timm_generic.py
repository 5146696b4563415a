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
* a parameter the architecture does not have is named: where timm's ``group_matcher`` matches no regex
  (timm puts the name in the head group), the name must be one of ``timm.create_model(<architecture>)``'s
  own (built once on meta, indices masked), sit in a module that is an empty placeholder there
  (``Identity``), or under the classifier's module (a replaced head); anything else (a module a user
  added to the model) is unmatched: an error naming it, a warning with ``on_unmatched="default"``. A model
  not built by ``timm.create_model`` (no ``pretrained_cfg["architecture"]``) has nothing to compare with,
  and keeps timm's rule;
* no weight decay exactly as timm: names in ``model.no_weight_decay()`` (fnmatch patterns); the
  engine adds 1-D tensors and biases. The generic name rules (``rel_pos``, ``pos_embed``...) are not
  applied, because timm decays e.g. ``attn.rel_pos.mlp.fc1.weight`` and Hiera's ``pos_embed_win``.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import canonical_name, unwrap_model
from recipes.norms import is_norm_name, norm_param_names
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


# name -> (layer id, section, joins the previous group, name with its block indices masked)
Placement = tuple[int, str, bool, str]
Keyed = dict[str, tuple[tuple[float, ...], str, str]]  # name -> (sort key, section, name with indices masked)


def _compile(matcher: dict[str, Any]) -> list[tuple[str, float, tuple[float, ...], str]]:
    rules = []
    for ordinal, (section, spec) in enumerate(matcher.items()):
        if spec is None:
            continue
        entries = spec if isinstance(spec, (tuple, list)) else [(spec, None)]
        for pattern, suffix in entries:
            rules.append((pattern, float(ordinal), tuple(map(float, suffix or ())), section))
    return rules


def _one_regex(patterns: list[str]) -> tuple[re.Pattern[str], list[range]] | None:
    """The patterns as one alternation (the first that matches wins, as in timm's loop), or None.

    Returns the regex and, per alternative, the numbers of its own groups. None where joining could
    change a pattern's meaning (backreferences, named groups, inline flags): then they run one by one.
    """
    if any(re.search(r"\\[1-9]|\(\?P|\(\?[aiLmsux]", p) for p in patterns):
        return None
    try:
        compiled = [re.compile(p) for p in patterns]
        joined = re.compile("|".join(f"({p})" for p in patterns))
    except re.error:
        return None
    spans, g = [], 1
    for rx in compiled:
        spans.append(range(g + 1, g + 1 + rx.groups))
        g += 1 + rx.groups
    return joined, spans


def _keys_from_dict(names: Iterable[str], matcher: dict[str, Any]) -> Keyed:
    rules = _compile(matcher)
    joined = _one_regex([p for p, *_ in rules])
    if joined is None:
        return _keys_one_by_one(names, rules)
    rx, spans = joined
    alternatives = {r.start - 1: (i, r.start - 1, r.stop - 1) for i, r in enumerate(spans)}  # wrapper group -> rule
    out: Keyed = {}
    for name in names:
        m = rx.match(name)
        if m is None:
            out[name] = ((math.inf,), HEAD, name)
            continue
        i, lo, hi = alternatives.get(m.lastindex) or alternatives[_which(m, spans)]
        _, ordinal, suffix, section = rules[i]
        if lo == hi:  # a rule without captures (the stem, a final norm)
            out[name] = ((ordinal, *suffix), section, name)
            continue
        found = m.groups()[lo:hi]
        if hi - lo == 1:  # one index (most rules): mask it inline
            s, e = m.span(hi)
            out[name] = ((ordinal, float(found[0]), *suffix), section, f"{name[:s]}#{name[e:]}")
        else:
            out[name] = ((ordinal, *map(float, found), *suffix), section, _mask(name, m, spans[i]))
    return out


def _which(m: re.Match[str], spans: list[range]) -> int:
    return next(r.start - 1 for r in spans if m.group(r.start - 1) is not None)


def _mask(name: str, m: re.Match[str], groups: range) -> str:
    """``name`` with the captured indices replaced by ``#`` (one component lookup per block template)."""
    for g in reversed(groups):
        s, e = m.span(g)
        if s >= 0:
            name = f"{name[:s]}#{name[e:]}"
    return name


def _keys_one_by_one(names: Iterable[str], rules: list) -> Keyed:
    compiled = [(re.compile(p), ordinal, suffix, section) for p, ordinal, suffix, section in rules]
    out: Keyed = {}
    for name in names:
        for rx, ordinal, suffix, section in compiled:
            m = rx.match(name)
            if m:
                out[name] = (
                    (ordinal, *map(float, m.groups()), *suffix),
                    section,
                    _mask(name, m, range(1, rx.groups + 1)),
                )
                break
        else:
            out[name] = ((math.inf,), HEAD, name)
    return out


def _keys_from_function(names: Iterable[str], fn: Callable[[str], Any]) -> Keyed:
    out: Keyed = {}
    for name in names:
        key = fn(name)
        key = tuple(key) if isinstance(key, Iterable) else (key,)
        out[name] = (key, HEAD if key == (math.inf,) else "blocks", name)
    return out


def _key_ids(keys: Keyed) -> dict[tuple[float, ...], int]:
    """Sorted keys -> consecutive ids; a key ending in MATCH_PREV keeps the previous id."""
    ids: dict[tuple[float, ...], int] = {}
    lid = -1
    for key in sorted({k for k, _, _ in keys.values()}):
        if lid < 0 or key[-1] != MATCH_PREV:
            lid += 1
        ids[key] = lid
    return ids


def _auto_groups(model: nn.Module, names: list[str]) -> dict[str, Placement]:
    """timm's fallback: the trunk in runs of 12 parameters, the classifier prefix last."""
    head = getattr(model, "pretrained_cfg", None) or {}
    head = head.get("classifier") if isinstance(head, dict) else None
    prefixes = tuple(head) if isinstance(head, (tuple, list)) else ((head,) if head else None)
    trunk = [n for n in names if prefixes is not None and not n.startswith(prefixes)]
    out = {
        n: (i // PARAMS_PER_GROUP, STEM if i < PARAMS_PER_GROUP else "blocks", False, n) for i, n in enumerate(trunk)
    }
    last = -(len(trunk) // -PARAMS_PER_GROUP)
    for n in names:
        if n not in out:
            out[n] = (last, HEAD, False, n)
    return out


def timm_grouping(model: nn.Module, names: list[str]) -> dict[str, Placement]:
    """Where timm puts each of ``names`` (all parameters, frozen included), as ``param_groups_layer_decay``.

    Per name: (layer id, section, joins the previous group, name with its block indices masked).
    """
    if not hasattr(model, "group_matcher"):
        return _auto_groups(model, names)
    matcher = model.group_matcher(coarse=False)
    by_dict = isinstance(matcher, dict)
    keys = _keys_from_dict(names, matcher) if by_dict else _keys_from_function(names, matcher)
    ids = _key_ids(keys)
    out: dict[str, Placement] = {}
    for n, (key, section, template) in keys.items():
        lid = ids[key]
        if not by_dict and lid == 0 and section != HEAD:  # a function names no sections: id 0 is the stem
            section = STEM
        out[n] = (lid, section, key[-1] == MATCH_PREV, template)
    return out


def _masked(name: str) -> str:
    return re.sub(r"(?<![^.])\d+(?![^.])", "#", name)


@functools.lru_cache(maxsize=64)
def _architecture_names(architecture: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """(parameter names, modules without parameters of their own) of ``timm.create_model(architecture)``,
    indices masked; built on meta, once per architecture. None where timm cannot build it by that name."""
    import warnings

    import timm
    import torch

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            ref = timm.create_model(architecture)
    except Exception:  # noqa: BLE001 - a model registered outside timm, or one that needs arguments
        return None
    params = frozenset(_masked(n) for n, _ in ref.named_parameters())
    empty = frozenset(_masked(n) for n, m in ref.named_modules() if n and next(m.parameters(False), None) is None)
    return params, empty


def timm_own_names(model: nn.Module) -> Callable[[str], bool] | None:
    """Whether a parameter name is one of the timm architecture's own (see the module docstring), or None
    where the model was not built by ``timm.create_model`` and there is nothing to compare with."""
    cfg = getattr(model, "pretrained_cfg", None)
    architecture = cfg.get("architecture") if isinstance(cfg, dict) else None
    known = _architecture_names(architecture) if isinstance(architecture, str) else None
    if known is None:
        return None
    params, empty = known
    classifier = cfg.get("classifier")
    classifier = [classifier] if isinstance(classifier, str) else list(classifier or ())
    heads = tuple(f"{c.split('.')[0]}." for c in classifier)
    return lambda n: n.startswith(heads) or _masked(n) in params or _masked(n.rpartition(".")[0]) in empty


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
    """Any timm model (recognised by its class's module, subclasses included); ViTs go to ``timm_vit``."""

    name = "timm"
    upstream = "timm 1.0.31"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """Every timm model; where a subclass of this adapter (``timm_vit``) claims it too, that one wins."""
        return _is_timm(model)

    def component(self, name: str, section: str) -> str | None:
        """Component of ``name``; a subclass with a ``components`` table answers from the table."""
        if self._components:
            return self.component_of(name)
        if section == STEM:
            return "embed"
        if section == HEAD:
            return "head"
        return block_component(name)

    def describe(self, model: nn.Module, names: list[str] | None = None, norms: set[str] | None = None) -> ModelMap:
        base = unwrap_model(model)
        if names is None:
            names = [canonical_name(n)[0] for n, _ in base.named_parameters()]
        names = list(dict.fromkeys(names))
        placed = timm_grouping(base, names)
        span: dict[str, list[int]] = {}  # block section -> [first, last] layer id of its blocks
        for lid, s, joined, _ in placed.values():
            if s != STEM and s != HEAD and not joined:
                lo_hi = span.get(s)
                if lo_hi is None:
                    span[s] = [lid, lid]
                elif lid < lo_hi[0]:
                    lo_hi[0] = lid
                elif lid > lo_hi[1]:
                    lo_hi[1] = lid
        sizes, offsets, total = {}, {}, 0
        for s in sorted(span, key=lambda s: span[s][0]):  # execution order
            sizes[s] = span[s][1] - span[s][0] + 1
            offsets[s], total = total, total + sizes[s]
        no_decay, own_rules = no_weight_decay_matcher(base), bool(self._no_decay)
        if norms is None:  # the one norm rule (the holder's class), unless the builder's walk found them
            norms = norm_param_names(base)
        infos: dict[str, ParamInfo] = {}
        unmatched: list[str] = []
        comp_cache: dict[tuple[str, str], str | None] = {}
        head_id = 0
        own = None if self._components else timm_own_names(base)  # a table names what it does not know itself
        for n in names:
            lid, s, joined, template = placed[n]
            if lid > head_id:
                head_id = lid
            if s == HEAD and own is not None and not own(n):  # timm would put it in the head group, unsaid
                unmatched.append(n)
                continue
            comp = comp_cache.get((template, s), "?")
            if comp == "?":
                comp = comp_cache[(template, s)] = self.component(n, s)
            if comp is None:
                unmatched.append(n)
                continue
            nd = no_decay(n) or (own_rules and self.is_no_decay(n))
            if not joined and s in span:
                idx = lid - span[s][0]
                infos[n] = ParamInfo(n, lid, comp, nd, s, idx, offsets[s] + idx, norm=n in norms)
            else:
                infos[n] = ParamInfo(n, lid, comp, nd, norm=n in norms)
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
