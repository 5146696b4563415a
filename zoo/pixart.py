"""PixArt-alpha / PixArt-Sigma: one stack of DiT blocks with self- and cross-attention.

Names read from diffusers 0.42.1 (``models/transformers/pixart_transformer_2d.py``,
``models/attention.py: BasicTransformerBlock`` with ``norm_type="ada_norm_single"``). ``attn1``
self, ``attn2`` cross on the T5 caption, ``ff`` MLP; per-block ``scale_shift_table`` is ``norm``.
The timestep network ``adaln_single`` (shared by every block) is the ``modulation`` catch-all.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import CaptionDiT


@ADAPTERS.register_module("pixart")
class PixArt(CaptionDiT):
    """``PixArtTransformer2DModel`` (PixArt-XL-2, 0.6B): 28 blocks."""

    name = "pixart"
    upstream = "diffusers 0.42.1"
    classes = ("PixArtTransformer2DModel",)
    affine_block_norms = False  # adaLN-single: the block norms have no weights
    embed_modules = ("pos_embed", "caption_projection")
    modulation_modules = ("adaln_single",)
