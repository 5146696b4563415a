"""Chroma: Flux.1's block layout without per-block modulation weights.

Names read from diffusers 0.42.1 (``models/transformers/transformer_chroma.py``). The blocks take
their scale/shift from one shared ``distilled_guidance_layer`` (an MLP "approximator"), the
``modulation`` catch-all at layer 0. Single blocks fuse attention and MLP as in Flux.1: ``proj_mlp``
is ``ffn``, ``proj_out`` (attention and MLP out) is ``self_attn``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, double_stream, prefixes


@ADAPTERS.register_module("chroma")
class Chroma(DiffusersAdapter):
    """Chroma1-HD / Chroma1-Base (``ChromaTransformer2DModel``): 19 double + 38 single blocks."""

    name = "chroma"
    upstream = "diffusers 0.42.1"
    classes = ("ChromaTransformer2DModel",)
    stacks = (
        ("transformer_blocks", r"^transformer_blocks\.(\d+)\."),
        ("single_transformer_blocks", r"^single_transformer_blocks\.(\d+)\."),
    )
    embed = (prefixes("x_embedder", "context_embedder"), prefixes("distilled_guidance_layer"))
    head = (prefixes("norm_out", "proj_out"),)
    components = (
        *block_norms("transformer_blocks|single_transformer_blocks"),
        *double_stream("transformer_blocks"),
        (r"^single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_out)\.", "self_attn"),
        (r"^single_transformer_blocks\.\d+\.proj_mlp\.", "ffn"),
        (prefixes("x_embedder", "context_embedder"), "embed"),
        (prefixes("distilled_guidance_layer"), "modulation"),
        (prefixes("norm_out", "proj_out"), "head"),
    )
    catch_all = frozenset({"embed", "modulation", "head"})
