"""timm models by name, random weights by default, a local ``pretrained_file`` when given."""

from __future__ import annotations

from typing import Any

from torch import nn

from recipes.registry import MODELS


@MODELS.register_module("timm")
def build_timm_model(name: str, num_classes: int | None = None, pretrained_file: str | None = None,
                     device: str | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, ...)`` without any download.

    ``pretrained_file``: a local checkpoint (timm's ``pretrained_cfg_overlay=dict(file=...)``); the
    classifier is re-initialised when ``num_classes`` differs from the checkpoint's.
    ``device="meta"`` builds without memory (for ``tools/show_lr.py`` on full-size models).
    """
    import timm
    import torch

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_file is not None:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    try:
        if device is not None:
            with torch.device(device):
                return timm.create_model(name, **kwargs)
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            import difflib

            near = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise KeyError(f"model.name: unknown timm model {name!r}; did you mean {near}?") from None
        raise
