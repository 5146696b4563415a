"""More diffusion families (Sana, Qwen-Image, LTX-Video, HunyuanVideo; LTX-Video and LTX-2 from ``family_ltx.py``), registered
into ``families.FAMILIES``; each mirrors one denoiser call of its pipeline's ``__call__`` in diffusers 0.42, as the
families in ``families.py`` do (tests/test_diffusion_more_families.py records those calls and compares)."""

from __future__ import annotations

import torch

from recipes.train.diffusion.family import Family, call_default, denoiser_config
from recipes.train.diffusion.family_ltx import LTX2, LTXVideo


class Sana(Family):
    """Sana (``SanaPipeline``: Gemma-2 text encoder, DC-AE, linear-attention DiT), as pipeline_sana.py does it:

    - prompts: the pipeline's ``encode_prompt`` with its ``__call__`` defaults, the complex human instruction
      prepended and 300 tokens kept (the first and the last 299); the empty prompt without the instruction, as
      the pipeline encodes its negative prompt, so caption dropout learns what classifier-free guidance uses;
    - latents: DC-AE is deterministic (``encode(...).latent``, no distribution), scaled by ``scaling_factor``;
    - the denoiser gets the timestep ``t * timestep_scale`` and predicts the flow velocity (the release's
      DPM-Solver++ with ``flow_prediction``, ``use_flow_sigmas`` and ``flow_shift`` 3).
    """

    name, pipelines, presets = "sana", ("SanaPipeline",), ("sana-1600m", "sana-600m")
    lora_targets = r".*transformer_blocks\.\d+\.(?:attn[12]\.(?:to_[qkv]|to_out\.0)|ff\.(?:conv_inverted|conv_point))"
    max_sequence_length = 300  # SanaPipeline.__call__'s default
    sample_options = {"use_resolution_binning": False}  # samples at the size asked, not snapped to the release's bins

    def encode_prompts(self, pipe, prompts, device):
        chi = call_default(pipe, "complex_human_instruction")
        embeds, masks = [], []
        for p in prompts:
            e, m, _, _ = pipe.encode_prompt([p], do_classifier_free_guidance=False, device=device,
                                            max_sequence_length=self.max_sequence_length,
                                            complex_human_instruction=chi if p else None)  # fmt: skip
            embeds.append(e)
            masks.append(m)
        return {"prompt_embeds": torch.cat(embeds), "prompt_attention_mask": torch.cat(masks)}

    def latent_params(self, vae, pixels):
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent

    def sample_latents(self, params, generator=None):
        return params

    def predict(self, model, noisy, timesteps, cond, extra):
        scale = denoiser_config(model).timestep_scale
        out = model(noisy, encoder_hidden_states=cond["prompt_embeds"], timestep=timesteps * scale,
                    encoder_attention_mask=cond["prompt_attention_mask"], return_dict=False)[0]  # fmt: skip
        return out.chunk(2, dim=1)[0] if denoiser_config(model).out_channels // 2 == noisy.shape[1] else out

    def sample_kwargs(self, cond):
        # and "negative_prompt": None on the negative side (its default "" beside the embeddings is an error)
        return {"prompt_embeds": cond["prompt_embeds"], "prompt_attention_mask": cond["prompt_attention_mask"],
                "prompt": None}  # fmt: skip


class QwenImage(Family):
    """Qwen-Image (``QwenImagePipeline``: Qwen2.5-VL text encoder, a Wan-style 3D VAE, MMDiT), as
    pipeline_qwenimage.py does it:

    - prompts: the pipeline's ``encode_prompt`` (its system template, the template's tokens dropped, the last
      hidden state), padded here to ``max_sequence_length`` (the ``__call__`` default, 512) with the mask so
      conditions batch and cache; the transformer masks the padding (``encoder_hidden_states_mask``);
    - latents: the VAE's one-frame video latent, normalised by its per-channel ``latents_mean`` / ``latents_std``
      (the decode step does ``x * std + mean``), trained as an image ``(B, C, H, W)``; 2x2 patches packed into
      tokens (``_pack_latents``) with ``img_shapes`` ``(1, H/2, W/2)``;
    - timesteps: ``sigma`` (the pipeline passes ``t / 1000``), the scheduler's resolution-dependent shift (mu
      linear in the token count between ``base_shift`` and ``max_shift``); the release's ``shift_terminal``
      (0.02) only stretches the inference grid so its last step ends at 0.02, not the training sigmas;
    - samples: true classifier-free guidance, ``true_cfg_scale`` (``task.samples.guidance_scale``).
    """

    name, pipelines, presets = "qwen_image", ("QwenImagePipeline",), ("qwen-image",)
    pack = 2
    guidance_argument = "true_cfg_scale"  # its ``guidance_scale`` applies to guidance-distilled weights only
    lora_targets = (r".*transformer_blocks\.\d+\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|"
                    r"(?:img|txt)_mlp\.net\.(?:0\.proj|2))")  # fmt: skip

    def encode_prompts(self, pipe, prompts, device):
        n = call_default(pipe, "max_sequence_length")
        embeds, mask = pipe.encode_prompt(list(prompts), device=device, max_sequence_length=n)
        b, length, dim = embeds.shape
        padded = torch.zeros(b, n, dim, dtype=embeds.dtype, device=embeds.device)
        full = torch.zeros(b, n, dtype=torch.long, device=embeds.device)
        padded[:, :length] = embeds
        full[:, :length] = 1 if mask is None else mask
        return {"prompt_embeds": padded, "prompt_embeds_mask": full}

    def latent_params(self, vae, pixels):
        return vae.encode(pixels.unsqueeze(2).to(vae.device, vae.dtype)).latent_dist.parameters  # one frame

    def normalize(self, vae, latents):
        x = latents.squeeze(2) if latents.dim() == 5 else latents
        c = vae.config
        mean = torch.tensor(c.latents_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(c.latents_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def image_seq_len(self, latents, model):
        return (latents.shape[-2] // 2) * (latents.shape[-1] // 2)  # the packed token count the pipeline uses

    def predict(self, model, noisy, timesteps, cond, extra):
        from diffusers import QwenImagePipeline

        b, c, h, w = noisy.shape
        f = extra["vae_factor"]
        out = model(hidden_states=QwenImagePipeline._pack_latents(noisy, b, c, h, w), timestep=timesteps / 1000,
                    encoder_hidden_states=cond["prompt_embeds"], encoder_hidden_states_mask=cond["prompt_embeds_mask"],
                    img_shapes=[[(1, h // 2, w // 2)]] * b, return_dict=False)[0]  # fmt: skip
        return QwenImagePipeline._unpack_latents(out, h * f, w * f, f).squeeze(2)

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "prompt_embeds_mask": cond["prompt_embeds_mask"]}


class HunyuanVideo(Family):
    """HunyuanVideo (``HunyuanVideoPipeline``: Llama encoder with the pipeline's video template, CLIP pooled vector,
    3D VAE, dual- then single-stream DiT), as pipeline_hunyuan_video.py does it:

    - prompts: the pipeline's ``encode_prompt`` (the template's tokens cropped, the hidden state 2 layers before
      the last, 256 tokens + mask; CLIP's pooled vector);
    - latents: the VAE's sample x ``scaling_factor`` (``(B, C, F, H, W)``; the denoiser patchifies itself);
    - the denoiser gets ``sigma * 1000`` and, guidance-distilled, the guidance scale x 1000 (``task.guidance_scale``,
      1.0 by default as musubi-tuner trains it; the pipeline samples at 6.0); the static shift is the scheduler's.
    """

    name, pipelines, presets, video = "hunyuan_video", ("HunyuanVideoPipeline",), ("hunyuan-video",), True
    negative_prompt = False  # guidance-distilled: samples use the guidance input, no negative prompt
    lora_targets = (
        r".*(?:transformer_blocks\.\d+\.(?:attn\.(?:to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)|"
        r"ff(?:_context)?\.net\.(?:0\.proj|2))|single_transformer_blocks\.\d+\.(?:attn\.to_[qkv]|proj_mlp|proj_out))"
    )

    def encode_prompts(self, pipe, prompts, device):
        embeds, pooled, mask = pipe.encode_prompt(list(prompts), device=device,
                                                  max_sequence_length=call_default(pipe, "max_sequence_length"))  # fmt: skip
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "prompt_attention_mask": mask}

    def predict(self, model, noisy, timesteps, cond, extra):
        guidance = None
        if denoiser_config(model).guidance_embeds:  # the pipeline passes guidance_scale * 1000
            guidance = torch.full((noisy.shape[0],), float(extra["guidance_scale"]) * 1000.0, device=noisy.device,
                                  dtype=noisy.dtype)  # fmt: skip
        return model(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=cond["prompt_embeds"],
                     encoder_attention_mask=cond["prompt_attention_mask"],
                     pooled_projections=cond["pooled_prompt_embeds"], guidance=guidance, return_dict=False)[0]  # fmt: skip

    def image_seq_len(self, latents, model):
        c = denoiser_config(model)
        f, h, w = latents.shape[-3:]
        return (f // c.patch_size_t) * (h // c.patch_size) * (w // c.patch_size)

    def sample_kwargs(self, cond):
        return {k: cond[k] for k in ("prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask")}


MORE_FAMILIES: tuple[Family, ...] = (Sana(), QwenImage(), LTXVideo(), HunyuanVideo(), LTX2())
