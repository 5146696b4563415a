"""Sana (0.6B / 1.6B, Sana-Sprint): one stack of linear-attention DiT blocks.

Names read from diffusers 0.42.1 (``models/transformers/sana_transformer.py``). ``attn1`` is the
linear self-attention, ``attn2`` the cross-attention on the Gemma caption, ``ff`` a GLUMBConv
(``conv_inverted`` / ``conv_depth`` / ``conv_point``: convolutions, not ``ff.net``) - all ``ffn``.
The shared timestep network ``time_embed`` is ``modulation``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import MODULATION_NO_DECAY, DiffusersAdapter, block_norms, prefixes, self_cross

_EMBED = prefixes("patch_embed", "caption_projection", "caption_norm")
_MOD = prefixes("time_embed")
_HEAD = prefixes("scale_shift_table", "norm_out", "proj_out")


@ADAPTERS.register_module("sana")
class Sana(DiffusersAdapter):
    """``SanaTransformer2DModel``: 20 blocks (1.6B), 28 (0.6B)."""

    name = "sana"
    upstream = "diffusers 0.42.1"
    classes = ("SanaTransformer2DModel",)
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
