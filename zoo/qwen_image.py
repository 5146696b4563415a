"""Qwen-Image (and Qwen-Image-Edit): 60 MMDiT double-stream blocks.

Names read from diffusers 0.42.1 (``models/transformers/transformer_qwenimage.py``). Image stream:
``attn.to_q/k/v/out`` (``self_attn``), ``img_mlp`` (``ffn``); text stream: ``attn.add_*_proj``,
``attn.to_add_out``, ``txt_mlp`` (``cross_attn``, as Flux's text stream). The per-block adaLN
modulation ``img_mod`` / ``txt_mod`` is ``norm``. The per-component x depth recipe's ``mlp.gate/up/down_proj`` do not
exist: the MLP is diffusers' ``FeedForward`` (``img_mlp.net.0.proj``, ``img_mlp.net.2``).
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, double_stream, prefixes

_EMBED = prefixes("img_in", "txt_in", "txt_norm", "time_text_embed")
_HEAD = prefixes("norm_out", "proj_out")


@ADAPTERS.register_module("qwen_image")
class QwenImage(DiffusersAdapter):
    """``QwenImageTransformer2DModel`` (20B): one stack of 60 blocks."""

    name = "qwen_image"
    upstream = "diffusers 0.42.1"
    classes = ("QwenImageTransformer2DModel",)
    stacks = (("transformer_blocks", r"^transformer_blocks\.(\d+)\."),)
    embed = (_EMBED,)
    head = (_HEAD,)
    components = (
        *block_norms("transformer_blocks"),
        (r"^transformer_blocks\.\d+\.(?:img_mod|txt_mod)\.", "norm"),
        *double_stream("transformer_blocks", ff="img_mlp", ff_context="txt_mlp"),
        (_EMBED, "embed"),
        (_HEAD, "head"),
    )
    catch_all = frozenset({"embed", "head"})
