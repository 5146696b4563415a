"""Z-Image (Turbo / Base): two refiner stacks, then the main stack of single-stream blocks.

Names read from diffusers 0.42.1 (``models/transformers/transformer_z_image.py``). Three stacks in
execution order: ``noise_refiner`` (image tokens), ``context_refiner`` (caption tokens), ``siglip_refiner`` (Omni's
image-condition tokens, when ``siglip_feat_dim`` is set), then
``layers`` over the joined sequence; ``depth_scope="per_stack"`` restarts in each. Attention is
``attention.to_*`` (``self_attn``), the SwiGLU MLP ``feed_forward.w1/w2/w3`` (``ffn``); the
per-block ``adaLN_modulation`` (absent in ``context_refiner``) is ``norm``.
"""

from __future__ import annotations

from recipes.registry import ADAPTERS
from zoo.diffusers_common import DiffusersAdapter, block_norms, prefixes

_STACKS = "noise_refiner|context_refiner|layers|siglip_refiner"
_EMBED = prefixes(
    "x_pad_token",
    "cap_pad_token",
    "siglip_pad_token",
    "all_x_embedder",
    "t_embedder",
    "cap_embedder",
    "siglip_embedder",
)
_HEAD = prefixes("all_final_layer")


@ADAPTERS.register_module("zimage")
class ZImage(DiffusersAdapter):
    """``ZImageTransformer2DModel`` (6B): 2 noise-refiner + 2 context-refiner + 30 main blocks."""

    name = "zimage"
    upstream = "diffusers 0.42.1"
    classes = ("ZImageTransformer2DModel",)
    stacks = (
        ("noise_refiner", r"^noise_refiner\.(\d+)\."),
        ("context_refiner", r"^context_refiner\.(\d+)\."),
        ("siglip_refiner", r"^siglip_refiner\.(\d+)\."),  # Omni only (siglip_feat_dim set)
        ("layers", r"^layers\.(\d+)\."),
    )
    embed = (_EMBED,)
    head = (_HEAD,)
    components = (
        *block_norms(_STACKS),
        (rf"^(?:{_STACKS})\.\d+\.adaLN_modulation\.", "norm"),
        (rf"^(?:{_STACKS})\.\d+\.attention\.", "self_attn"),
        (rf"^(?:{_STACKS})\.\d+\.feed_forward\.", "ffn"),
        (_EMBED, "embed"),
        (_HEAD, "head"),
    )
    no_decay = (r"pad_token$",)
    catch_all = frozenset({"embed", "head"})
