"""Saving a trained denoiser: LoRA in diffusers' format (``pipeline.load_lora_weights(DIR)``), kohya names, or full.

diffusers format: the pipeline class's own ``save_lora_weights`` with peft's adapter state dict
(``get_peft_model_state_dict``) and the LoRA config as adapter metadata, so rank, alpha and DoRA
come back exactly on load. kohya / ComfyUI format (U-Net families, whose kohya module names are
the diffusers ones): ``lora_unet_<module path with '_'>.lora_down.weight`` / ``.lora_up.weight`` /
``.alpha``, the layout diffusers' loader converts from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FORMATS = ("diffusers", "kohya")
WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def lora_state_dict(model: Any) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}


def save_peft_adapter(state: dict[str, torch.Tensor], config: Any, out_dir: Path) -> Path:
    """A peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``) for pipelines without a
    LoRA loader (PixArt): ``inject_adapter_in_model(LoraConfig.from_pretrained(DIR), model)`` then
    ``set_peft_model_state_dict(model, load_file(...))`` puts it back."""
    from safetensors.torch import save_file

    config.save_pretrained(str(out_dir))
    path = out_dir / "adapter_model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def save_lora(pipeline_cls: Any, model: Any, out_dir: Path, save_key: str, fmt: str = "diffusers") -> Path:
    """Write the LoRA of ``model`` to ``out_dir`` and return the weight file's path."""
    from peft.utils import get_peft_model_state_dict  # noqa: F401 - fail early when peft is missing

    state = lora_state_dict(model)
    config = model.peft_config["default"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "diffusers" and not hasattr(pipeline_cls, "save_lora_weights"):
        return save_peft_adapter(state, config, out_dir)
    if fmt == "diffusers":
        meta_key = save_key.replace("_layers", "_adapter_metadata")
        pipeline_cls.save_lora_weights(str(out_dir), **{save_key: state, meta_key: config.to_dict()},
                                       safe_serialization=True)  # fmt: skip
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
