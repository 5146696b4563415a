"""Any transformers model built from repeated layer stacks: BERT, Llama, CLIP, Swin, ConvNeXt, T5...

Rules read from transformers 5.24.0. A *stack* is an ``nn.ModuleList`` of blocks of one class that
hold parameters (``encoder.layer``, ``model.layers``, ``transformer.h``, ``encoder.block``,
``vision_model.encoder.layers``); when every block of a list holds such a list as a direct child
(Swin's ``encoder.layers.i.blocks``, ConvNeXt's and ResNet's ``encoder.stages.i.layers``), the
inner lists are the stacks, one per stage. Layer ids follow the parameters' registration order:
0 before the first block (embeddings, CLIP's ``pre_layrnorm``), block i of all stacks in order ->
i+1, N+1 after the last block (final norm, pooler, heads), and a parameter between two blocks
(Swin's ``downsample``, ConvNeXt's ``downsampling_layer``) takes the id of the block before it.

Components: ``embed`` before the first block; after the last, ``norm`` for norms and ``head`` for
the rest; in and between blocks, ``norm`` when the owning module is a norm, else the first of
``cross_attn`` (``crossattention``, ``encdecattention``, ``encoder_attn``), ``self_attn``
(``attention``, ``attn``, layer scale ``lambda_1``), ``ffn`` (``mlp``, ``ffn``, ``intermediate``,
``densereludense``, ``feed_forward``, ``pwconv``, ``output``, layer scale ``lambda_2``),
``downsample``, ``embed`` (a decoder's own embeddings), ``conv`` found in the module path; whatever
is left is ``block``.

No weight decay is transformers' ``Trainer.get_decay_parameter_names``: parameters of
``nn.LayerNorm`` modules and names matching ``bias``, ``layernorm``, ``rmsnorm``, ``norm`` or
``_norm`` (lower case). It is the whole verdict (``decides_decay``): 1-D tensors that transformers
decays (CLIP's ``class_embedding``, ConvNeXt's ``layer_scale_parameter``) decay here too.
"""

from __future__ import annotations

import re
from typing import ClassVar

from torch import nn

from recipes.adapter import Adapter, ModelMap, ParamInfo
from recipes.names import canonical_name, unwrap_model
from recipes.norms import is_norm_name, norm_param_names
from recipes.registry import ADAPTERS
from zoo.hf_vit import TransformersAdapter

# transformers 5.24.0 trainer.py: Trainer.get_decay_parameter_names
_TRAINER_NO_DECAY = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")
_ROLES = (  # searched in the lower-cased module path, in this order
    (re.compile(r"crossattention|encdecattention|encoder_attn|cross_attn"), "cross_attn"),
    (re.compile(r"attention|attn|relative_position|(?:^|\.)lambda_1$"), "self_attn"),
    (re.compile(r"mlp|ffn|intermediate|densereludense|feed_forward|pwconv|grn|(?:^|\.)lambda_2$"), "ffn"),
    (re.compile(r"downsampl|reduction|shortcut|merging"), "downsample"),
    (re.compile(r"embed|mask_token|cls_token|position"), "embed"),  # a second stack's own embeddings
    (re.compile(r"(?:^|\.)output\."), "ffn"),  # BERT/ViT 4.x: the block's own ``output.dense`` (FFN out)
    (re.compile(r"conv"), "conv"),
)


def stacks_of(model: nn.Module) -> list[str]:
    """Module paths of the block stacks of ``model``, in registration order."""
    found: list[str] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if _is_stack(child):
                inner = [_inner_stack(block) for block in child]
                if all(inner):
                    found.extend(f"{path}.{i}.{n}" for i, n in enumerate(inner))
                else:
                    found.append(path)
            else:
                visit(child, path + ".")

    visit(model, "")
    return found


def _is_stack(module: nn.Module, kinds: type | tuple = nn.ModuleList) -> bool:
    if not isinstance(module, kinds) or len(module) == 0:
        return False
    kind = type(module[0])
    return all(type(b) is kind and next(b.parameters(), None) is not None for b in module)


def _inner_stack(block: nn.Module) -> str | None:
    """A direct child that is a stack (a ``ModuleList``, or a ``Sequential`` as ResNet's stages)."""
    return next((n for n, c in block.named_children() if _is_stack(c, nn.ModuleList | nn.Sequential)), None)


def hf_component(name: str) -> str:
    """Component of a parameter in or between blocks, from its module path."""
    if is_norm_name(name):
        return "norm"
    low = name.lower()
    for rx, comp in _ROLES:
        if rx.search(low):
            return comp
    return "block"


def _all_subclasses(cls: type) -> list[type]:
    return [s for c in cls.__subclasses__() for s in (c, *_all_subclasses(c))]


@ADAPTERS.register_module("hf")
class HFGeneric(Adapter):
    """Any transformers model with a layer stack that no family adapter (``hf_vit``...) claims."""

    name = "hf"
    upstream = "transformers 5.24.0"
    decides_decay: ClassVar[bool] = True

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        if not type(model).__module__.startswith("transformers.models."):
            return False
        if any(c.matches(model) for c in _all_subclasses(TransformersAdapter)):
            return False
        return bool(stacks_of(model))

    def describe(self, model: nn.Module, names: list[str] | None = None, norms: set[str] | None = None) -> ModelMap:
        base = unwrap_model(model)
        if names is None:
            names = [canonical_name(n)[0] for n, _ in base.named_parameters()]
        names = list(dict.fromkeys(names))
        stacks = stacks_of(base)
        rx = re.compile(r"^(" + "|".join(map(re.escape, stacks)) + r")\.(\d+)\.") if stacks else None
        located = {n: m.groups() for n in names if rx is not None and (m := rx.match(n))}
        sizes = {s: 0 for s in stacks}
        for s, i in located.values():
            sizes[s] = max(sizes[s], int(i) + 1)
        sizes = {s: k for s, k in sizes.items() if k}
        offsets, total = {}, 0
        for s, k in sizes.items():
            offsets[s], total = total, total + k
        in_norm = _layernorm_params(base)
        if norms is None:  # the one norm rule (the holder's class), unless the builder's walk found them
            norms = norm_param_names(base)
        last = max((p for p, n in enumerate(names) if n in located), default=-1)
        infos: dict[str, ParamInfo] = {}
        prev = 0  # layer id of the last block seen, in registration order
        for pos, n in enumerate(names):
            no_decay = n in in_norm or bool(_TRAINER_NO_DECAY.search(n.lower())) or self.is_no_decay(n)
            if n in located:
                s, i = located[n][0], int(located[n][1])
                prev = offsets[s] + i + 1
                infos[n] = ParamInfo(n, prev, hf_component(n), no_decay, s, i, prev - 1, norm=n in norms)
            elif prev == 0:
                infos[n] = ParamInfo(n, 0, "embed", no_decay, norm=n in norms)
            elif pos > last:
                infos[n] = ParamInfo(n, total + 1, "norm" if n in norms else "head", no_decay, norm=n in norms)
            else:
                infos[n] = ParamInfo(n, prev, hf_component(n), no_decay, norm=n in norms)
        return ModelMap(self.name, infos, sizes)

    def rule_hits(self, model: nn.Module) -> dict[str, int]:
        """Parameters per stack and per component (a stack or component with none would be dead)."""
        hits: dict[str, int] = {}
        for info in self.describe(model).params.values():
            for key in (f"stack:{info.stack}", f"component:{info.component}"):
                hits[key] = hits.get(key, 0) + 1
        return hits


def _layernorm_params(model: nn.Module) -> set[str]:
    """Canonical names of the parameters owned by ``nn.LayerNorm`` modules (transformers' type rule)."""
    out = set()
    for path, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            out.update(canonical_name(f"{path}.{p}" if path else p)[0] for p, _ in module.named_parameters())
    return out
