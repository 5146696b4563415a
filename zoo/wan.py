"""WAN 2.1 / 2.2 (T2V, I2V, FLF2V): one stack of blocks with self- and cross-attention.

Names read from diffusers 0.42.1 (``models/transformers/transformer_wan.py``). ``attn1`` is
self-attention (``self_attn``), ``attn2`` cross-attention on the text (and, for I2V, on the image
through ``add_k_proj`` / ``add_v_proj``): ``cross_attn``; ``ffn.net`` is ``ffn``. The per-block
``scale_shift_table`` and ``norm2`` (the cross-attention norm) are ``norm``; the top-level
``scale_shift_table`` modulates the output norm: ``head``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import CaptionDiT


@ADAPTERS.register_module("wan")
class Wan(CaptionDiT):
    """``WanTransformer3DModel``: 40 blocks (14B), 30 (1.3B, 2.2 5B)."""

    name = "wan"
    upstream = "diffusers 0.42.1"
    classes = ("WanTransformer3DModel",)
    block_stack = "blocks"
    ff_module = "ffn"
    embed_modules = ("patch_embedding", "condition_embedder", "rope")
