"""How each diffusers pipeline family encodes prompts and images and calls its denoiser in training.

Prompt encoding calls the pipeline's own ``encode_prompt`` (so tokenisation, clip-skip, padding and
the T5 length are the pipeline's); latents are normalised the way the pipeline's decode step undoes
(``scaling_factor`` / ``shift_factor``; WAN's per-channel ``latents_mean`` / ``latents_std``); the
denoiser call mirrors one step of the pipeline's ``__call__`` (diffusers 0.42). A family is chosen
from ``model_index.json``'s ``_class_name``.
"""

from __future__ import annotations

import torch

from recipes.train.diffusion.families_more import MORE_FAMILIES
from recipes.train.diffusion.family import Family, denoiser_config

__all__ = ["FAMILIES", "Family", "denoiser_config", "family_of", "family_of_preset"]

# peft target_modules (one full-match regex) for LoRA on the attention and MLP projections of the blocks
_MMDIT = r"(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|ff(?:_context)?\.net\.(?:0\.proj|2))"
_TEXT = dict(max_sequence_length=None)


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
    pack, negative_prompt = 2, False  # Flux-dev distils guidance into an input instead of a negative prompt
    lora_targets = (
        rf".*(?:transformer_blocks\.\d+\.{_MMDIT}|single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_mlp|proj_out))"
    )

    def encode_prompts(self, pipe, prompts, device):
        embeds, pooled, _ = pipe.encode_prompt(prompts, None, device=device)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def image_seq_len(self, latents, model):
        return (latents.shape[-1] // 2) * (latents.shape[-2] // 2)

    @staticmethod
    def pack_tokens(noisy: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FluxPipeline's 2x2 latent packing and its image / text position ids."""
        from diffusers import FluxPipeline

        b, c, h, w = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
        return packed, img_ids, torch.zeros(txt.shape[1], 3, device=noisy.device, dtype=noisy.dtype)

    @staticmethod
    def unpack_tokens(out: torch.Tensor, noisy: torch.Tensor, vae_factor: int) -> torch.Tensor:
        from diffusers import FluxPipeline

        h, w = noisy.shape[-2:]
        return FluxPipeline._unpack_latents(out, h * vae_factor, w * vae_factor, vae_factor)

    def predict(self, model, noisy, timesteps, cond, extra):
        txt = cond["prompt_embeds"]
        packed, img_ids, txt_ids = self.pack_tokens(noisy, txt)
        guidance = None
        if denoiser_config(model).guidance_embeds:  # Flux-dev: the distilled guidance scale is an input
            guidance = torch.full((noisy.shape[0],), float(extra["guidance_scale"]), device=noisy.device,
                                  dtype=torch.float32)  # fmt: skip
        out = model(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                    pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=txt, txt_ids=txt_ids,
                    img_ids=img_ids, return_dict=False)[0]  # fmt: skip
        return self.unpack_tokens(out, noisy, extra["vae_factor"])

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "pooled_prompt_embeds": cond["pooled_prompt_embeds"]}


class Chroma(Flux):
    """Chroma (``ChromaPipeline``): Flux.1's transformer layout, latents, packing and resolution-dependent shift,
    with one T5 encoder (no pooled CLIP vector, no guidance input) and classifier-free guidance. As
    pipeline_chroma.py does it, the T5 attention mask (prompt tokens plus the first padding token) is extended
    with ones for the image tokens and given to the transformer."""

    name, pipelines, presets = "chroma", ("ChromaPipeline",), ("chroma",)
    negative_prompt = True

    def encode_prompts(self, pipe, prompts, device):
        embeds, _, mask, *_ = pipe.encode_prompt(prompts, device=device, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def predict(self, model, noisy, timesteps, cond, extra):
        txt = cond["prompt_embeds"]
        packed, img_ids, txt_ids = self.pack_tokens(noisy, txt)
        mask = cond["prompt_attention_mask"]  # ChromaPipeline._prepare_attention_mask: image tokens all attend
        ones = torch.ones(noisy.shape[0], packed.shape[1], device=mask.device, dtype=torch.bool)
        out = model(hidden_states=packed, timestep=timesteps / 1000, encoder_hidden_states=txt, txt_ids=txt_ids,
                    img_ids=img_ids, attention_mask=torch.cat([mask, ones], dim=1), return_dict=False)[0]  # fmt: skip
        return self.unpack_tokens(out, noisy, extra["vae_factor"])

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "prompt_attention_mask": cond["prompt_attention_mask"]}


class Flux2(Family):
    """Flux.2 [dev] (``Flux2Pipeline``, Mistral-3 text encoder, guidance input) and [klein]
    (``Flux2KleinPipeline``, Qwen3 text encoder, classifier-free guidance), as pipeline_flux2*.py do it:

    - prompts: the pipeline's ``encode_prompt`` (chat template, hidden states of three encoder layers
      stacked on channels); text position ids ``(0, 0, 0, l)`` from ``_prepare_text_ids``;
    - latents: the VAE's sample, 2x2 patches folded into channels (``_patchify_latents``), then the
      VAE's batch-norm statistics (``(x - bn.running_mean) / sqrt(bn.running_var + eps)``), which the
      pipeline's decode undoes; the denoiser sees them as a token sequence (``_pack_latents``) with
      ``(t, h, w, l)`` ids from ``_prepare_latent_ids``;
    - timesteps: ``sigma`` (the pipeline passes ``t / 1000``); the dynamic shift's ``mu`` is the
      pipeline's ``compute_empirical_mu(image_seq_len, num_inference_steps)`` at the pipeline's default
      step count (50), not Flux.1's linear ``calculate_shift``;
    - guidance: [dev]'s ``guidance_embeds`` take ``task.guidance_scale``; [klein] passes none.
    """

    name, pipelines = "flux2", ("Flux2Pipeline", "Flux2KleinPipeline")
    presets = ("flux2-dev", "flux2-klein-4b", "flux2-klein-9b")
    pack = 2
    lora_targets = (r".*(?:transformer_blocks\.\d+\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|"
                    r"ff(?:_context)?\.linear_(?:in|out))|single_transformer_blocks\.\d+\.attn\.(?:to_qkv_mlp_proj|to_out))")  # fmt: skip

    def encode_prompts(self, pipe, prompts, device):
        embeds, _ = pipe.encode_prompt(prompts, device=device)
        return {"prompt_embeds": embeds}

    def normalize(self, vae, latents):
        from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

        x = Flux2Pipeline._patchify_latents(latents)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(x.device, x.dtype)
        return (x - mean) / std

    def image_seq_len(self, latents, model):
        return latents.shape[-1] * latents.shape[-2]  # already 2x2-patchified by normalize

    def predict(self, model, noisy, timesteps, cond, extra):
        from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

        txt = cond["prompt_embeds"]
        img_ids = Flux2Pipeline._prepare_latent_ids(noisy).to(noisy.device)
        txt_ids = Flux2Pipeline._prepare_text_ids(txt).to(noisy.device)
        guidance = None
        if denoiser_config(model).guidance_embeds:  # [dev]: the guidance scale is an input of the distilled model
            guidance = torch.full((noisy.shape[0],), float(extra["guidance_scale"]), device=noisy.device,
                                  dtype=torch.float32)  # fmt: skip
        out = model(hidden_states=Flux2Pipeline._pack_latents(noisy), timestep=timesteps / 1000, guidance=guidance,
                    encoder_hidden_states=txt, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]  # fmt: skip
        return Flux2Pipeline._unpack_latents_with_ids(out, img_ids)

    def takes_negative(self, pipe):
        import inspect

        return "negative_prompt_embeds" in inspect.signature(type(pipe).__call__).parameters  # [klein] only

    def dynamic_mu(self, pipe):
        import inspect

        from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

        steps = inspect.signature(type(pipe).__call__).parameters["num_inference_steps"].default
        return lambda image_seq_len: compute_empirical_mu(image_seq_len, steps)


class ZImage(Family):
    """Z-Image (``ZImagePipeline``), as pipeline_z_image.py does it: the prompt through the pipeline's
    ``encode_prompt`` (Qwen3 chat template, second-to-last hidden state, padding removed: one tensor per prompt);
    kept here padded to ``max_sequence_length`` with a mask so conditions batch and cache like the others, and
    unpadded again for the transformer. The transformer takes a list of ``(C, 1, H, W)`` latents, the reversed
    time ``(1000 - t) / 1000`` and returns the negated velocity (the pipeline steps with ``-output``)."""

    name, pipelines, presets = "zimage", ("ZImagePipeline",), ("zimage-turbo",)
    pack = 2  # the transformer's 2x2 patches (``all_patch_size``)
    lora_targets = (
        r".*(?:layers|noise_refiner|context_refiner)\.\d+\.(?:attention\.(?:to_[qkv]|to_out\.0)|feed_forward\.w[123])"
    )
    max_sequence_length = 512  # the pipeline's default

    def encode_prompts(self, pipe, prompts, device):
        embeds, _ = pipe.encode_prompt(list(prompts), device=device, do_classifier_free_guidance=False,
                                       max_sequence_length=self.max_sequence_length)  # fmt: skip
        n, dim = self.max_sequence_length, embeds[0].shape[-1]
        padded = torch.zeros(len(embeds), n, dim, dtype=embeds[0].dtype, device=device)
        mask = torch.zeros(len(embeds), n, device=device)
        for i, e in enumerate(embeds):
            padded[i, : len(e)], mask[i, : len(e)] = e, 1.0
        return {"prompt_embeds": padded, "prompt_mask": mask}

    def _captions(self, cond):
        return [e[m.bool()] for e, m in zip(cond["prompt_embeds"], cond["prompt_mask"], strict=True)]

    def image_seq_len(self, latents, model):
        return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)  # as the pipeline computes it for the shift

    def predict(self, model, noisy, timesteps, cond, extra):
        out = model(list(noisy.unsqueeze(2).unbind(0)), (1000 - timesteps) / 1000, self._captions(cond),
                    return_dict=False)[0]  # fmt: skip
        return -torch.stack(out).squeeze(2)

    def sample_kwargs(self, cond):
        return {"prompt_embeds": self._captions(cond)}


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

    def for_pipeline(self, pipe, expert):
        ratio = pipe.config.get("boundary_ratio")
        if getattr(pipe, "transformer_2", None) is None or ratio is None:
            return super().for_pipeline(pipe, expert)
        return WanExpert(expert, float(ratio))


class WanExpert(Wan):
    """One expert of a Wan 2.2 ``WanPipeline`` (``transformer_2``, ``boundary_ratio``): ``transformer`` denoises
    ``t >= boundary_ratio * 1000`` and ``transformer_2`` the rest (pipeline_wan.py), so an expert (``task.expert``,
    one per run) trains on its own sigmas; load the second's LoRA with ``load_into_transformer_2=True``."""

    name, pipelines, presets = "wan22", (), ("wan22-t2v-a14b",)  # chosen by Wan.for_pipeline, not by class
    EXPERTS = ("transformer", "transformer_2")

    def __init__(self, expert: str | None = "transformer", boundary_ratio: float = 0.875) -> None:
        if expert not in self.EXPERTS:
            raise ValueError(f"task.expert={expert!r}: this Wan 2.2 pipeline has two experts; name the one to train: "
                             "'transformer' (high noise, t >= boundary_ratio * 1000) or 'transformer_2' (low "
                             "noise)")  # fmt: skip
        if not 0.0 < boundary_ratio < 1.0:
            raise ValueError(f"Wan 2.2 pipeline: boundary_ratio={boundary_ratio} must lie in (0, 1)")
        self.denoiser, self.boundary_ratio = expert, boundary_ratio

    def sigma_range(self):
        b = self.boundary_ratio
        return (b, 1.0) if self.denoiser == "transformer" else (0.0, b)


class PixArtSigma(Family):
    """PixArt-Sigma, as pipeline_pixart_sigma.py does it: T5 embeddings + mask (300 tokens), DDPM epsilon, no
    resolution conditions, the learned-sigma output halved. diffusers 0.42 has no LoRA support for it: peft injects
    the LoRA (``inject_adapter_in_model``) and ``lora_io`` saves a peft adapter."""

    name, pipelines, presets, denoiser = "pixart", ("PixArtSigmaPipeline",), ("pixart-sigma",), "transformer"
    objective, max_sequence_length = "ddpm", 300
    lora_targets = r".*transformer_blocks\.\d+\.(?:attn[12]\.(?:to_[qkv]|to_out\.0)|ff\.net\.(?:0\.proj|2))"

    def encode_prompts(self, pipe, prompts, device):
        embeds, mask, _, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False, device=device,
                                                max_sequence_length=self.max_sequence_length)  # fmt: skip
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def predict(self, model, noisy, timesteps, cond, extra):
        out = model(noisy, encoder_hidden_states=cond["prompt_embeds"], timestep=timesteps,
                    encoder_attention_mask=cond["prompt_attention_mask"],
                    added_cond_kwargs={"resolution": None, "aspect_ratio": None}, return_dict=False)[0]  # fmt: skip
        return out.chunk(2, dim=1)[0] if model.config.out_channels // 2 == noisy.shape[1] else out

    def sample_kwargs(self, cond):
        # and "negative_prompt": None on the negative side (its default "" beside the embeddings is an error)
        return {"prompt_embeds": cond["prompt_embeds"], "prompt_attention_mask": cond["prompt_attention_mask"],
                "prompt": None}  # fmt: skip


_FAMILIES = (SD15(), SDXL(), SD3(), Flux(), Flux2(), Chroma(), ZImage(), Wan(), WanExpert(), PixArtSigma())
FAMILIES: dict[str, Family] = {f.name: f for f in (*_FAMILIES, *MORE_FAMILIES)}
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
