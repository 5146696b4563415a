"""timm models by name, random weights by default, a local ``pretrained_file`` when given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from recipes.train.registry import MODELS


@MODELS.register_module("timm")
def build_timm_model(
    name: str,
    num_classes: int | None = None,
    pretrained_file: str | None = None,
    device: str | None = None,
    pretrained: bool = False,
    pretrained_format: str = "timm",
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, ...)`` without any download.

    ``pretrained_file``: a local checkpoint (timm's ``pretrained_cfg_overlay=dict(file=...)``); the
    classifier is re-initialised when ``num_classes`` differs from the checkpoint's.
    ``pretrained=True`` (without a file): the weights from the local Hugging Face hub cache, never a
    download (:func:`hub_cache_file`); a clear error when they are not cached.
    ``pretrained_format``: how ``pretrained_file`` is laid out: ``"timm"`` (timm's own names), ``"hf_dinov2"``
    (a transformers ``Dinov2Model`` folder, for ``vit_*_patch14_dinov2``) or ``"efficientnet_lite"`` (the
    lukemelas-style ``.pth``, for ``tf_efficientnet_liteN``); see ``recipes/train/models/pretrained.py``.
    ``device="meta"`` builds without memory (for ``tools/show_lr.py`` on full-size models).
    """
    from pathlib import Path

    import timm
    import torch

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_format != "timm":
        from recipes.train.models.pretrained import FORMATS, load_pretrained

        if pretrained_format not in FORMATS:
            load_pretrained(nn.Identity(), "", pretrained_format)  # raises, naming the known formats
        if pretrained_file is None:
            raise ValueError(f"model.pretrained_format={pretrained_format!r} needs model.pretrained_file")
        if pretrained:
            raise ValueError("model: give pretrained=True (hub cache) or pretrained_file, not both")
        model = build_timm_model(name, device=device, **kwargs)
        print(load_pretrained(model, pretrained_file, pretrained_format))
        return model
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained_file: {str(path)!r} does not exist; give a local .pth/.safetensors file"
            )
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    elif pretrained:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(hub_cache_file(name))))
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


def hub_cache_file(name: str) -> Path:
    """The hub-cache copy of the weights timm would download for ``name`` (``model.pretrained=True``).

    Looked up in the cache only (``huggingface_hub.try_to_load_from_cache``): nothing is downloaded and no
    environment variable is set. Not cached: a ``FileNotFoundError`` saying to pass ``pretrained_file``.
    """
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg
    from timm.models._hub import hf_split

    cfg = get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        repo, revision = hf_split(hub_id)
        files = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
        for filename in [*files, "model.safetensors", "pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo, filename, revision=revision)
            if isinstance(hit, str):
                return Path(hit)
    where = f"hub repo {hub_id!r}" if hub_id else "no hub repo in timm's pretrained config"
    raise FileNotFoundError(
        f"model.pretrained=True: no local copy of {name!r}'s weights in the hub cache ({where}); "
        "pass model.pretrained_file=/path/to/weights instead"
    )
