"""Saving a trained denoiser: LoRA in diffusers' format (``pipeline.load_lora_weights(DIR)``), kohya names, or full.

diffusers format: the pipeline class's own ``save_lora_weights`` with peft's adapter state dict
(``get_peft_model_state_dict``) and the LoRA config as adapter metadata, so rank and DoRA come back
exactly on load; the scale alpha / r is baked into ``lora_B`` and the metadata says alpha = r
(``bake_scale``), so loaders that ignore the metadata (ComfyUI) apply the same strength.
kohya / ComfyUI / musubi format: ``lora_unet_<original module path with '_'>.lora_down.weight`` /
``.lora_up.weight`` / ``.alpha`` (/ ``.dora_scale``) for every family with a kohya layout (``kohya_keys``), and the
SD 1.5 / SDXL text encoders' LoRA (``policy.text_encoder``) as ``lora_te_`` / ``lora_te1_`` / ``lora_te2_`` modules.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from recipes.train.diffusion.adapters import is_lycoris, save_lycoris

FORMATS = ("diffusers", "kohya")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def ready_to_save(model: Any, family: str, fmt: str) -> Any:
    """``model`` once its LoRA can be saved in ``fmt``: with kohya's names, every LoRA module has one (checked
    before training, not at its end); no LoRA module sits where the family's loss sends no gradient."""
    from recipes.train.diffusion.families import FAMILIES

    unreached = FAMILIES[family].no_gradient if family in FAMILIES else ""
    stray = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and unreached and re.fullmatch(unreached, n)]
    if stray:
        raise ValueError(f"policy.targets: {len(stray)} LoRA modules (e.g. {stray[0]!r}) are where the {family} loss "
                         f"sends no gradient ({FAMILIES[family].no_gradient_why}); target other modules or leave "
                         "policy.targets unset for the family's")  # fmt: skip
    if fmt == "kohya":
        from recipes.train.diffusion.kohya_keys import check_kohya_layout

        check_kohya_layout(model, family)
    return model


def lora_state_dict(model: Any, full: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """peft's adapter state dict of ``model``; ``full``: read it from this whole state dict (FSDP's gathered one)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model, state_dict=full).items()}


def save_peft_adapter(state: dict[str, torch.Tensor], config: Any, out_dir: Path) -> Path:
    """A peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) for pipelines without a
    LoRA loader (PixArt): ``inject_adapter_in_model(LoraConfig.from_pretrained(DIR), model)`` then
    ``set_peft_model_state_dict(model, load_file(...))`` puts it back."""
    from safetensors.torch import save_file

    config.save_pretrained(str(out_dir))
    path = out_dir / "adapter_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return readable_as_umask_says(path)


def save_denoiser(model: Any, out_dir: Path, full: dict[str, torch.Tensor] | None = None) -> None:
    """A fully fine-tuned denoiser as ``from_pretrained`` reads it; ``full``: its gathered state dict (FSDP), written
    beside the model's ``config.json`` as the one ``diffusion_pytorch_model.safetensors``."""
    if full is None:
        model.save_pretrained(str(out_dir))
        return
    from safetensors.torch import save_file

    model.save_config(str(out_dir))
    save_file({k: v.contiguous() for k, v in full.items()}, str(out_dir / "diffusion_pytorch_model.safetensors"))


def bake_scale(state: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``lora_B`` times the LoRA scale (alpha / r, or alpha / sqrt(r) with rsLoRA), written with alpha = r.

    A diffusers-format file carries alpha only in its adapter metadata, which diffusers reads and ComfyUI /
    kohya-style loaders do not (they take scale 1 where a module has no ``.alpha``): with the scale in the
    weights every reader applies the trained strength. DoRA is unchanged by it (the magnitude normalises
    ``W + scale * B A``, the same product). Per-module ``rank_pattern`` / ``alpha_pattern`` are left as they are.
    """
    if meta.get("rank_pattern") or meta.get("alpha_pattern"):
        return state, meta
    r, alpha = int(meta["r"]), float(meta["lora_alpha"])
    scale = alpha / math.sqrt(r) if meta.get("use_rslora") else alpha / r
    if scale == 1.0:
        return state, meta
    baked = {k: v * scale if ".lora_B." in k else v for k, v in state.items()}
    return baked, {**meta, "lora_alpha": r, "use_rslora": False}


def save_lora(pipeline_cls: Any, model: Any, out_dir: Path, save_key: str, fmt: str = "diffusers",
              full: dict[str, torch.Tensor] | None = None, *, family: str) -> Path:  # fmt: skip
    """Write the LoRA of ``model`` (a ``family`` denoiser) to ``out_dir`` and return the weight file's path
    (``full``: see lora_state_dict)."""
    if fmt not in FORMATS:
        raise ValueError(f"task.save_format must be one of {FORMATS}, got {fmt!r}")
    state = lora_state_dict(model, full)
    config = model.peft_config["default"]
    if is_lycoris(config):  # LoKr / LoHa (policy.kind): their own layouts
        out_dir.mkdir(parents=True, exist_ok=True)
        return save_lycoris(pipeline_cls, state, config, out_dir, save_key, fmt)
    if fmt == "kohya":  # every name and fused module is resolved before anything is written
        state = kohya_file_state(model, state, family)
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers" and not hasattr(pipeline_cls, "save_lora_weights"):
        return save_peft_adapter(state, config, out_dir)
    if fmt == "diffusers":
        from recipes.train.diffusion.text_lora import attached, split_state

        state, encoders = split_state(state, attached(model))  # policy.text_encoder: text_encoder(_2).<module>
        parts = {save_key: (state, config)}
        parts |= {f"{n}_lora_layers": (s, getattr(model, n).peft_config["default"]) for n, s in encoders.items()}
        kwargs = {}
        for key, (tensors, cfg) in parts.items():
            kwargs[key], kwargs[key.replace("_layers", "_adapter_metadata")] = bake_scale(tensors, cfg.to_dict())
        pipeline_cls.save_lora_weights(str(out_dir), **kwargs, safe_serialization=True)
        return readable_as_umask_says(out_dir / WEIGHT_NAME)
    from safetensors.torch import save_file

    from recipes.train.diffusion.kohya_keys import lora_scale

    path = out_dir / WEIGHT_NAME
    meta = {"ss_network_dim": str(config.r), "ss_network_alpha": str(lora_scale(config) * config.r)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
    return readable_as_umask_says(path)


def kohya_file_state(model: Any, state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    """The LoRA of ``model`` in kohya's keys: the denoiser's ``lora_unet_*``, and with ``policy.text_encoder`` the
    attached encoders' ``lora_te_*`` (SD 1.5) / ``lora_te1_*`` + ``lora_te2_*`` (SDXL), each with its own alpha."""
    from recipes.train.diffusion.kohya_keys import kohya_state, kohya_text_state
    from recipes.train.diffusion.text_lora import attached, split_state

    state, encoders = split_state(state, attached(model))
    out = kohya_state(state, family, model.peft_config["default"])
    for name, tensors in encoders.items():
        out |= kohya_text_state(tensors, family, name, getattr(model, name).peft_config["default"])
    return out


def readable_as_umask_says(path: Path) -> Path:
    """safetensors (0.4+) writes files with mode 0600; give them the mode any new file gets (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return path


def check_finite(model: Any) -> None:
    """A trained tensor with NaN or inf is an error naming it: a broken adapter is never exported."""
    check_finite_tensors(((n, p.detach()) for n, p in model.named_parameters() if p.requires_grad), "trained tensor")


def check_finite_tensors(tensors: Iterable[tuple[str, torch.Tensor]], what: str = "tensor") -> None:
    """The one NaN/inf check of an export: over a model's trained tensors or a gathered (FSDP) state dict."""
    for name, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"export: the {what} {name!r} holds {bad} NaN/inf values of {t.numel()}; nothing was "
                             "saved (lower the LRs, or resume from an earlier checkpoint)")  # fmt: skip


def save_trained(model: Any, out: Path, pipeline_cls: Any, family: Any, fmt: str, info: dict[str, Any],
                 full: dict[str, torch.Tensor] | None = None) -> Path:  # fmt: skip
    """The run's export under ``out``: ``lora/`` (``lora_kohya/``) with ``training.json``, or the full denoiser.

    A folder from an earlier run (a resumed run that had finished) is kept: the new one gets a ``_step_N`` name.
    ``full``: the gathered state dict of a sharded (FSDP2) model, which its own parameters do not hold."""
    if full is None:
        check_finite(model)
    else:
        check_finite_tensors(full.items())
    if info["lora"] is None:
        path = out / family.denoiser
        if path.exists():
            raise FileExistsError(f"{path} exists; the trainer never overwrites a saved model")
        save_denoiser(model, path, full)
        return path
    where = out / ("lora" if fmt == "diffusers" else "lora_kohya")
    if where.exists():
        where = where.with_name(f"{where.name}_step_{info['step']}")
    path = save_lora(pipeline_cls, model, where, family.lora_save_key, fmt, full, family=family.name)
    (path.parent / "training.json").write_text(json.dumps(info, default=str))
    return path
