"""Saving a trained denoiser: LoRA in diffusers' format (``pipeline.load_lora_weights(DIR)``), kohya names, or full.

diffusers format: the pipeline class's own ``save_lora_weights`` with peft's adapter state dict
(``get_peft_model_state_dict``) and the LoRA config as adapter metadata, so rank and DoRA come back
exactly on load; the scale alpha / r is baked into ``lora_B`` and the metadata says alpha = r
(``bake_scale``), so loaders that ignore the metadata (ComfyUI) apply the same strength.
kohya / ComfyUI format (U-Net families, whose kohya module names are
the diffusers ones): ``lora_unet_<module path with '_'>.lora_down.weight`` / ``.lora_up.weight`` /
``.alpha``, the layout diffusers' loader converts from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

FORMATS = ("diffusers", "kohya")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_state_dict(model: Any) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}


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


def save_lora(pipeline_cls: Any, model: Any, out_dir: Path, save_key: str, fmt: str = "diffusers") -> Path:
    """Write the LoRA of ``model`` to ``out_dir`` and return the weight file's path."""
    from peft.utils import get_peft_model_state_dict  # noqa: F401 - fail early when peft is missing

    state = lora_state_dict(model)
    config = model.peft_config["default"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers":
        meta_key = save_key.replace("_layers", "_adapter_metadata")
        state, meta = bake_scale(state, config.to_dict())
        pipeline_cls.save_lora_weights(str(out_dir), **{save_key: state, meta_key: meta}, safe_serialization=True)
        return out_dir / WEIGHT_NAME
    if fmt != "kohya":
        raise ValueError(f"task.save_format must be one of {FORMATS}, got {fmt!r}")
    if save_key != "unet_lora_layers":
        raise ValueError("task.save_format='kohya' is supported for the U-Net families (sd15, sdxl) only; kohya's "
                         "DiT names follow the original checkpoints, not diffusers'; use 'diffusers'")  # fmt: skip
    if config.use_dora:
        raise ValueError("task.save_format='kohya' has no DoRA layout; use save_format='diffusers' with lora.dora=True")
    from safetensors.torch import save_file

    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        module, _, kind = name.rpartition(".lora_")
        stem = "lora_unet_" + module.replace(".", "_")
        out[f"{stem}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        out[f"{stem}.alpha"] = torch.tensor(float(config.lora_alpha))
    path = out_dir / WEIGHT_NAME
    save_file(out, str(path), metadata={"ss_network_dim": str(config.r), "ss_network_alpha": str(config.lora_alpha)})
    return path


def check_finite(model: Any) -> None:
    """A trained tensor with NaN or inf is an error naming it: a broken adapter is never exported."""
    for name, p in model.named_parameters():
        if p.requires_grad and not bool(torch.isfinite(p.detach()).all()):
            bad = int((~torch.isfinite(p.detach())).sum())
            raise ValueError(f"export: the trained tensor {name!r} holds {bad} NaN/inf values of {p.numel()}; "
                             "nothing was saved (lower the LRs, or resume from an earlier checkpoint)")  # fmt: skip


def save_trained(model: Any, out: Path, pipeline_cls: Any, family: Any, fmt: str, info: dict[str, Any]) -> Path:
    """The run's export under ``out``: ``lora/`` (``lora_kohya/``) with ``training.json``, or the full denoiser.

    A folder from an earlier run (a resumed run that had finished) is kept: the new one gets a ``_step_N`` name."""
    check_finite(model)
    if info["lora"] is None:
        path = out / family.denoiser
        if path.exists():
            raise FileExistsError(f"{path} exists; the trainer never overwrites a saved model")
        model.save_pretrained(str(path))
        return path
    where = out / ("lora" if fmt == "diffusers" else "lora_kohya")
    if where.exists():
        where = where.with_name(f"{where.name}_step_{info['step']}")
    path = save_lora(pipeline_cls, model, where, family.lora_save_key, fmt)
    (path.parent / "training.json").write_text(json.dumps(info, default=str))
    return path
