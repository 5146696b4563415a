"""Checkpoints of mostly frozen models: the trainable tensors and buffers, plus a check on the frozen rest.

LoRA on a 12B model must not write 24 GB per checkpoint. With ``train.save_frozen='auto'`` (the
default) a model whose trainable parameters are under half of all parameters saves only its
trainable tensors and its buffers; the frozen rest is rebuilt from the config on resume (the same
weights file or seed) and checked against a fingerprint taken when the run started.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from recipes.train.checkpoint import load_model_state


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def frozen_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if not p.requires_grad}


def saves_frozen(model: nn.Module, option: Any) -> bool:
    """Whether a checkpoint holds the frozen parameters too (``train.save_frozen``)."""
    if option != "auto":
        return bool(option)
    sizes = [(p.numel(), p.requires_grad) for p in model.parameters()]
    return 2 * sum(n for n, t in sizes if t) >= sum(n for n, _ in sizes)


@torch.no_grad()
def frozen_fingerprint(model: nn.Module) -> torch.Tensor:
    """Per frozen tensor (sorted by name): float64 sum and sum of squares. Empty when nothing is frozen."""
    params = {n: p.dequantize() for n, p in model.named_parameters()}  # quantized bases (torchao): their values
    rows = [
        torch.stack([params[n].double().sum(), params[n].double().square().sum()]).cpu()
        for n in sorted(frozen_names(model))
        if params[n].device.type != "meta"
    ]
    return torch.stack(rows) if rows else torch.zeros(0, 2, dtype=torch.float64)


def model_state(model: nn.Module, full: bool) -> dict[str, torch.Tensor]:
    """``state_dict()``, without the frozen parameters unless ``full``."""
    state = model.state_dict()
    if full:
        return state
    skip = frozen_names(model)
    return {k: v for k, v in state.items() if k not in skip}


def load_model(model: nn.Module, ckpt: Mapping[str, Any], fingerprint: torch.Tensor) -> None:
    """Load a checkpoint's weights; a trainable-only one must match this model's frozen rest exactly."""
    if not ckpt.get("frozen_omitted"):
        load_model_state(model, ckpt["model"], ckpt["path"], ckpt.get("model_cfg"))
        return
    own = model.state_dict()
    for name, t in ckpt["model"].items():  # torch would stop on the first with a size-mismatch RuntimeError
        if name in own and tuple(t.shape) != tuple(own[name].shape):
            raise ValueError(f"checkpoint {ckpt['path']!r}: the tensor {name!r} has shape {tuple(t.shape)} where this "
                             f"model's is {tuple(own[name].shape)}; it was saved from model={ckpt.get('model_cfg')}: "
                             "use the config (and adapter rank) it was trained with")  # fmt: skip
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    skip = frozen_names(model)
    wrong = sorted(set(missing) - skip) + sorted(unexpected)
    saved = ckpt.get("frozen_fingerprint")
    if wrong or saved is None or saved.shape != fingerprint.shape:
        raise ValueError(
            f"checkpoint {ckpt['path']!r} holds the trainable tensors of another model or policy (e.g. {wrong[:3]}); "
            f"it was saved from model={ckpt.get('model_cfg')}. Resume with the config it was trained with"
        )
    if not torch.allclose(saved, fingerprint, rtol=1e-9, atol=0.0):
        raise ValueError(
            f"checkpoint {ckpt['path']!r} holds only the trainable tensors, and this config rebuilds different "
            "frozen weights than the run started with (another model.pretrained, weights or seed?); resume "
            "with the same config and weights"
        )
