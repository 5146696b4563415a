"""Stable Diffusion 3 / 3.5 (Medium, Large, Large Turbo): one stack of MMDiT joint-attention blocks.

Names read from diffusers 0.42.1 (``models/transformers/transformer_sd3.py``,
``models/attention.py: JointTransformerBlock``). There is no separate cross-attention module: text
and image tokens attend jointly. The text stream's projections (``attn.add_*_proj``,
``attn.to_add_out``, ``ff_context``) are still their own weights, named as in Flux, so they are
``cross_attn`` here too (the per-component x depth recipe says SD3 has none; its SD3.5 example leaves them at
``default_lr``). The last block is ``context_pre_only`` (no ``to_add_out`` / ``ff_context``).
SD3.5 Medium's dual-attention blocks add ``attn2`` (a second image-only self-attention):
``self_attn``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, double_stream, prefixes

_EMBED = prefixes("pos_embed", "time_text_embed", "context_embedder")
_HEAD = prefixes("norm_out", "proj_out")


@ADAPTERS.register_module("sd3")
class SD3(DiffusersAdapter):
    """``SD3Transformer2DModel``: 24 blocks (SD3 / SD3.5 Medium), 38 (SD3.5 Large)."""

    name = "sd3"
    upstream = "diffusers 0.42.1"
    classes = ("SD3Transformer2DModel",)
    stacks = (("transformer_blocks", r"^transformer_blocks\.(\d+)\."),)
    embed = (_EMBED,)
    head = (_HEAD,)
    components = (
        *block_norms("transformer_blocks"),
        *double_stream("transformer_blocks"),
        (r"^transformer_blocks\.\d+\.attn2\.", "self_attn"),
        (_EMBED, "embed"),
        (_HEAD, "head"),
    )
    catch_all = frozenset({"embed", "head"})
