"""Norm detection and the generic no-decay names: one rule for no-decay, ``lr_norm``, ``norm_only`` and counts."""

from __future__ import annotations

import re

from torch import nn

from recipes.names import canonical_name, unwrap_model

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
