"""More diffusion families (Sana, Qwen-Image), registered into ``families.FAMILIES``; each mirrors one step of its
pipeline's ``__call__`` in diffusers 0.42, as the families in ``families.py`` do."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from recipes.train.diffusion.family import Family, denoiser_config


def call_default(pipe: Any, name: str) -> Any:
    """The default of argument ``name`` of the pipeline's ``__call__`` (what a user's prompt gets at inference)."""
    return inspect.signature(type(pipe).__call__).parameters[name].default


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


MORE_FAMILIES: tuple[Family, ...] = (Sana(),)
