"""Checks of the diffusion task's settings against each other and against the loaded pipeline, each failing with
an error that names the key, and the setup report's data line."""

from __future__ import annotations

import logging
from typing import Any

from recipes.train.diffusion.families import BY_PRESET, Family


def check_lora(lora: dict[str, Any]) -> None:
    """``task.lora``'s rank, alpha and dropout, named when wrong (peft would blame ``target_modules``)."""
    r, alpha, dropout = lora.get("r", 16), lora.get("alpha", 16), lora.get("dropout", 0.0)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"task.lora.r must be a whole number >= 1 (the LoRA rank, e.g. 16), got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"task.lora.alpha must be a number > 0 (the scale is alpha / r), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"task.lora.dropout must lie in [0, 1), got {dropout!r}")


def check_numbers(caption_dropout: Any, noise_offset: Any, sample_every: Any, samples: dict[str, Any]) -> None:
    """``task.caption_dropout`` / ``noise_offset`` in [0, 1), ``task.sample_every`` a step count with prompts to draw."""
    if not 0.0 <= float(caption_dropout) < 1.0:
        raise ValueError(f"task.caption_dropout must lie in [0, 1), got {caption_dropout!r}")
    if isinstance(noise_offset, bool) or not isinstance(noise_offset, (int, float)) or not 0 <= noise_offset < 1:
        raise ValueError(f"task.noise_offset must lie in [0, 1) (kohya uses about 0.05-0.1), got {noise_offset!r}")
    if sample_every is None:
        return
    if isinstance(sample_every, bool) or not isinstance(sample_every, int) or sample_every < 1:
        raise ValueError(f"task.sample_every must be a whole number of steps >= 1, got {sample_every!r}")
    if not samples.get("prompts"):
        raise ValueError("task.sample_every does nothing without task.samples.prompts; set both or neither")


def guidance_for(given: float | None, pipe: Any, family: Family) -> float | None:
    """``task.guidance_scale`` feeds a guidance-distilled denoiser's guidance input (Flux.1 / Flux.2 [dev]):
    default 1.0 there, as kohya, SimpleTuner and ai-toolkit train (docs/diffusion.md says why); on a denoiser
    without that input, setting it is an error."""
    has_input = bool(getattr(getattr(pipe, family.denoiser).config, "guidance_embeds", False))
    if given is None:
        return 1.0 if has_input else None
    if not has_input:
        raise ValueError(f"task.guidance_scale={given} does nothing: this {family.name} denoiser has no guidance "
                         "input (only guidance-distilled models such as Flux.1 [dev] and Flux.2 [dev] take one); "
                         "remove it")  # fmt: skip
    return float(given)


def check_preset(preset: str | None, family: Family, pipe: Any) -> None:
    """``model.preset`` must name the class and the family of the pipeline in ``model.pretrained`` (SD 1.5 and
    SDXL share the U-Net class; their pipelines tell them apart)."""
    from recipes.train.models.diffusers import PRESETS

    found = type(getattr(pipe, family.denoiser)).__name__
    if preset is not None and (preset not in PRESETS or PRESETS[preset][0] != found):
        want = PRESETS[preset][0] if preset in PRESETS else "an unknown preset"
        raise ValueError(f"model.preset={preset!r} is {want}, but model.pretrained holds a {found}; fix one of them")
    if preset is not None and preset in BY_PRESET and BY_PRESET[preset].name != family.name:
        raise ValueError(f"model.preset={preset!r} is a {BY_PRESET[preset].name} model, but model.pretrained "
                         f"holds a {family.name} pipeline ({type(pipe).__name__}); fix one of them")  # fmt: skip


def report_data(train: Any, val: Any) -> None:
    """The setup report's data line: sizes, where validation comes from, metadata rows that name no file."""
    where = "the training set" if val is train else f"{len(val)} held out"
    parts = f"per epoch, {train.describe()}" if hasattr(train, "describe") else f"from {str(train.root)!r}"
    line = f"[data] train {len(train)} {train.kind}s {parts}; validation: {where}"
    skipped = getattr(train, "unmatched_rows", 0)
    if skipped:
        line += f"; {skipped} metadata.jsonl row(s) name files that are not in the folder (left out)"
    logging.getLogger("recipes.train").log(logging.WARNING if skipped else logging.INFO, line)


def check_sizes(ds: Any, pipe: Any, family: Family, vae_factor: int) -> None:
    """Sizes the VAE and patching divide, the dataset kind the family trains on, a frame count the VAE takes."""
    multiple = vae_factor * family.pack
    p = getattr(getattr(pipe, family.denoiser).config, "patch_size", 1) or 1
    multiple *= p if isinstance(p, int) else p[-1]
    bad = sorted({t for t in ds.targets if t[0] % multiple or t[1] % multiple})
    if bad:
        raise ValueError(f"data.resolution: sizes {bad} are not multiples of {multiple} (this {family.name} "
                         f"pipeline's VAE factor x patch size); use e.g. {bad[0][0] // multiple * multiple or multiple}")  # fmt: skip
    if family.video != hasattr(ds, "num_frames"):
        want = "captioned_videos" if family.video else "captioned_images"
        raise ValueError(f"data.train: {family.name} trains on {want}, got {type(ds).__name__}")
    t = family.vae_factors(pipe)[1]
    if family.video and t and (ds.num_frames - 1) % t:
        raise ValueError(f"data.num_frames={ds.num_frames}: the VAE needs 1 + a multiple of {t} frames (e.g. {t + 1})")


def check_sample_steps(samples: dict[str, Any], pipe: Any) -> None:
    """A scheduler that stretches its sigmas to ``shift_terminal`` (Qwen-Image, LTX-Video) needs 2 steps or more:
    with one, the stretch divides 0 by 0 (Qwen-Image's samples come out NaN, LTX-Video's call fails)."""
    terminal = pipe.scheduler.config.get("shift_terminal")
    steps = samples.get("steps", 20)
    if samples.get("prompts") and terminal and int(steps) < 2:
        raise ValueError(f"task.samples.steps={steps}: this pipeline's scheduler stretches its sigmas to "
                         f"shift_terminal={terminal}, which takes 2 steps or more; set task.samples.steps >= 2")  # fmt: skip
