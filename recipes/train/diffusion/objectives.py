"""Training objectives: what the denoiser sees and what it must predict, per noise schedule.

Written against diffusers 0.42's schedulers, so a training step matches what the pipeline's
scheduler does at inference:

- ``DDPMObjective`` (SD 1.5, SDXL): integer timesteps uniform in ``[0, T)``; ``x_t`` is
  ``DDPMScheduler.add_noise`` (``sqrt(a_t) x0 + sqrt(1 - a_t) n``); the target is the noise
  (``epsilon``) or ``DDPMScheduler.get_velocity`` (``v_prediction``: ``sqrt(a_t) n - sqrt(1 - a_t) x0``).
  Optional min-SNR-gamma weighting (Hang et al. 2023): ``min(snr, gamma) / snr`` for epsilon,
  ``min(snr, gamma) / (snr + 1)`` for v-prediction.
- ``FlowObjective`` (SD3, Flux, WAN and the other flow models): ``sigma`` from a logit-normal (or
  uniform) draw, then the pipeline scheduler's shift: the static ``shift`` of
  ``FlowMatchEulerDiscreteScheduler`` (``s * t / (1 + (s - 1) t)``), or with ``use_dynamic_shifting``
  the resolution-dependent one Flux uses (``mu`` linear in the image's token count, ``e^mu / (e^mu + 1/t - 1)``;
  Flux.2 gives its own ``mu``, ``compute_empirical_mu``);
  ``x_t = (1 - sigma) x0 + sigma n`` (``scale_noise``) and the target is the velocity ``n - x0``
  (an Euler step of the scheduler from ``sigma`` to 0 with this prediction returns ``x0``).
  The static shift is read from whichever key the pipeline's scheduler has: ``shift``
  (``FlowMatchEulerDiscreteScheduler``) or ``flow_shift`` with ``use_flow_sigmas`` (``UniPCMultistepScheduler``,
  ``DPMSolverMultistepScheduler``: WAN's release); a scheduler with neither is an error under ``shift='auto'``.

``describe()`` gives the objective as the setup report prints it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction")
TIMESTEP_SAMPLING = ("logit_normal", "uniform")


@dataclass
class NoisedBatch:
    noisy: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor  # what the denoiser is given (DDPM: int steps; flow: sigma x num_train_timesteps)
    sigmas: torch.Tensor | None  # flow only
    weights: torch.Tensor  # per-sample loss weights


class DDPMObjective:
    """Epsilon / v-prediction on a ``DDPMScheduler``'s noise schedule (read from the pipeline folder)."""

    def __init__(self, scheduler: Any, prediction_type: str | None = None, min_snr_gamma: float | None = None) -> None:
        self.scheduler = scheduler
        self.prediction_type = prediction_type or scheduler.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"task.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"task.min_snr_gamma must be > 0 (5.0 in the paper), got {min_snr_gamma}")
        self.min_snr_gamma = min_snr_gamma
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        ac = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        return ac / (1 - ac)

    def noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | None = None) -> NoisedBatch:
        if timesteps is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        target = noise if self.prediction_type == "epsilon" else self.scheduler.get_velocity(x0, noise, timesteps)
        weights = torch.ones(x0.shape[0], device=x0.device)
        if self.min_snr_gamma is not None:
            snr = self.snr(timesteps)
            clipped = torch.clamp(snr, max=self.min_snr_gamma)
            weights = clipped / (snr + 1) if self.prediction_type == "v_prediction" else clipped / snr
        return NoisedBatch(noisy, target, timesteps, None, weights)

    def describe(self) -> str:
        c = self.scheduler.config
        weighting = f"min-SNR gamma {self.min_snr_gamma}" if self.min_snr_gamma is not None else "none"
        return (f"DDPM {self.prediction_type} prediction; timesteps uniform integers in [0, {self.num_train_timesteps}) "
                f"({c.beta_schedule} betas {c.beta_start}..{c.beta_end}); loss weighting {weighting}")  # fmt: skip


class FlowObjective:
    """Rectified-flow velocity target with the family's timestep sampling and shift."""

    def __init__(self, scheduler_config: Any, timestep_sampling: str = "logit_normal", logit_mean: float = 0.0,
                 logit_std: float = 1.0, shift: float | str | None = "auto",
                 mu: Callable[[int], float] | None = None) -> None:  # fmt: skip
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"task.timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {timestep_sampling!r}")
        if not logit_std > 0:
            raise ValueError(f"task.logit_std must be > 0, got {logit_std}")
        if not (shift in ("auto", None) or (isinstance(shift, (int, float)) and shift > 0)):
            raise ValueError(
                f"task.shift must be 'auto' (the scheduler's), None (no shift) or a number > 0, got {shift!r}"
            )
        self.config = scheduler_config
        self.sampling, self.logit_mean, self.logit_std = timestep_sampling, logit_mean, logit_std
        self.dynamic = shift == "auto" and bool(scheduler_config.get("use_dynamic_shifting", False))
        self.shift, self.shift_source = (None, "dynamic") if self.dynamic else _static_shift(scheduler_config, shift)
        self.num_train_timesteps = int(scheduler_config.get("num_train_timesteps", 1000))
        self.mu_fn = mu

    def mu(self, image_seq_len: int) -> float:
        """The resolution-dependent shift exponent: the family's (``mu``), else Flux.1's ``calculate_shift``
        (pipeline_flux.py: linear in the token count between the scheduler's base and max shift)."""
        if self.mu_fn is not None:
            return float(self.mu_fn(image_seq_len))
        c = self.config
        base_len, max_len = c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096)
        base, top = c.get("base_shift", 0.5), c.get("max_shift", 1.15)
        m = (top - base) / (max_len - base_len)
        return image_seq_len * m + base - m * base_len

    def shift_sigmas(self, t: torch.Tensor, image_seq_len: int) -> torch.Tensor:
        if self.dynamic:
            if self.config.get("time_shift_type", "exponential") != "exponential":
                raise ValueError("scheduler time_shift_type 'linear' is not supported; use shift=<number>")
            e = math.exp(self.mu(image_seq_len))
            return e / (e + (1 / t - 1))
        if self.shift is None:
            return t
        s = self.shift
        return s * t / (1 + (s - 1) * t)

    def describe(self, image_seq_len: int | None = None) -> str:
        """Prediction, timestep distribution, shift (number and source, or mu at ``image_seq_len``) and weighting."""
        draw = (f"logit-normal(mean {self.logit_mean}, std {self.logit_std})" if self.sampling == "logit_normal"
                else "uniform(0, 1)")  # fmt: skip
        if self.dynamic:
            how = "the family's mu" if self.mu_fn is not None else "linear in tokens (base_shift..max_shift)"
            at = f", mu {self.mu(image_seq_len):.4g} at {image_seq_len} tokens" if image_seq_len else ""
            shift = f"resolution-dependent (scheduler use_dynamic_shifting: {how}{at})"
        elif self.shift is None:
            shift = "none"
        else:
            shift = f"{self.shift:g} ({self.shift_source})"
        return (f"flow matching, velocity target (noise - x0); timesteps {draw}; shift {shift}; "
                "loss weighting none")  # fmt: skip

    def sample_sigmas(self, n: int, image_seq_len: int, device: torch.device) -> torch.Tensor:
        if self.sampling == "logit_normal":
            t = torch.sigmoid(torch.randn(n, device=device) * self.logit_std + self.logit_mean)
        else:
            t = torch.rand(n, device=device)
        return self.shift_sigmas(t.clamp(1e-5, 1.0), image_seq_len)

    def noise(self, x0: torch.Tensor, noise: torch.Tensor, image_seq_len: int,
              sigmas: torch.Tensor | None = None) -> NoisedBatch:  # fmt: skip
        if sigmas is None:
            sigmas = self.sample_sigmas(x0.shape[0], image_seq_len, x0.device)
        s = sigmas.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        noisy = (1 - s) * x0 + s * noise
        weights = torch.ones(x0.shape[0], device=x0.device)
        return NoisedBatch(noisy, noise - x0, sigmas * self.num_train_timesteps, sigmas, weights)


def _static_shift(config: Any, shift: float | str | None) -> tuple[float | None, str]:
    """The static shift and where it came from: task.shift, or the scheduler's ``shift`` / ``flow_shift``."""
    if shift is None:
        return None, "task.shift=None"
    if shift != "auto":
        return float(shift), "task.shift"
    name = config.get("_class_name", "the scheduler")
    if "shift" in config:
        return float(config["shift"]), f"{name} shift"
    if config.get("use_flow_sigmas", False) and "flow_shift" in config:
        return float(config["flow_shift"]), f"{name} flow_shift"
    raise ValueError(f"task.shift='auto': the pipeline's {name} has no flow shift (no `shift`, no `flow_shift` with "
                     "use_flow_sigmas, no use_dynamic_shifting); set task.shift to a number (e.g. 3.0) or None")  # fmt: skip


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (in float32), weighted, averaged over the batch."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
    return (per_sample * weights).mean()
