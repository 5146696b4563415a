"""timm ViT family: ViT, DeiT, DINOv2 (timm weights), EVA / EVA-02, BEiT, SigLIP, CLIP towers, ConViT.

Names read from timm 1.0.31 (``timm/models/vision_transformer.py`` with its parallel blocks,
``deit.py``, ``eva.py``, ``beit.py``, ``convit.py``, ``vision_transformer_relpos.py``). Layer ids
and no weight decay are the generic ``timm`` adapter's (the model's own ``group_matcher`` and
``no_weight_decay()``, as ``timm.optim.param_groups_layer_decay``: stem 0, ``blocks.i`` -> i+1,
the final ``norm`` joins the last block, ``fc_norm`` / ``head`` -> the last id).
What this adapter adds is an explicit component table: a parameter it does not name (a module a
user added to the model) is unmatched, an error by default (``on_unmatched="default"``: a warning
naming it, and the base LR), where timm itself would put it in ``head`` (the generic ``timm`` adapter
names such a parameter by comparing with the architecture's own, built on meta). ``adapter="auto"`` gives it
every instance of these classes (and of their subclasses): both it and the generic ``timm`` claim
them, and the more specific adapter wins.
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
        # parallel blocks (vision_transformer.py ParallelThingsBlock, ParallelScalingBlock, DiffParallelScalingBlock)
        (r"^blocks\.\d+\.(?:attns|ffns)\.\d+\.norm\.", "norm"),
        (r"^blocks\.\d+\.(?:in_norm|q_norm|k_norm|sub_norm)\.", "norm"),
        (r"^blocks\.\d+\.attns\.\d+\.", "self_attn"),
        (r"^blocks\.\d+\.ffns\.\d+\.", "ffn"),
        (r"^blocks\.\d+\.(?:mlp_out_proj\.|mlp_bias$)", "ffn"),
        # VisionTransformerRelPos' relative-position MLP shared by every block's attention (timm: the last id)
        (r"^shared_rel_pos\.", "self_attn"),
        # fused attention + MLP projections and their shared layer scale: self_attn, as Flux's fused blocks
        (r"^blocks\.\d+\.(?:in_proj\.|out_proj\.|attn_out_proj\.|ls\.|lambda_[qk]\d$)", "self_attn"),
    )

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        """An instance of timm's ViT classes (``VisionTransformer``, DeiT's distilled one, ``Eva``, ``Beit``,
        ``ConVit``, ``VisionTransformerRelPos``) or of a subclass of them; a module added to it is then
        named (unmatched), never put in the head."""
        return any(k.__name__ in _CLASSES.get(k.__module__, ()) for k in type(model).__mro__)


# the classes this table was read from, by module (not imported: recognising a model reads its class)
_CLASSES = {
    "timm.models.vision_transformer": ("VisionTransformer",),
    "timm.models.deit": ("VisionTransformerDistilled",),
    "timm.models.eva": ("Eva",),
    "timm.models.beit": ("Beit",),
    "timm.models.convit": ("ConVit",),
    "timm.models.vision_transformer_relpos": ("VisionTransformerRelPos",),
}
