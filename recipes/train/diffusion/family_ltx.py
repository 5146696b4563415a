"""The LTX families: LTX-Video (``LTXPipeline``) and LTX-2 (``LTX2Pipeline``: Gemma-3 text encoder, text connectors,
video and audio VAEs, an audio-video DiT), trained on its video stream as Lightricks' ltx-trainer does by default
(``packages/ltx-trainer``, ``text_to_video`` with ``with_audio: false``). LTX-2 prompts, latents, token counts and
sample arguments are LTX-Video's; its denoiser call differs. Registered into ``families.FAMILIES`` through
``families_more.MORE_FAMILIES``."""

from __future__ import annotations

from typing import Any

import torch

from recipes.train.diffusion.family import Family, call_default, denoiser_config


class LTXVideo(Family):
    """LTX-Video (``LTXPipeline``: T5, its causal video VAE, a DiT over video tokens), as pipeline_ltx.py does it:

    - prompts: the pipeline's ``encode_prompt`` (T5, ``max_sequence_length`` 128, the ``__call__`` default) and the
      attention mask the transformer takes;
    - latents: the VAE's sample normalised as ``_normalize_latents`` does with the VAE's ``latents_mean`` /
      ``latents_std`` buffers and ``scaling_factor`` (the decode step undoes it), packed into tokens
      (``_pack_latents`` with the transformer's patch sizes);
    - the denoiser gets the timestep ``sigma * 1000``, the latent grid (frames, height, width) and the RoPE scale
      ``(temporal ratio / frame_rate, spatial ratio, spatial ratio)`` at the ``__call__``'s ``frame_rate`` (25), read
      from the pipeline by ``for_pipeline``;
    - the shift is the scheduler's resolution-dependent one over the video's token count (frames x height x
      width); the release's ``shift_terminal`` (0.1) only stretches the inference grid.
    """

    name, pipelines, presets, video = "ltx_video", ("LTXPipeline",), ("ltx-video",), True
    lora_targets = r".*transformer_blocks\.\d+\.(?:attn[12]\.(?:to_[qkv]|to_out\.0)|ff\.net\.(?:0\.proj|2))"

    def __init__(self, temporal_ratio: int = 8, frame_rate: float = 25.0) -> None:
        self.temporal_ratio, self.frame_rate = temporal_ratio, frame_rate  # the release's VAE, the call's default

    def for_pipeline(self, pipe, expert):
        super().for_pipeline(pipe, expert)
        return LTXVideo(int(pipe.vae_temporal_compression_ratio), float(call_default(pipe, "frame_rate")))

    def encode_prompts(self, pipe, prompts, device):
        embeds, mask, _, _ = pipe.encode_prompt(list(prompts), do_classifier_free_guidance=False, device=device,
                                                max_sequence_length=call_default(pipe, "max_sequence_length"))  # fmt: skip
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def normalize(self, vae, latents):
        import diffusers

        cls = getattr(diffusers, self.pipelines[0])  # LTXPipeline / LTX2Pipeline: their own _normalize_latents
        return cls._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)

    def image_seq_len(self, latents, model):
        c = denoiser_config(model)
        f, h, w = latents.shape[-3:]
        return (f // c.patch_size_t) * (h // c.patch_size) * (w // c.patch_size)  # the pipeline's sequence length

    def predict(self, model, noisy, timesteps, cond, extra):
        from diffusers import LTXPipeline

        c = denoiser_config(model)
        f, h, w = noisy.shape[-3:]
        rope = (self.temporal_ratio / self.frame_rate, extra["vae_factor"], extra["vae_factor"])
        out = model(hidden_states=LTXPipeline._pack_latents(noisy, c.patch_size, c.patch_size_t),
                    encoder_hidden_states=cond["prompt_embeds"], timestep=timesteps,
                    encoder_attention_mask=cond["prompt_attention_mask"], num_frames=f // c.patch_size_t,
                    height=h // c.patch_size, width=w // c.patch_size, rope_interpolation_scale=rope,
                    return_dict=False)[0]  # fmt: skip
        return LTXPipeline._unpack_latents(out, f // c.patch_size_t, h // c.patch_size, w // c.patch_size,
                                           c.patch_size, c.patch_size_t)  # fmt: skip

    def sample_kwargs(self, cond):
        return {"prompt_embeds": cond["prompt_embeds"], "prompt_attention_mask": cond["prompt_attention_mask"]}


class LTX2(LTXVideo):
    """LTX-2 as pipeline_ltx2.py calls it, video only:

    - prompts: the pipeline's ``encode_prompt`` (Gemma-3's hidden states of every layer stacked per token, left
      padded to the ``__call__``'s ``max_sequence_length`` 1024, and the mask): what the pipeline takes as
      ``prompt_embeds``; the denoiser call runs the pipeline's frozen ``connectors`` on them as ``__call__`` does
      (video and audio context, the connectors' mask where learnable registers replace the padding);
    - latents: the video VAE's sample normalised as ``_normalize_latents`` (its ``latents_mean`` / ``latents_std``
      buffers, ``scaling_factor``), packed into tokens; the shift is the scheduler's resolution-dependent one over
      the token count (frames x height x width), as for LTX-Video;
    - the denoiser gets ``sigma * 1000`` as ``timestep`` and ``sigma`` (LTX-2.3's prompt modulation), the latent grid
      and the ``__call__``'s ``frame_rate`` (24) for RoPE, and the audio stream isolated
      (``isolate_modalities=True``: no audio-to-video attention), which is what ltx-trainer's video-only run computes
      (ltx-core runs no audio-to-video attention without an audio modality); the audio tokens (zeros, as long as the
      pipeline makes them for the clip's duration) then reach neither the video prediction nor the loss.
    """

    name, pipelines, presets, video = "ltx2", ("LTX2Pipeline",), ("ltx2",), True
    # lora_targets: LTX-Video's, which here are the video stream's attention and MLP
    no_gradient = r".*(?:audio|av_cross_attn).*"  # the audio stream, both cross-modal attentions, their modulation
    no_gradient_why = "LTX-2 trains its video stream with the audio stream isolated: docs/diffusion.md"

    def __init__(self, connectors: Any = None, temporal_ratio: int = 8, frame_rate: float = 24.0,
                 audio_latents_per_second: float = 25.0) -> None:  # fmt: skip
        self.connectors, self.temporal_ratio, self.frame_rate = connectors, temporal_ratio, frame_rate
        self.audio_latents_per_second = audio_latents_per_second  # 16 kHz / hop 160 / the audio VAE's 4

    def for_pipeline(self, pipe, expert):
        super().for_pipeline(pipe, expert)
        per_second = pipe.audio_sampling_rate / pipe.audio_hop_length / float(pipe.audio_vae_temporal_compression_ratio)
        return LTX2(pipe.connectors, int(pipe.vae_temporal_compression_ratio), float(call_default(pipe, "frame_rate")),
                    per_second)  # fmt: skip

    def audio_frames(self, latent_frames: int) -> int:
        """The pipeline's audio latent length for a clip of ``latent_frames`` video latents at ``frame_rate``."""
        pixel_frames = (latent_frames - 1) * self.temporal_ratio + 1
        return round(pixel_frames / self.frame_rate * self.audio_latents_per_second)

    def context(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The connectors' video context, audio context and mask, as ``__call__`` computes them (Gemma pads left)."""
        if self.connectors is None:
            raise ValueError("ltx2: the family has no pipeline connectors; use FAMILIES['ltx2'].for_pipeline(pipe)")
        c = self.connectors
        dtype = next(c.parameters()).dtype
        mask = cond["prompt_attention_mask"].long()  # the task casts it to the model's dtype: bf16 miscounts > 256
        with torch.no_grad():  # frozen, as in the pipeline
            return c(cond["prompt_embeds"].to(dtype), mask, padding_side="left")

    def predict(self, model, noisy, timesteps, cond, extra):
        from diffusers import LTX2Pipeline

        c = denoiser_config(model)
        b, f, h, w = noisy.shape[0], *noisy.shape[-3:]
        f, h, w = f // c.patch_size_t, h // c.patch_size, w // c.patch_size
        video_ctx, audio_ctx, mask = (t.to(noisy.dtype) for t in self.context(cond))
        n_audio = self.audio_frames(noisy.shape[-3])
        audio = torch.zeros(b, n_audio, c.audio_in_channels, device=noisy.device, dtype=noisy.dtype)
        out = model(hidden_states=LTX2Pipeline._pack_latents(noisy, c.patch_size, c.patch_size_t),
                    audio_hidden_states=audio, encoder_hidden_states=video_ctx, audio_encoder_hidden_states=audio_ctx,
                    timestep=timesteps, sigma=timesteps, encoder_attention_mask=mask, audio_encoder_attention_mask=mask,
                    num_frames=f, height=h, width=w, fps=self.frame_rate, audio_num_frames=n_audio,
                    isolate_modalities=True, return_dict=False)[0]  # fmt: skip
        return LTX2Pipeline._unpack_latents(out, f, h, w, c.patch_size, c.patch_size_t)
