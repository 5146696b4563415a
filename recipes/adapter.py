"""The adapter contract: what the engine needs to know about each parameter of a model.

An adapter is data first. It lists, as ordered regex tables matched against the full
``named_parameters()`` name (first match wins):

* ``stacks``: the block stacks in execution order, each ``(stack_name, regex)`` whose one group
  captures the block index (Flux: double blocks, then single blocks);
* ``embed``: parameters at layer id 0 (stem, patch/positional embeddings, tokens);
* ``head``: parameters at layer id N+1 that sit outside every stack (head, final norm, ...);
* ``components``: ``(regex, component)`` pairs (``self_attn``, ``cross_attn``, ``ffn``, ``norm``...);
* ``no_decay``: adapter-specific names that get no weight decay, on top of the generic rules.

Layer ids: 0 = embeddings/stem, 1..N = blocks in execution order, N+1 = head and the rest.
Depth is computed from *all* parameters (frozen ones too), never from what is trainable.

Names are canonicalised first, so one table serves a plain model, a peft-wrapped one, DDP and
``torch.compile``: prefixes ``module.``, ``_orig_mod.``, ``base_model.model.`` are dropped, peft's
``.base_layer.`` / ``.modules_to_save.<name>.`` / ``.original_module.`` are folded, and a LoRA
tensor (``lora_A``, ``lora_B``, ``lora_embedding_A/B``, DoRA ``lora_magnitude_vector``) takes the
name of the weight it wraps, plus a ``lora`` role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

# Wrapper prefixes that never belong to an architecture's own names.
_PREFIX = re.compile(r"^(?:module\.|_orig_mod\.|base_model\.model\.|_fsdp_wrapped_module\.)+")
_PREFIX_STARTS = ("module.", "_orig_mod.", "base_model.", "_fsdp_wrapped_module.")
_PEFT_FOLD = re.compile(r"\.(?:base_layer|original_module|modules_to_save\.[^.]+)(?=\.)")
_LORA = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)?(?:\.weight)?$"
)
_LORA_ROLE = {
    "lora_A": "lora_A",
    "lora_B": "lora_B",
    "lora_embedding_A": "lora_A",
    "lora_embedding_B": "lora_B",
    "lora_magnitude_vector": "lora_magnitude",
}


def canonical_name(name: str) -> tuple[str, str | None]:
    """Map a parameter name to the architecture's own name and its LoRA role (or ``None``).

    >>> canonical_name("base_model.model.blocks.3.attn.qkv.lora_B.default.weight")
    ('blocks.3.attn.qkv.weight', 'lora_B')
    >>> canonical_name("module.blocks.3.attn.qkv.base_layer.bias")
    ('blocks.3.attn.qkv.bias', None)
    """
    if name.startswith(_PREFIX_STARTS):
        name = _PREFIX.sub("", name)
    if ".base_model.model." in name:  # a peft-wrapped submodule (rfdetr's backbone_lora wraps its encoder)
        name = name.replace(".base_model.model.", ".")
    if "lora_" not in name and "_module" not in name and "base_layer" not in name and "modules_to_save" not in name:
        return name, None  # the common case, without a regex
    name = _PEFT_FOLD.sub("", name)
    m = _LORA.search(name)
    if m is None:
        return name, None
    return name[: m.start()] + ".weight", _LORA_ROLE[m.group(1)]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The architecture inside DDP / FSDP / ``torch.compile`` / peft wrappers."""
    while True:
        if hasattr(model, "get_base_model") and callable(model.get_base_model):  # peft
            inner = model.get_base_model()
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            inner = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module) and type(model).__name__ in (
            "DistributedDataParallel",
            "DataParallel",
            "FullyShardedDataParallel",
        ):
            inner = model.module
        else:
            return model
        if inner is model:
            return model
        model = inner


@dataclass(slots=True)
class ParamInfo:
    """What an adapter says about one (canonical) parameter name (treat as read-only)."""

    name: str
    layer_id: int
    component: str
    no_decay: bool
    stack: str | None = None  # block stack it belongs to, None outside every stack
    stack_index: int | None = None  # index inside that stack (0-based)
    block: int | None = None  # global block index in execution order (0-based)
    lora: str | None = None  # lora_A / lora_B / lora_magnitude, None for base weights
    norm: bool = False  # held by a normalisation layer (:func:`is_norm`)


@dataclass
class ModelMap:
    """The adapter's answer for a whole model: per-name infos plus the depth of every stack."""

    adapter: str
    params: dict[str, ParamInfo]
    stack_sizes: dict[str, int]
    unmatched: list[str] = field(default_factory=list)
    head_layer_id: int | None = None  # set when the model's own grouping says it (timm)
    #: a display name per layer id where the family has its own (U-Net: IN00 / MID / OUT00, kohya's names)
    labels: dict[int, str] = field(default_factory=dict)
    #: False when no adapter knew the model: every parameter sits at layer 0 and no depth is known
    has_depth: bool = True

    @property
    def num_layers(self) -> int:
        """N: the number of blocks over all stacks."""
        return sum(self.stack_sizes.values())

    def block_at(self, block: int) -> tuple[str, int]:
        """(stack, index) of the global block index ``block`` (0-based, execution order)."""
        for stack, size in self.stack_sizes.items():
            if block < size:
                return stack, block
            block -= size
        raise IndexError(f"{self.adapter}: block {block} is past the last of {self.num_layers} blocks")

    def block_label(self, stack: str, index: int) -> str:
        """``blocks.07``: zero-padded to the stack's width (at least two digits)."""
        width = max(2, len(str(self.stack_sizes[stack] - 1)))
        return f"{stack}.{index:0{width}d}"

    def layer_label(self, layer_id: int) -> str:
        """A readable name of a layer id, the same in every report (grid, CSV, TensorBoard).

        The family's own name where its adapter gives one (U-Net: ``IN05``, ``MID``, ``OUT00``, kohya's
        block names), else ``embed`` (id 0), ``head`` (the head's id) or the block (``blocks.07``).
        A parameter outside every stack at a block's id (timm's final norm joins the last block) gets that
        block's label; an id no block has (a custom ``layer_ids``, timm's grouping of a CNN) ``layer_07``.
        """
        if layer_id in self.labels:
            return self.labels[layer_id]
        if layer_id <= 0:
            return "embed"
        if layer_id >= self.max_layer_id:
            return "head"
        if layer_id <= self.num_layers:
            return self.block_label(*self.block_at(layer_id - 1))
        return f"layer_{layer_id:02d}"

    @property
    def max_layer_id(self) -> int:
        """The head's layer id: N+1, or what the model's own grouping gives (timm)."""
        return self.num_layers + 1 if self.head_layer_id is None else self.head_layer_id


def _compile(rules: Iterable[str]) -> list[re.Pattern[str]]:
    return [re.compile(r) for r in rules]


class Adapter:
    """Base class: subclasses fill the tables and, where a table cannot say it, a method."""

    name: ClassVar[str] = ""
    #: upstream package and version the names were read from (shown in docs and errors).
    upstream: ClassVar[str] = ""
    stacks: ClassVar[tuple[tuple[str, str], ...]] = ()
    embed: ClassVar[tuple[str, ...]] = ()
    head: ClassVar[tuple[str, ...]] = ()
    components: ClassVar[tuple[tuple[str, str], ...]] = ()
    no_decay: ClassVar[tuple[str, ...]] = ()
    #: components that collect whatever is not a block part (embedders, modulation, head...).
    catch_all: ClassVar[frozenset[str]] = frozenset()
    #: True when ``ParamInfo.no_decay`` is the whole verdict, the engine's 1-D / bias / name rules
    #: skipped (to equal a peer's rule that decays some 1-D tensors); a strategy's patterns still apply.
    decides_decay: ClassVar[bool] = False

    def __init__(self) -> None:
        self._stacks = [(s, re.compile(r)) for s, r in self.stacks]
        self._embed = _compile(self.embed)
        self._head = _compile(self.head)
        self._components = [(re.compile(r), c) for r, c in self.components]
        self._no_decay = _compile(self.no_decay)

    # --- recognition -------------------------------------------------------------------------
    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """True when this adapter knows ``model`` (already unwrapped). Used by ``adapter='auto'``."""
        return False

    # --- per-name rules ----------------------------------------------------------------------
    def stack_of(self, name: str) -> tuple[str, int] | None:
        """(stack name, index inside it) of a canonical name, None outside every stack."""
        loc = self._locate(name)
        return None if loc is None else loc[:2]

    def component_of(self, name: str) -> str | None:
        for rx, comp in self._components:
            if rx.search(name):
                return comp
        return None

    def is_no_decay(self, name: str) -> bool:
        """Adapter-specific no-decay names (the generic rules live in the engine)."""
        return any(rx.search(name) for rx in self._no_decay)

    def layer_labels(self, mmap: ModelMap) -> dict[int, str]:
        """Override to name layer ids the family's way (see :meth:`ModelMap.layer_label`)."""
        return {}

    def layer_ids(self, model: nn.Module, names: list[str]) -> dict[str, int] | None:
        """Override to take layer ids from the model itself (timm's ``group_matcher``).

        Returning a map makes its largest id the head's layer id (``ModelMap.max_layer_id``).
        """
        return None

    # --- the whole model ---------------------------------------------------------------------
    def describe(self, model: nn.Module, names: list[str] | None = None) -> ModelMap:
        """Classify every parameter of ``model`` (frozen ones included) by canonical name.

        ``names``: the canonical names of all parameters, when the caller has them already.
        Component and no-decay rules are evaluated once per block template (the name with its
        stack index masked), so they must not depend on the block index.
        """
        if names is None:
            names = [canonical_name(n)[0] for n, _ in unwrap_model(model).named_parameters()]
        names = list(dict.fromkeys(names))
        located = self._locate_all(names)
        sizes: dict[str, int] = {s: 0 for s, _ in self.stacks}
        for loc in located.values():
            if loc is not None:
                sizes[loc[0]] = max(sizes[loc[0]], loc[1] + 1)
        sizes = {s: k for s, k in sizes.items() if k}
        offsets, total = {}, 0
        for s, k in sizes.items():
            offsets[s] = total
            total += k
        given = self.layer_ids(model, names)
        # the holder's class where the model is given, else its name (one rule: is_norm)
        norms = self.__dict__.pop("_norm_hint", None)  # build_param_groups found them in its own walk
        if norms is None:
            norms = norm_param_names(model) if model is not None else {n for n in names if is_norm_name(n)}
        infos: dict[str, ParamInfo] = {}
        unmatched: list[str] = []
        cache: dict[str, tuple[int, str | None, bool]] = {}
        for n in names:
            loc = located[n]
            key = n if loc is None else loc[2]
            rules = cache.get(key)
            if rules is None:
                rules = cache[key] = self._rules(n, loc is not None, total)
            layer_id, comp, no_decay = rules
            norm = n in norms
            block = None
            if loc is not None:
                block = offsets[loc[0]] + loc[1]
                layer_id = block + 1
            if given is not None:
                layer_id = given.get(n, layer_id)
            if layer_id < 0 or comp is None:
                unmatched.append(n)
                continue
            if norm:
                no_decay = True
            if loc is None:
                infos[n] = ParamInfo(n, layer_id, comp, no_decay, norm=norm)
            else:
                infos[n] = ParamInfo(n, layer_id, comp, no_decay, loc[0], loc[1], block, norm=norm)
        head_id = max(given.values()) if given else None
        mmap = ModelMap(self.name or type(self).__name__, infos, sizes, unmatched, head_layer_id=head_id)
        mmap.labels = dict(self.layer_labels(mmap))
        return mmap

    def _locate_all(self, names: list[str]) -> dict[str, tuple[str, int, str] | None]:
        """:meth:`_locate` of every name (the loop inlined: it runs once per parameter)."""
        if type(self)._locate is not Adapter._locate:  # an adapter with its own locating (UNets)
            return {n: self._locate(n) for n in names}
        out: dict[str, tuple[str, int, str] | None] = {}
        stacks = self._stacks
        for name in names:
            found = None
            for stack, rx in stacks:
                m = rx.match(name)
                if m:
                    s, e = m.span(1)
                    found = (stack, int(name[s:e]), f"{name[:s]}#{name[e:]}")
                    break
            out[name] = found
        return out

    def _locate(self, name: str) -> tuple[str, int, str] | None:
        """(stack, index, template with the index masked) or None outside every stack."""
        for stack, rx in self._stacks:
            m = rx.match(name)
            if m:
                s, e = m.span(1)
                return stack, int(m.group(1)), f"{name[:s]}#{name[e:]}"
        return None

    def _rules(self, name: str, in_stack: bool, num_blocks: int) -> tuple[int, str | None, bool]:
        if in_stack:
            layer_id = 0  # replaced by the block's id
        elif any(rx.match(name) for rx in self._embed):
            layer_id = 0
        elif any(rx.match(name) for rx in self._head):
            layer_id = num_blocks + 1
        else:
            layer_id = -1
        # the norm part of the generic rule comes from the module (describe), not the name
        return layer_id, self.component_of(name), self.is_no_decay(name) or generic_no_decay(name, norm=False)

    def rule_hits(self, model: nn.Module) -> dict[str, int]:
        """How many names each rule matches: a rule that matches nothing is dead (tests check it)."""
        names = list(dict.fromkeys(canonical_name(n)[0] for n, _ in unwrap_model(model).named_parameters()))
        tables = (
            [("stack:" + s, rx.match) for s, rx in self._stacks]
            + [("embed:" + rx.pattern, rx.match) for rx in self._embed]
            + [("head:" + rx.pattern, rx.match) for rx in self._head]
            + [("component:" + rx.pattern, rx.search) for rx, _ in self._components]
            + [("no_decay:" + rx.pattern, rx.search) for rx in self._no_decay]
        )
        return {key: sum(1 for n in names if fn(n)) for key, fn in tables}


# Generic no-decay names (searched in the canonical name), on top of "1-D" and ".bias" (checked by
# the engine on the tensor itself): norms, positional embeddings, class/register/mask/distillation
# tokens, layer-scale gammas, relative-position tables.
GENERIC_NO_DECAY = re.compile(
    r"pos_embed|position_embedding|positional_embedding|pos_emb\b|rel_pos|relative_position"
    r"|cls_token|reg_token|register_tokens|mask_token|dist_token"
    r"|(?:^|\.)gamma(?:_\d)?$|\.ls\d\.|layer_scale|lambda1|lambda2"
)


def generic_no_decay(name: str, norm: bool | None = None) -> bool:
    """The engine's generic no-decay rules, shared by every adapter: norms and the names above.

    ``norm``: the :func:`is_norm` verdict where the caller has the module; None falls back to the name.
    """
    if norm is None:
        norm = is_norm_name(name)
    return norm or bool(GENERIC_NO_DECAY.search(name))


# --- "is this a norm": one rule for no-decay, ``lr_norm``, ``norm_only`` and trainable counts ------
NORM_TYPES: tuple[type, ...] = tuple(
    t for t in (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, getattr(nn, "RMSNorm", None)) if t
)
# Classes named like a norm: RMSNorm, LlamaRMSNorm, T5LayerNorm, RmsNorm2d, LayerNorm2d, FrozenBatchNorm2d,
# BatchNormAct2d, AdaGroupNorm. (AdaLayerNorm* hold no parameter of their own: their ``linear`` is a Linear.)
_NORM_CLASS = re.compile(r"norm(?:act)?(?:\d*d|\d*)$", re.I)


_NORM_CLASS_CACHE: dict[type, bool] = {}


def _is_norm_class(kind: type) -> bool:
    verdict = _NORM_CLASS_CACHE.get(kind)
    if verdict is None:
        verdict = _NORM_CLASS_CACHE[kind] = issubclass(kind, NORM_TYPES) or bool(_NORM_CLASS.search(kind.__name__))
    return verdict


def is_norm_module(module: nn.Module | None) -> bool:
    """True for a normalisation layer: a torch norm type or a class whose name ends in ``Norm``."""
    if module is None:
        return False
    children = module._modules
    for attr in ("original_module", "base_layer"):  # peft's wrappers hold the real layer
        inner = children.get(attr)
        if isinstance(inner, nn.Module):
            module = inner
    return _is_norm_class(type(module))


def is_norm(name: str, module: nn.Module | None = None) -> bool:
    """The one rule for "is this parameter a norm's": the module that holds it is a normalisation layer.

    ``module``: that holder (``LayerNorm``, ``GroupNorm``, ``BatchNorm*``, ``RMSNorm``, any ``*Norm`` /
    ``*Norm2d`` class: timm's ``LayerNorm2d``, transformers' ``LlamaRMSNorm``, diffusers' ``RMSNorm``).
    Without it (a bare name) the holder's name decides: it contains ``norm`` (``norm1``, ``norm_q``,
    ``layernorm_before``, ``pre_layrnorm``) or is ``ln_*`` / ``ln\\d`` / ``bn\\d*`` / ``gn\\d*``.
    Every part of the package that asks (no-decay, ``lr_norm``, ``norm_only``, counts) asks this.
    """
    if module is not None:
        return is_norm_module(module)
    return is_norm_name(name)


def walk_parameters(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], set[str]]:
    """``model.named_parameters()`` and :func:`norm_param_names` in one pass over the modules."""
    named: list[tuple[str, nn.Parameter]] = []
    norms: set[str] = set()
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        params = mod._parameters
        if not params:
            continue
        norm = _is_norm_class(type(mod))
        for key, p in params.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{mod_name}.{key}" if mod_name else key
            named.append((full, p))
            if norm:
                norms.add(canonical_name(full)[0])
    return named, norms


def norm_param_names(model: nn.Module) -> set[str]:
    """Canonical names of every parameter held by a normalisation layer of ``model`` (:func:`is_norm`)."""
    out: set[str] = set()
    for mod_name, mod in unwrap_model(model).named_modules():
        if not mod._parameters or not _is_norm_class(type(mod)):  # the holder itself (never a peft wrapper)
            continue
        for p, value in mod._parameters.items():
            if value is None:  # registered as None (LayerNorm(bias=False), elementwise_affine=False)
                continue
            out.add(canonical_name(f"{mod_name}.{p}" if mod_name else p)[0])
    return out


def is_norm_name(name: str) -> bool:
    """:func:`is_norm` from a parameter name alone (the holder's name), where no module is at hand."""
    return bool(_NORM.search(name))


# The owning module's name contains "norm" (norm1, layernorm, norm_added_q, attention_norm) or
# is one of the short names ln_*, ln1, bn*, gn* used by CLIP-style and conv models.
_NORM = re.compile(r"(?:^|\.)(?:[^.]*norm[^.]*|ln(?:_[^.]*)?|ln\d+|bn\d*|gn\d*)\.[^.]+$", re.I)
