"""Parameter names as the architecture has them: wrappers (DDP, FSDP, ``torch.compile``, peft) taken off.

Prefixes ``module.``, ``_orig_mod.``, ``base_model.model.`` are dropped, peft's ``.base_layer.`` /
``.modules_to_save.<name>.`` / ``.original_module.`` are folded, and a LoRA tensor (``lora_A``,
``lora_B``, ``lora_embedding_A/B``, DoRA ``lora_magnitude_vector``; peft's LyCORIS tensors, LoKr
``lokr_w1 / w1_a / w1_b / w2 / w2_a / w2_b / t2`` and LoHa ``hada_w1_a ... hada_t2``) takes the name of the
weight it wraps, plus a ``lora`` role (``lokr`` / ``loha`` for the LyCORIS ones). One adapter table then
serves a plain model and every wrapped one.
"""

from __future__ import annotations

import re

from torch import nn

# Wrapper prefixes that never belong to an architecture's own names.
_PREFIX = re.compile(r"^(?:module\.|_orig_mod\.|base_model\.model\.|_fsdp_wrapped_module\.)+")
_PREFIX_STARTS = ("module.", "_orig_mod.", "base_model.", "_fsdp_wrapped_module.")
_PEFT_FOLD = re.compile(r"\.(?:base_layer|original_module|modules_to_save\.[^.]+)(?=\.)")
_LORA = re.compile(
    r"\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(?:\.[^.]+)?(?:\.weight)?$"
)
#: peft's LoKr / LoHa tensors (``peft.tuners.lokr.layer`` / ``loha.layer``): ``<module>.<tensor>.<adapter name>``
_LYCORIS = re.compile(r"\.(lokr_w[12](?:_[ab])?|lokr_t2|hada_w[12]_[ab]|hada_t[12])\.[^.]+$")
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
    if (
        "lora_" not in name
        and "_module" not in name
        and "base_layer" not in name
        and "modules_to_save" not in name
        and "lokr_" not in name
        and "hada_" not in name
    ):
        return name, None  # the common case, without a regex
    name = _PEFT_FOLD.sub("", name)
    m = _LORA.search(name)
    if m is not None:
        return name[: m.start()] + ".weight", _LORA_ROLE[m.group(1)]
    m = _LYCORIS.search(name)
    if m is not None:
        return name[: m.start()] + ".weight", "lokr" if m.group(1).startswith("lokr") else "loha"
    return name, None


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
