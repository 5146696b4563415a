"""Text-encoder LoRA for SD 1.5 / SDXL: ``policy.text_encoder`` (kohya's ``lora_te`` modules, diffusers'
``--train_text_encoder``).

``policy=dict(type="lora_only", r=16, alpha=16, text_encoder=dict(r=8, alpha=8, targets=[...]))`` (or
``text_encoder=True``: every default) puts peft LoRA on the pipeline's CLIP text encoder(s) too: ``text_encoder``
(SD 1.5) or ``text_encoder`` and ``text_encoder_2`` (SDXL). Defaults as diffusers'
``train_dreambooth_lora_sdxl.py``: the attention projections ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj``,
with the denoiser's rank and alpha. Only these two families, whose pipelines' ``load_lora_weights`` read
``text_encoder.`` / ``text_encoder_2.`` tensors, take it.

The encoders become submodules of the trained denoiser under their pipeline names, so the engine's param
groups, checkpoints, resume and DDP cover them with nothing else changed: their parameter names are
``text_encoder.encoder.layers.<i>...``, the zoo ``unet`` adapter's ``text_encoder`` / ``text_encoder_2``
components (own LR through ``strategy.component_lr`` / ``component_scale``) and towers (a layer id per encoder
layer; ``strategy.tower_depth=True`` applies the strategy's depth inside each). The prompt goes
through them with gradients every step, so the text embeddings are not cached (``task.cache_dir`` is an
error) and FSDP (which shards the denoiser alone) is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

#: families whose pipeline's ``load_lora_weights`` reads text-encoder LoRA, and those encoders' pipeline names
TEXT_ENCODERS = {"sd15": ("text_encoder",), "sdxl": ("text_encoder", "text_encoder_2")}
#: diffusers' ``train_dreambooth_lora_sdxl.py`` text-encoder targets (CLIP attention projections)
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
TEXT_KEYS = ("r", "alpha", "targets")
#: final encoder layers whose output the family never reads: SDXL takes ``text_encoder``'s penultimate hidden state
#: (``text_encoder_2``'s last layer feeds its pooled output), so a LoRA there would get no gradient, and DDP stops
#: on parameters that never get one. No adapter goes there.
UNREACHED_LAYERS = {("sdxl", "text_encoder"): 1}


def text_encoder_settings(value: Any, lora: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``policy.text_encoder`` with its defaults filled (the denoiser adapter's rank and alpha), None when off."""
    if value is None or value is False:
        return None
    if lora is None:
        raise ValueError("policy.text_encoder adds LoRA beside the denoiser's: set policy.type='lora_only'")
    if lora["kind"] != "lora" or lora["dora"]:
        raise ValueError(f"policy.text_encoder is plain LoRA, as diffusers loads it; policy.kind={lora['kind']!r} / "
                         f"policy.dora={lora['dora']!r} on the denoiser: use kind='lora', dora=False")  # fmt: skip
    given = {} if value is True else value
    if not isinstance(given, Mapping):
        raise ValueError(f"policy.text_encoder must be True or dict(r=, alpha=, targets=), got {value!r}")
    for key in given:
        if key not in TEXT_KEYS:
            raise ValueError(f"policy.text_encoder.{key} is not a text-encoder LoRA option; it reads {TEXT_KEYS}")
    out = {"r": lora["r"], "alpha": lora["alpha"], "targets": list(TEXT_TARGETS), **given}
    r = out["r"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"policy.text_encoder.r must be a positive integer, got {r!r}")
    if isinstance(out["alpha"], bool) or not isinstance(out["alpha"], (int, float)) or out["alpha"] <= 0:
        raise ValueError(f"policy.text_encoder.alpha must be a positive number, got {out['alpha']!r}")
    if not out["targets"] or isinstance(out["targets"], (str, bytes)):
        raise ValueError(f"policy.text_encoder.targets must be a list of module-name suffixes, got {out['targets']!r}")
    return out


def text_lora_config(settings: Mapping[str, Any], skip: tuple[int, ...] = ()) -> Any:
    """peft's config; ``skip``: encoder layers left without an adapter (those the family never reads)."""
    from peft import LoraConfig

    exclude = rf"(.*\.)?encoder\.layers\.({'|'.join(map(str, skip))})\..*" if skip else None  # full match
    return LoraConfig(r=settings["r"], lora_alpha=settings["alpha"], target_modules=list(settings["targets"]),
                      exclude_modules=exclude)  # fmt: skip


def check_text_run(lora: Mapping[str, Any] | None, cache_dir: Any, train: Mapping[str, Any]) -> bool:
    """Whether the text encoders train; the run options that cannot go with it are errors naming both."""
    if not (lora and lora.get("text_encoder")):
        return False
    if cache_dir:
        raise ValueError("policy.text_encoder trains the text encoder, so task.cache_dir cannot keep its embeddings "
                         "(they change every step): set task.cache_dir=None")  # fmt: skip
    if train.get("fsdp"):
        raise ValueError("policy.text_encoder with train.fsdp=True: FSDP shards the denoiser alone; train the "
                         "text-encoder LoRA with DDP (torchrun without train.fsdp) or on one GPU")  # fmt: skip
    return True


def encoder_names(family: str) -> tuple[str, ...]:
    if family not in TEXT_ENCODERS:
        raise ValueError(f"policy.text_encoder applies to {sorted(TEXT_ENCODERS)} (their pipelines load "
                         f"text-encoder LoRA); the {family} family trains its denoiser only: remove it")  # fmt: skip
    return TEXT_ENCODERS[family]


def attach_text_encoders(model: Any, pipe: Any, family: str, settings: Mapping[str, Any] | None) -> Any:
    """LoRA on each text encoder of ``pipe`` (its base frozen, the adapter in float32), each then a submodule of
    ``model`` under its pipeline name, so the engine trains, checkpoints and syncs it with the denoiser."""
    if not settings:
        return model
    names = encoder_names(family)
    if pipe is None:  # tools/show_lr.py: no pipeline folder, so the releases' encoders beside the preset denoiser
        pipe = release_encoders(names, next(model.parameters()).device)
    for name in names:
        encoder = getattr(pipe, name)
        encoder.requires_grad_(False)
        n = encoder.config.num_hidden_layers
        skip = tuple(range(n - UNREACHED_LAYERS.get((family, name), 0), n))
        try:
            __import__("peft").inject_adapter_in_model(text_lora_config(settings, skip), encoder)
        except ValueError as e:
            raise ValueError(f"policy.text_encoder.targets={settings['targets']!r} match no module of the {name} "
                             f"({type(encoder).__name__}; peft: {str(e)[:160]})") from None  # fmt: skip
        for p in encoder.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        model.add_module(name, encoder)
    return model


#: the released CLIP text encoders' config.json values: SD 1.5's and SDXL's ``text_encoder`` (OpenAI CLIP ViT-L/14),
#: SDXL's ``text_encoder_2`` (OpenCLIP ViT-bigG/14, with its projection)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")  # fmt: skip
CLIP_BIG_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, hidden_act="gelu")  # fmt: skip


def release_encoders(names: tuple[str, ...], device: Any) -> Any:
    """Random-weight text encoders of the releases' sizes on ``device`` (``meta``: no memory), by pipeline name."""
    from types import SimpleNamespace

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device(device):
        built = {"text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)),
                 "text_encoder_2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIG_G))}  # fmt: skip
        return SimpleNamespace(**{n: built[n]() for n in names})


def split_state(state: dict[str, torch.Tensor], names: tuple[str, ...]) -> tuple[dict, dict[str, dict]]:
    """peft's state dict of a denoiser with encoders attached: (the denoiser's, {encoder name: its own})."""
    parts: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    rest = {}
    for key, value in state.items():
        head, _, tail = key.partition(".")
        if head in parts:
            parts[head][tail] = value
        else:
            rest[key] = value
    return rest, parts


def attached(model: Any) -> tuple[str, ...]:
    """The pipeline names of the text encoders attached to ``model`` (none: a denoiser-only run)."""
    return tuple(n for n in ("text_encoder", "text_encoder_2") if n in getattr(model, "_modules", {}))
