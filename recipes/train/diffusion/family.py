"""The contract of a diffusion family (``Family``): how a pipeline's prompts, latents and denoiser call are
used in training. The families themselves are in ``families.py``; ``denoiser_config`` is the one unwrap."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from recipes.adapter import unwrap_model


def denoiser_config(model: Any) -> Any:
    """The denoiser's diffusers ``config`` through any DDP / ``torch.compile`` wrapper: the one place a family
    reads the model's settings (the wrapped model is what the forward pass calls)."""
    return unwrap_model(model).config


def call_default(pipe: Any, name: str) -> Any:
    """The default of argument ``name`` of the pipeline's ``__call__`` (what a user's prompt gets at inference)."""
    return inspect.signature(type(pipe).__call__).parameters[name].default


class Family:
    name = ""
    pipelines: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()  # ``model.preset`` names of this family (random weights: tools/show_lr.py)
    denoiser = "transformer"  # the pipeline attribute / subfolder that trains
    objective = "flow"
    video = False
    lora_targets = ""
    lora_save_key = "transformer_lora_layers"
    pack = 1  # latent patches folded into channels before the denoiser (Flux: 2x2); sizes must divide by it
    negative_prompt = True  # samples: the pipeline takes ``negative_prompt_embeds`` (classifier-free guidance)
    sample_options: dict[str, Any] = {}  # further ``__call__`` arguments of the sample grids
    guidance_argument = "guidance_scale"  # the ``__call__`` argument ``task.samples.guidance_scale`` sets
    no_gradient = ""  # full-match regex of denoiser modules the training loss does not reach (a LoRA there: an error)
    no_gradient_why = ""

    def train_all(self, denoiser: nn.Module) -> nn.Module:
        """``policy.type='full'``: every weight the training loss reaches. Modules matching ``no_gradient`` stay
        frozen (they would get no gradient, and DDP stops on parameters that never receive one)."""
        denoiser.requires_grad_(True)
        if self.no_gradient:
            for name, module in denoiser.named_modules():
                if name and re.fullmatch(self.no_gradient, name):
                    module.requires_grad_(False)
        return denoiser

    def encode_prompts(self, pipe: Any, prompts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def vae_factors(self, pipe: Any) -> tuple[int, int | None]:
        """The VAE's spatial and (video) temporal compression, under the names the pipeline gives them."""
        spatial = getattr(pipe, "vae_scale_factor_spatial", 0) or getattr(pipe, "vae_spatial_compression_ratio", 0)
        temporal = getattr(pipe, "vae_scale_factor_temporal", None) or getattr(
            pipe, "vae_temporal_compression_ratio", None
        )
        return int(spatial or pipe.vae_scale_factor), temporal

    def latent_params(self, vae: Any, pixels: torch.Tensor) -> torch.Tensor:
        """What the latent cache stores for ``pixels``: the VAE's latent distribution (mean and log-variance
        stacked on channels, as diffusers' ``DiagonalGaussianDistribution`` holds them)."""
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.parameters

    def sample_latents(self, params: torch.Tensor, generator: Any = None) -> torch.Tensor:
        """A latent drawn from ``latent_params``' output (a deterministic VAE: the latent itself)."""
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        return DiagonalGaussianDistribution(params).sample(generator)

    def normalize(self, vae: Any, latents: torch.Tensor) -> torch.Tensor:
        c = vae.config
        return (latents - (c.get("shift_factor") or 0.0)) * c.scaling_factor

    def predict(self, model: Any, noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, torch.Tensor],
                extra: dict[str, Any]) -> torch.Tensor:  # fmt: skip
        raise NotImplementedError

    def image_seq_len(self, latents: torch.Tensor, model: Any) -> int:
        p = getattr(denoiser_config(model), "patch_size", 1) or 1
        p = p if isinstance(p, int) else p[-1]
        return (latents.shape[-1] // p) * (latents.shape[-2] // p)

    def sample_kwargs(self, cond: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Pipeline ``__call__`` arguments that pass precomputed prompt embeddings (``cond`` with a batch dim)."""
        return {"prompt_embeds": cond["prompt_embeds"]}

    def takes_negative(self, pipe: Any) -> bool:
        """Whether sampling passes the empty prompt's embeddings as ``negative_*`` (classifier-free guidance)."""
        return self.negative_prompt

    def dynamic_mu(self, pipe: Any) -> Callable[[int], float] | None:
        """The resolution-dependent shift exponent ``mu(image_seq_len)`` of the pipeline's timesteps, for
        schedulers with ``use_dynamic_shifting``; None: Flux.1's ``calculate_shift`` from the scheduler config."""
        return None

    def for_pipeline(self, pipe: Any, expert: str | None) -> Family:
        """The family as it trains ``pipe``: itself, unless the pipeline holds several experts (Wan 2.2)."""
        if expert is not None:
            raise ValueError(f"task.expert={expert!r} applies to two-expert pipelines (Wan 2.2); this {self.name} "
                             "pipeline has one denoiser: remove task.expert")  # fmt: skip
        return self

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels (flow sigmas) this denoiser sees in its pipeline: all of them but for an expert."""
        return 0.0, 1.0
