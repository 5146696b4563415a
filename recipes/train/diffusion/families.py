"""How each diffusers pipeline family encodes prompts and images and calls its denoiser in training.

Prompt encoding calls the pipeline's own ``encode_prompt`` (so tokenisation, clip-skip, padding and
the T5 length are the pipeline's); latents are normalised the way the pipeline's decode step undoes
(``scaling_factor`` / ``shift_factor``; WAN's per-channel ``latents_mean`` / ``latents_std``); the
denoiser call mirrors one step of the pipeline's ``__call__`` (diffusers 0.42). A family is chosen
from ``model_index.json``'s ``_class_name``.
"""

from __future__ import annotations

from typing import Any

import torch

# peft target_modules (one full-match regex) for LoRA on the attention and MLP projections of the blocks
_MMDIT = r"(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|ff(?:_context)?\.net\.(?:0\.proj|2))"
_TEXT = dict(max_sequence_length=None)


class Family:
    name = ""
    pipelines: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()  # ``model.preset`` names of this family (random weights: tools/show_lr.py)
    denoiser = "transformer"  # the pipeline attribute / subfolder that trains
    objective = "flow"
    video = False
    lora_targets = ""
    lora_save_key = "transformer_lora_layers"

    def encode_prompts(self, pipe: Any, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def normalize(self, vae: Any, latents: torch.Tensor) -> torch.Tensor:
        c = vae.config
        return (latents - (c.get("shift_factor") or 0.0)) * c.scaling_factor

    def predict(self, model: Any, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor],
                extra: dict[str, Any]) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError

    def image_seq_len(self, latents: torch.Tensor, model: Any) -> int:
        p = getattr(model.config, "patch_size", 1) or 1
        p = p if isinstance(p, int) else p[-1]
        return (latents.shape[-1] // p) * (latents.shape[-2] // p)

    def sample_kwargs(self, cond: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Pipeline ``__call__`` arguments that pass precomputed prompt embeddings."""
        return {"prompt_embeds": cond["prompt_embeds"]}


class SD15(Family):
    name, pipelines, denoiser, objective = "sd15", ("StableDiffusionPipeline",), "unet", "ddpm"
    presets = ("sd15",)
    lora_targets = r".*(?:attn[12]\.(?:to_[qkv]|to_out\.0)|ff\.net\.(?:0\.proj|2))"
    lora_save_key = "unet_lora_layers"

    def encode_prompts(self, pipe, prompts, device):
        embeds, _ = pipe.encode_prompt(prompts, device, 1, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def normalize(self, vae, latents):
        return latents * vae.config.scaling_factor

    def predict(self, model, noisy, timesteps, cond, extra):
        return model(noisy, timesteps, encoder_hidden_states=cond["prompt_embeds"], return_dict=False)[0]


class SDXL(SD15):
    name, pipelines, presets = "sdxl", ("StableDiffusionXLPipeline",), ("sdxl",)

    def encode_prompts(self, pipe, prompts, device):
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, model, noisy, timesteps, cond, extra):
        # add_time_ids = original size, crop top-left, target size (pipeline's _get_add_time_ids)
        h, w = noisy.shape[-2] * extra["vae_factor"], noisy.shape[-1] * extra["vae_factor"]
        ids = [list(o) + list(c) + [h, w] for o, c in zip(extra["original_size"], extra["crop_top_left"], strict=True)]
        time_ids = torch.tensor(ids, dtype=noisy.dtype, device=noisy.device)
        added = {"text_embeds": cond["pooled_prompt_embeds"], "time_ids": time_ids}
        return model(noisy, timesteps, encoder_hidden_states=cond["prompt_embeds"], added_cond_kwargs=added,
                     return_dict=False)[0]  # fmt: skip

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "pooled_prompt_embeds": cond["pooled_prompt_embeds"]}


class SD3(Family):
    name, pipelines, presets = "sd3", ("StableDiffusion3Pipeline",), ("sd3-medium", "sd35-medium", "sd35-large")
    lora_targets = rf".*transformer_blocks\.\d+\.{_MMDIT}"

    def encode_prompts(self, pipe, prompts, device):
        embeds, _, pooled, _ = pipe.encode_prompt(prompts, None, None, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def predict(self, model, noisy, timesteps, cond, extra):
        return model(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=cond["prompt_embeds"],
                     pooled_projections=cond["pooled_prompt_embeds"], return_dict=False)[0]  # fmt: skip

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "pooled_prompt_embeds": cond["pooled_prompt_embeds"]}


class Flux(Family):
    name, pipelines, presets = "flux", ("FluxPipeline",), ("flux1-dev", "flux1-schnell")
    lora_targets = (
        rf".*(?:transformer_blocks\.\d+\.{_MMDIT}|single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_mlp|proj_out))"
    )

    def encode_prompts(self, pipe, prompts, device):
        embeds, pooled, _ = pipe.encode_prompt(prompts, None, device=device)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def image_seq_len(self, latents, model):
        return (latents.shape[-1] // 2) * (latents.shape[-2] // 2)

    def predict(self, model, noisy, timesteps, cond, extra):
        from diffusers import FluxPipeline

        b, c, h, w = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
        txt = cond["prompt_embeds"]
        txt_ids = torch.zeros(txt.shape[1], 3, device=noisy.device, dtype=noisy.dtype)
        guidance = None
        if model.config.guidance_embeds:  # Flux-dev: the distilled guidance scale is an input
            guidance = torch.full((b,), float(extra["guidance_scale"]), device=noisy.device, dtype=torch.float32)
        out = model(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                    pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=txt, txt_ids=txt_ids,
                    img_ids=img_ids, return_dict=False)[0]  # fmt: skip
        return FluxPipeline._unpack_latents(out, h * extra["vae_factor"], w * extra["vae_factor"], extra["vae_factor"])

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "pooled_prompt_embeds": cond["pooled_prompt_embeds"]}


class Wan(Family):
    name, pipelines, video = "wan", ("WanPipeline",), True
    presets = ("wan21-t2v-14b", "wan21-t2v-1.3b")
    lora_targets = r".*blocks\.\d+\.(?:attn[12]\.(?:to_[qkv]|to_out\.0)|ffn\.net\.(?:0\.proj|2))"

    def encode_prompts(self, pipe, prompts, device):
        embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device)
        return {"prompt_embeds": embeds}

    def normalize(self, vae, latents):
        c = vae.config
        mean = torch.tensor(c.latents_mean, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(c.latents_std, dtype=latents.dtype, device=latents.device).view(1, -1, 1, 1, 1)
        return (latents - mean) / std  # WanPipeline decodes with latents * std + mean

    def predict(self, model, noisy, timesteps, cond, extra):
        return model(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=cond["prompt_embeds"],
                     return_dict=False)[0]  # fmt: skip


FAMILIES: dict[str, Family] = {f.name: f for f in (SD15(), SDXL(), SD3(), Flux(), Wan())}
BY_PIPELINE = {p: f for f in FAMILIES.values() for p in f.pipelines}
BY_PRESET = {p: f for f in FAMILIES.values() for p in f.presets}


def family_of(pipeline_class: str, where: str) -> Family:
    if pipeline_class not in BY_PIPELINE:
        raise ValueError(f"{where}: pipeline {pipeline_class!r} is not trained by this task yet; supported: "
                         f"{sorted(BY_PIPELINE)}")  # fmt: skip
    return BY_PIPELINE[pipeline_class]


def family_of_preset(preset: str | None) -> Family:
    """The family of a ``model.preset`` (the denoiser with random weights, e.g. for ``tools/show_lr.py``)."""
    if preset not in BY_PRESET:
        raise ValueError(f"model.preset={preset!r}: the diffusion task trains the presets {sorted(BY_PRESET)} "
                         "(or set model.pretrained to a pipeline folder)")  # fmt: skip
    return BY_PRESET[preset]
