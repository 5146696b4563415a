"""HunyuanVideo: a text token refiner, then Flux-style double and single stream stacks.

Names read from diffusers 0.42.1 (``models/transformers/transformer_hunyuan_video.py``). Three
stacks in execution order: the text encoder's ``token_refiner`` (2 self-attention blocks over the
prompt, inside ``context_embedder``), ``transformer_blocks`` (double stream), then
``single_transformer_blocks``. Single blocks fuse attention and MLP as in Flux.1.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, double_stream, prefixes

_REFINER = r"context_embedder\.token_refiner\.refiner_blocks"
_EMBED = prefixes("x_embedder", "context_embedder", "time_text_embed", "image_projection")
_HEAD = prefixes("norm_out", "proj_out")


@ADAPTERS.register_module("hunyuan_video")
class HunyuanVideo(DiffusersAdapter):
    """``HunyuanVideoTransformer3DModel`` (13B): 2 refiner + 20 double + 40 single blocks."""

    name = "hunyuan_video"
    upstream = "diffusers 0.42.1"
    classes = ("HunyuanVideoTransformer3DModel",)
    stacks = (
        ("token_refiner", rf"^{_REFINER}\.(\d+)\."),
        ("transformer_blocks", r"^transformer_blocks\.(\d+)\."),
        ("single_transformer_blocks", r"^single_transformer_blocks\.(\d+)\."),
    )
    embed = (_EMBED,)
    head = (_HEAD,)
    components = (
        *block_norms(f"{_REFINER}|transformer_blocks|single_transformer_blocks"),
        (rf"^{_REFINER}\.\d+\.attn\.", "self_attn"),
        (rf"^{_REFINER}\.\d+\.ff\.", "ffn"),
        *double_stream("transformer_blocks"),
        (r"^single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_out)\.", "self_attn"),
        (r"^single_transformer_blocks\.\d+\.proj_mlp\.", "ffn"),
        (_EMBED, "embed"),
        (_HEAD, "head"),
    )
    catch_all = frozenset({"embed", "head"})
