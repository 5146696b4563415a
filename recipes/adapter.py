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
Depth is computed from *all* parameters (frozen ones too), never from what is trainable. A model trained
beside the main one (a denoiser's text encoder) is a *tower*: its parameters carry ``ParamInfo.tower`` and
layer ids of its own (0 = its embeddings, 1..n its blocks, n+1 the rest; ``ModelMap.towers`` holds each n),
so the main model's ids, N and labels do not move.

Names are canonicalised first (:mod:`recipes.names`), so one table serves a plain model, a
peft-wrapped one, DDP and ``torch.compile``. Norm detection and the generic no-decay names live in
:mod:`recipes.norms`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from recipes.names import canonical_name, unwrap_model
from recipes.norms import (  # re-exported: recipes.adapter was their home before recipes.names / recipes.norms
    GENERIC_NO_DECAY,
    NORM_TYPES,
    generic_no_decay,
    is_norm,
    is_norm_module,
    is_norm_name,
    norm_param_names,
    walk_parameters,
)

__all__ = [
    "GENERIC_NO_DECAY",
    "NORM_TYPES",
    "Adapter",
    "ModelMap",
    "ParamInfo",
    "canonical_name",
    "generic_no_decay",
    "is_norm",
    "is_norm_module",
    "is_norm_name",
    "norm_param_names",
    "unwrap_model",
    "walk_parameters",
]


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
    tower: str | None = None  # the attached model it belongs to (layer_id counts inside it), None: the main one


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
    #: models attached beside the main one (a denoiser's text encoders): their blocks, by tower name
    towers: dict[str, int] = field(default_factory=dict)

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

    def param_label(self, info: ParamInfo) -> str:
        """Where one parameter sits, by the names every report uses: its block (``blocks.07``) where it is
        in a stack, else :meth:`layer_label` of its layer id (the family's own names first)."""
        if info.tower is not None:
            return self.tower_label(info.tower, info.layer_id)
        if info.stack is not None and info.layer_id not in self.labels:
            return self.block_label(info.stack, info.stack_index)
        return self.layer_label(info.layer_id)

    def tower_label(self, tower: str, layer_id: int) -> str:
        """A tower's layer by its own ids: ``text_encoder.embed``, ``text_encoder.07`` (block 7), ``.head``."""
        n = self.towers[tower]
        if layer_id <= 0:
            return f"{tower}.embed"
        if layer_id > n:
            return f"{tower}.head"
        return f"{tower}.{layer_id - 1:0{max(2, len(str(n - 1)))}d}"

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
    def describe(self, model: nn.Module, names: list[str] | None = None, norms: set[str] | None = None) -> ModelMap:
        """Classify every parameter of ``model`` (frozen ones included) by canonical name.

        ``names``: the canonical names of all parameters, when the caller has them already; ``norms``:
        those held by a normalisation layer (:func:`recipes.norms.walk_parameters` finds both in one pass).
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
        if norms is None:  # the holder's class where the model is given, else its name (one rule: is_norm)
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
