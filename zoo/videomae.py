"""VideoMAE: transformers ``VideoMAEModel`` / ``VideoMAEForVideoClassification``, and VideoMAEv2 naming.

Names read from transformers 5.24.0 (``models/videomae/modeling_videomae.py``): blocks
``videomae.encoder.layer.i`` with ``attention.attention.{query,key,value}`` (5.x: ``query.bias``
and ``value.bias`` on the Linear layers; 4.x: separate ``attention.attention.q_bias`` / ``v_bias``
parameters, both under the same ``attention`` rule), ``intermediate.dense``, ``output.dense``,
``layernorm_before/after``; then ``videomae.layernorm`` (no mean pooling) or ``fc_norm`` (mean
pooling) and ``classifier``. The position embeddings are a fixed sinusoid buffer, not a parameter.

Layer ids are VideoMAEv2's (``optim_factory.py``): embeddings 0, block i -> i+1, final norm /
``fc_norm`` / head (``classifier``, or the tracker's ``box_head`` from
``recipes/train/models/tracker.py``) -> L+1, so ``layer_decay`` gives the scales VideoMAEv2 fine-tuning uses.

``videomaev2`` (alias ``beit_style``) reads the original VideoMAEv2 / BEiT repo naming (``blocks.i``,
``patch_embed``, ``pos_embed``, ``cls_token``, ``norm``, ``fc_norm``, ``head``, ``rel_pos_bias``,
``gamma_1/2``, ``q_bias/v_bias``). That naming is timm's too, so it never claims a model under
``adapter='auto'`` (``timm_vit`` does): choose it by name. It differs from ``timm_vit`` in one place,
as VideoMAEv2 does: the final ``norm`` is at L+1, not with the last block.
"""

from __future__ import annotations

from recipes.adapter import Adapter
from recipes.registry import ADAPTERS
from zoo.hf_vit import TransformersAdapter, block_rules

_P = r"^(?:videomae\.)?"
_BLOCKS = _P + r"encoder\.layer"


@ADAPTERS.register_module("videomae")
class VideoMAE(TransformersAdapter):
    name = "videomae"
    upstream = "transformers 5.24.0"
    classes = ("VideoMAEModel", "VideoMAEForVideoClassification")
    module = "transformers.models.videomae."
    stacks = (("layer", _BLOCKS + r"\.(\d+)\."),)
    embed = (_P + r"embeddings\.",)
    head = (_P + r"layernorm\.", r"^(?:fc_norm|classifier|box_head)\.")
    components = (
        (_P + r"embeddings\.", "embed"),
        *block_rules(_BLOCKS, "attention", "intermediate|output", "layernorm_before|layernorm_after"),
        (_P + r"layernorm\.", "norm"),
        (r"^(?:fc_norm|classifier|box_head)\.", "head"),
    )
    catch_all = frozenset({"embed", "head"})


_V2_EMBED = r"^(?:cls_token|mask_token|pos_embed|patch_embed)"


@ADAPTERS.register_module("videomaev2")
@ADAPTERS.register_module("beit_style")
class VideoMAEv2(Adapter):
    name = "videomaev2"
    upstream = "VideoMAEv2 (OpenGVLab/VideoMAEv2, models/modeling_finetune.py; not a pip package)"
    stacks = (("blocks", r"^blocks\.(\d+)\."),)
    embed = (_V2_EMBED,)
    head = (r"^(?:norm|fc_norm|head|rel_pos_bias)\.",)
    components = (
        (_V2_EMBED, "embed"),
        *block_rules(r"^blocks", r"attn", r"mlp", r"norm1|norm2"),
        (r"^blocks\.\d+\.gamma_1$", "self_attn"),
        (r"^blocks\.\d+\.gamma_2$", "ffn"),
        (r"^norm\.", "norm"),
        (r"^(?:fc_norm|head|rel_pos_bias)\.", "head"),
    )
    catch_all = frozenset({"embed", "head"})
