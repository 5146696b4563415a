"""PixArt-alpha / PixArt-Sigma: one stack of DiT blocks with self- and cross-attention.

Names read from diffusers 0.42.1 (``models/transformers/pixart_transformer_2d.py``,
``models/attention.py: BasicTransformerBlock`` with ``norm_type="ada_norm_single"``). ``attn1``
self, ``attn2`` cross on the T5 caption, ``ff`` MLP; per-block ``scale_shift_table`` is ``norm``.
The timestep network ``adaln_single`` (shared by every block) is the ``modulation`` catch-all.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import MODULATION_NO_DECAY, DiffusersAdapter, block_norms, prefixes, self_cross

_EMBED = prefixes("pos_embed", "caption_projection")
_MOD = prefixes("adaln_single")
_HEAD = prefixes("scale_shift_table", "norm_out", "proj_out")


@ADAPTERS.register_module("pixart")
class PixArt(DiffusersAdapter):
    """``PixArtTransformer2DModel`` (PixArt-XL-2, 0.6B): 28 blocks."""

    name = "pixart"
    upstream = "diffusers 0.42.1"
    classes = ("PixArtTransformer2DModel",)
    stacks = (("transformer_blocks", r"^transformer_blocks\.(\d+)\."),)
    embed = (_EMBED, _MOD)
    head = (_HEAD,)
    components = (
        *block_norms("transformer_blocks", tables=True, affine=False),
        *self_cross("transformer_blocks"),
        (_EMBED, "embed"),
        (_MOD, "modulation"),
        (_HEAD, "head"),
    )
    no_decay = MODULATION_NO_DECAY
    catch_all = frozenset({"embed", "modulation", "head"})
