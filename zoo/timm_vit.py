"""timm ViT family: ViT, DeiT, DINOv2 (timm weights), EVA / EVA-02, BEiT, SigLIP, CLIP towers.

Names read from timm 1.0.31 (``timm/models/vision_transformer.py``, ``deit.py``, ``eva.py``,
``beit.py``). Layer ids and no weight decay are the generic ``timm`` adapter's (the model's own
``group_matcher`` and ``no_weight_decay()``, as ``timm.optim.param_groups_layer_decay``: stem 0,
``blocks.i`` -> i+1, the final ``norm`` joins the last block, ``fc_norm`` / ``head`` -> the last id).
What this adapter adds is an explicit component table: a parameter it does not name (a module a
user added to the model) is unmatched, an error by default, where ``timm`` would put it in ``head``.
"""

from __future__ import annotations

from torch import nn

from recipes.registry import ADAPTERS
from zoo.timm_generic import Timm

_EMBED = r"^(?:cls_token|reg_token|dist_token|pos_embed|patch_embed|norm_pre|rope|rel_pos_bias)"


@ADAPTERS.register_module("timm_vit")
class TimmViT(Timm):
    name = "timm_vit"
    upstream = "timm 1.0.31"
    components = (
        (_EMBED, "embed"),
        (r"^(?:head|head_dist|fc_norm|attn_pool)\b", "head"),
        (r"^norm\.", "norm"),
        (r"^blocks\.\d+\.norm\d*\.", "norm"),
        (r"^blocks\.\d+\.(?:attn\.|ls1\.|gamma_1$)", "self_attn"),
        (r"^blocks\.\d+\.(?:mlp\.|ls2\.|gamma_2$)", "ffn"),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """A timm ViT whose parameters all sit in modules the table names (CaiT, XCiT... go to ``timm``)."""
        blocks = getattr(model, "blocks", None)
        return (
            type(model).__module__.startswith("timm.models.")
            and hasattr(model, "group_matcher")
            and hasattr(model, "patch_embed")
            and isinstance(blocks, nn.Sequential | nn.ModuleList)
            and len(blocks) > 0
            and _only(model, _TOP)
            and all(_only(b, _BLOCK) for b in blocks)
        )


_TOP = {"cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed", "norm_pre", "rope", "rel_pos_bias"}
_TOP |= {"blocks", "norm"}
_TOP |= {"head", "head_dist", "fc_norm", "attn_pool", "pos_drop", "patch_drop", "head_drop"}
_BLOCK = {"norm1", "norm2", "attn", "ls1", "gamma_1", "mlp", "ls2", "gamma_2", "drop_path1", "drop_path2"}


def _only(module: nn.Module, names: set[str]) -> bool:
    """Every direct parameter, and every child that holds parameters, is one of ``names``."""
    if any(n not in names for n in module._parameters):
        return False
    return all(n in names or c is None or next(c.parameters(), None) is None for n, c in module._modules.items())
