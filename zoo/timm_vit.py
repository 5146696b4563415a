"""timm ViT family: ViT, DeiT, DINOv2 (timm weights), EVA / EVA-02, BEiT, SigLIP, CLIP towers.

Names read from timm 1.0.31 (``timm/models/vision_transformer.py``, ``deit.py``, ``eva.py``,
``beit.py``). Layer ids come from the model's own ``group_matcher(coarse=False)``, exactly as
``timm.optim.param_groups_layer_decay`` computes them (stem 0, ``blocks.i`` -> i+1, the final
``norm`` joins the last block, ``fc_norm`` / ``head`` -> the last id), so ``layer_decay`` matches
timm per parameter. No-decay names also include the model's ``no_weight_decay()``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re

from torch import nn

from recipes.adapter import Adapter, ModelMap, unwrap_model
from recipes.registry import ADAPTERS


@ADAPTERS.register_module("timm_vit")
class TimmViT(Adapter):
    name = "timm_vit"
    upstream = "timm 1.0.31"
    stacks = (("blocks", r"^blocks\.(\d+)\."),)
    embed = (r"^(?:cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre|rope)",)
    head = (r"^(?:norm|fc_norm|head|head_dist|attn_pool)\b",)
    components = (
        (r"^(?:cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre|rope)", "embed"),
        (r"^(?:head|head_dist|fc_norm|attn_pool)\b", "head"),
        (r"^norm\.", "norm"),
        (r"^blocks\.\d+\.norm\d*\.", "norm"),
        (r"^blocks\.\d+\.(?:attn\.|ls1\.|gamma_1$)", "self_attn"),
        (r"^blocks\.\d+\.(?:mlp\.|ls2\.|gamma_2$)", "ffn"),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return (
            type(model).__module__.startswith("timm.models.")
            and hasattr(model, "group_matcher")
            and isinstance(getattr(model, "blocks", None), nn.Sequential | nn.ModuleList)
            and hasattr(model, "patch_embed")
        )

    def layer_ids(self, model: nn.Module, names: list[str]) -> dict[str, int] | None:
        from timm.models._manipulate import group_with_matcher

        base = unwrap_model(model)
        if not hasattr(base, "group_matcher"):
            return None
        return group_with_matcher(((n, None) for n in names), base.group_matcher(coarse=False), reverse=True)

    def describe(self, model: nn.Module, names: list[str] | None = None) -> ModelMap:
        mmap = super().describe(model, names)
        base = unwrap_model(model)
        patterns = set(base.no_weight_decay()) if hasattr(base, "no_weight_decay") else set()
        # timm matches these with fnmatch against the full name; most are plain names
        exact = {p for p in patterns if not any(c in p for c in "*?[")}
        wild = re.compile("|".join(fnmatch.translate(p) for p in patterns - exact)) if patterns - exact else None
        for n, info in mmap.params.items():
            if not info.no_decay and (n in exact or (wild is not None and wild.match(n))):
                mmap.params[n] = dataclasses.replace(info, no_decay=True)
        return mmap
