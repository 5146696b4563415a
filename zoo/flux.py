"""Flux.1 and Flux.2 (Klein, Dev): a double-stream stack, then a single-stream stack.

Names read from diffusers 0.42.1 (``models/transformers/transformer_flux.py``,
``transformer_flux2.py``). Depth: ``transformer_blocks`` (double) run first, then
``single_transformer_blocks``; ``depth_scope="per_stack"`` restarts at the first single block (as
the per-component x depth recipe's log shows), ``"global"`` counts on through both.

Single blocks fuse attention and MLP, so their fused projections cannot be split by component:
Flux.1's ``proj_mlp`` (MLP in) is ``ffn`` and its ``proj_out`` (attention out and MLP out,
concatenated) is ``self_attn``; Flux.2's ``attn.to_qkv_mlp_proj`` and ``attn.to_out`` are
``self_attn`` (they live under ``attn.``, as the recipe's ``attn.to_*`` pattern says).
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, double_stream, prefixes

_STACKS = (
    ("transformer_blocks", r"^transformer_blocks\.(\d+)\."),
    ("single_transformer_blocks", r"^single_transformer_blocks\.(\d+)\."),
)
_BLOCKS = r"transformer_blocks|single_transformer_blocks"


@ADAPTERS.register_module("flux")
class Flux(DiffusersAdapter):
    """Flux.1 [dev] / [schnell] (``FluxTransformer2DModel``): 19 double + 38 single blocks."""

    name = "flux"
    upstream = "diffusers 0.42.1"
    classes = ("FluxTransformer2DModel",)
    stacks = _STACKS
    embed = (prefixes("x_embedder", "context_embedder", "time_text_embed"),)
    head = (prefixes("norm_out", "proj_out"),)
    components = (
        *block_norms(_BLOCKS),
        *double_stream("transformer_blocks"),
        (r"^single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_out)\.", "self_attn"),
        (r"^single_transformer_blocks\.\d+\.proj_mlp\.", "ffn"),
        (prefixes("x_embedder", "context_embedder", "time_text_embed"), "embed"),
        (prefixes("norm_out", "proj_out"), "head"),
    )
    catch_all = frozenset({"embed", "head"})


@ADAPTERS.register_module("flux2")
class Flux2(DiffusersAdapter):
    """Flux.2 [dev] and [klein] 4B / 9B (``Flux2Transformer2DModel``).

    Modulation is shared by all blocks of a stream (``double_stream_modulation_img/txt``,
    ``single_stream_modulation``): the ``modulation`` catch-all at layer 0.
    """

    name = "flux2"
    upstream = "diffusers 0.42.1"
    classes = ("Flux2Transformer2DModel",)
    stacks = _STACKS
    embed = (
        prefixes("x_embedder", "context_embedder", "time_guidance_embed"),
        prefixes("double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation"),
    )
    head = (prefixes("norm_out", "proj_out"),)
    components = (
        *block_norms(_BLOCKS),
        *double_stream("transformer_blocks"),
        (r"^single_transformer_blocks\.\d+\.attn\.(?:to_qkv_mlp_proj|to_out)\.", "self_attn"),
        (prefixes("x_embedder", "context_embedder", "time_guidance_embed"), "embed"),
        (
            prefixes("double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation"),
            "modulation",
        ),
        (prefixes("norm_out", "proj_out"), "head"),
    )
    catch_all = frozenset({"embed", "modulation", "head"})
