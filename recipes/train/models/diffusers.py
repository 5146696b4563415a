"""diffusers denoisers from a named preset (a released model's full-size config) or a config dict.

Random weights, never a download: ``device="meta"`` builds the full-size tree without memory, which
is all ``tools/show_lr.py`` and the tests need. The presets are the ``config.json`` values of the
released checkpoints (read from their model cards / diffusers docs) that differ from the class
defaults of diffusers 0.42.1; ``tiny-*`` presets are small configs for CPU tests.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from torch import nn

from recipes.train.registry import MODELS

_SDXL = dict(
    sample_size=128, cross_attention_dim=2048, block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)  # fmt: skip
_SD35 = dict(
    qk_norm="rms_norm", caption_projection_dim=2432, num_layers=38, num_attention_heads=38, pos_embed_max_size=192
)

#: preset name -> (diffusers class, config overrides on the class defaults)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "flux1-dev": ("FluxTransformer2DModel", dict(guidance_embeds=True)),  # 19 double + 38 single
    "flux1-schnell": ("FluxTransformer2DModel", {}),
    "flux2-dev": ("Flux2Transformer2DModel", {}),  # 8 double + 48 single, 48 heads
    "flux2-klein-4b": (
        "Flux2Transformer2DModel",
        dict(
            num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680, guidance_embeds=False
        ),
    ),  # fmt: skip
    "flux2-klein-9b": (
        "Flux2Transformer2DModel",
        dict(
            num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288, guidance_embeds=False
        ),
    ),  # fmt: skip
    "sd15": ("UNet2DConditionModel", dict(sample_size=64, cross_attention_dim=768)),
    "sdxl": ("UNet2DConditionModel", _SDXL),
    "sd3-medium": (
        "SD3Transformer2DModel",
        dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=192),
    ),  # fmt: skip
    "sd35-medium": (
        "SD3Transformer2DModel",
        dict(
            _SD35,
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)),
        ),
    ),  # fmt: skip
    "sd35-large": ("SD3Transformer2DModel", _SD35),
    "wan21-t2v-14b": ("WanTransformer3DModel", {}),  # 40 blocks, dim 5120
    "wan21-t2v-1.3b": ("WanTransformer3DModel", dict(num_attention_heads=12, ffn_dim=8960, num_layers=30)),
    "wan21-i2v-14b": ("WanTransformer3DModel", dict(in_channels=36, image_dim=1280, added_kv_proj_dim=5120)),
    "ltx-video": ("LTXVideoTransformer3DModel", {}),  # 2B, 28 blocks
    "ltx2": ("LTX2VideoTransformer3DModel", {}),  # 19B, 48 audio-video blocks
    "qwen-image": ("QwenImageTransformer2DModel", {}),  # 20B, 60 blocks
    "zimage-turbo": ("ZImageTransformer2DModel", {}),  # 6B: 2 + 2 refiner, 30 main blocks
    "zimage-omni": ("ZImageTransformer2DModel", dict(siglip_feat_dim=1152)),  # + SigLIP image-condition refiner
    "chroma": ("ChromaTransformer2DModel", {}),  # 19 double + 38 single
    "hunyuan-video": ("HunyuanVideoTransformer3DModel", {}),  # 13B: 2 refiner + 20 double + 40 single
    "pixart-sigma": (
        "PixArtTransformer2DModel",
        dict(caption_channels=4096, interpolation_scale=2, use_additional_conditions=False),
    ),  # fmt: skip
    "pixart-alpha-1024": ("PixArtTransformer2DModel", dict(caption_channels=4096, use_additional_conditions=True)),
    "sana-1600m": ("SanaTransformer2DModel", dict(sample_size=32)),  # 20 blocks, dim 2240
    "sana-600m": (
        "SanaTransformer2DModel",
        dict(
            num_attention_heads=36,
            num_layers=28,
            num_cross_attention_heads=16,
            cross_attention_head_dim=72,
            cross_attention_dim=1152,
        ),
    ),  # fmt: skip
}


@MODELS.register_module("diffusers")
def build_diffusers_model(
    preset: str | None = None,
    cls: str | None = None,
    config: Mapping[str, Any] | None = None,
    device: str | None = None,
) -> nn.Module:
    """A diffusers model with random weights: ``preset`` (see ``PRESETS``) or ``cls`` + ``config``.

    ``config`` overrides the preset's values (or the class defaults when no preset is given).

    >>> model = build_diffusers_model("flux1-dev", device="meta")
    >>> len(model.single_transformer_blocks)
    38
    """
    import diffusers
    import torch

    cls_name, values = _resolve(preset, cls)
    klass = getattr(diffusers, cls_name, None)
    if klass is None:
        raise KeyError(f"model.cls: diffusers {diffusers.__version__} has no class {cls_name!r}; check the spelling")
    values = {**values, **dict(config or {})}
    if device is None:
        return klass(**values)
    with torch.device(device):
        return klass(**values)


def _resolve(preset: str | None, cls: str | None) -> tuple[str, dict[str, Any]]:
    if preset is None:
        if cls is None:
            raise ValueError(f"model: give `preset` (one of {sorted(PRESETS)}) or `cls` (a diffusers class name)")
        return cls, {}
    if preset not in PRESETS:
        near = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"model.preset: unknown diffusers preset {preset!r}.{hint} Known: {', '.join(sorted(PRESETS))}")
    preset_cls, values = PRESETS[preset]
    if cls is not None and cls != preset_cls:
        raise ValueError(f"model: preset {preset!r} is a {preset_cls}, but cls={cls!r}; drop `cls` or the preset")
    return preset_cls, dict(values)
