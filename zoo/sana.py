"""Sana (0.6B / 1.6B, Sana-Sprint): one stack of linear-attention DiT blocks.

Names read from diffusers 0.42.1 (``models/transformers/sana_transformer.py``). ``attn1`` is the
linear self-attention, ``attn2`` the cross-attention on the Gemma caption, ``ff`` a GLUMBConv
(``conv_inverted`` / ``conv_depth`` / ``conv_point``: convolutions, not ``ff.net``) - all ``ffn``.
The shared timestep network ``time_embed`` is ``modulation``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import CaptionDiT


@ADAPTERS.register_module("sana")
class Sana(CaptionDiT):
    """``SanaTransformer2DModel``: 20 blocks (1.6B), 28 (0.6B)."""

    name = "sana"
    upstream = "diffusers 0.42.1"
    classes = ("SanaTransformer2DModel",)
    affine_block_norms = False  # adaLN-single: the block norms have no weights
    embed_modules = ("patch_embed", "caption_projection", "caption_norm")
    modulation_modules = ("time_embed",)
