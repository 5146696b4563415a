"""timm models by name, random weights by default, local starting weights (``pretrained``) when given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from recipes.options import accepted_options, unknown_key_error
from recipes.train.registry import MODELS


@MODELS.register_module("timm")
def build_timm_model(
    name: str,
    num_classes: int | None = None,
    pretrained: str | None = None,
    device: str | None = None,
    pretrained_format: str = "timm",
    hub_cache: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, ...)`` without any download.

    ``pretrained``: local starting weights (timm's ``pretrained_cfg_overlay=dict(file=...)``); the
    classifier is re-initialised when ``num_classes`` differs from the checkpoint's.
    ``pretrained_format``: how ``pretrained`` is laid out: ``"timm"`` (timm's own names), ``"hf_dinov2"``
    (a transformers ``Dinov2Model`` folder, for ``vit_*_patch14_dinov2``) or ``"efficientnet_lite"`` (the
    lukemelas-style ``.pth``, for ``tf_efficientnet_liteN``); see ``recipes/train/models/pretrained.py``.
    ``hub_cache=True`` (without ``pretrained``): the weights from the local Hugging Face hub cache, never a
    download (:func:`hub_cache_file`); a clear error when they are not cached.
    ``device="meta"`` builds without memory (for ``tools/show_lr.py`` on full-size models).
    """
    import timm
    import torch

    if pretrained is not None and not isinstance(pretrained, (str, Path)):
        raise TypeError(
            f"model.pretrained must be the path of local weights (a file or folder), got {pretrained!r}; "
            "for timm's local Hugging Face hub cache set model.hub_cache=True"
        )
    if pretrained is not None and hub_cache:
        raise ValueError("model: give pretrained=PATH or hub_cache=True, not both")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    _check_image_size(kwargs.get("img_size"))
    if pretrained_format != "timm":
        from recipes.train.models.pretrained import FORMATS, load_pretrained

        if pretrained_format not in FORMATS:
            load_pretrained(nn.Identity(), "", pretrained_format)  # raises, naming the known formats
        if pretrained is None:
            raise ValueError(f"model.pretrained_format={pretrained_format!r} needs model.pretrained (the weights)")
        model = build_timm_model(name, device=device, **kwargs)
        print(load_pretrained(model, pretrained, pretrained_format))
        return model
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained: {str(path)!r} does not exist; give a local .pth/.safetensors file"
            )
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    elif hub_cache:
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


def _check_image_size(size: Any) -> None:
    """``model.img_size``: pixels > 0, one number or (height, width) (timm's own error does not name the key)."""
    sides = list(size) if isinstance(size, list | tuple) else [size]
    if size is not None and (len(sides) not in (1, 2) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                                   and v > 0 for v in sides)):  # fmt: skip
        raise ValueError(f"model.img_size must be a whole number > 0 or (height, width) in pixels, got {size!r}")


def hub_cache_file(name: str) -> Path:
    """The hub-cache copy of the weights timm would download for ``name`` (``model.hub_cache=True``).

    Looked up in the cache only (``huggingface_hub.try_to_load_from_cache``): nothing is downloaded and no
    environment variable is set. Not cached: a ``FileNotFoundError`` saying to pass ``model.pretrained``.
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
        f"model.hub_cache=True: no local copy of {name!r}'s weights in the hub cache ({where}); "
        "pass model.pretrained=/path/to/weights instead"
    )


def check_timm_options(model: dict[str, Any]) -> None:
    """``model.*`` checked before anything is built: the builder's own keys, the rest by the timm model class
    on the ``meta`` device (no memory, no weights: a keyword it does not take names ``model.<key>``)."""
    import inspect

    import timm

    own = set(inspect.signature(build_timm_model).parameters) - {"kwargs"}
    name = model.get("name")
    if not isinstance(name, str):
        raise KeyError(f"config: `model.name` is required (a timm model name), got {name!r}")
    rest = {k: v for k, v in model.items() if k not in own}
    if not timm.is_model(name) or rest:
        try:
            build_timm_model(name, device="meta", **rest)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
            key = str(e).rsplit("argument", 1)[-1].strip(" '\"")
            raise unknown_key_error("model.", key, own | _class_options(name, str(e)), f" ({e})") from None


def _class_options(name: str, message: str) -> set[str]:
    """Keywords of the timm class named in ``message`` (``VisionTransformer.__init__() got ...``), for the
    did-you-mean; the class is looked up in the module that registered ``name``."""
    import importlib
    import re

    from timm.models import get_pretrained_cfg  # noqa: F401 - timm.models is imported
    from timm.models._registry import _model_to_module

    m = re.match(r"(\w+)\.__init__\(\)", message)
    module = _model_to_module.get(name)
    if m is None or module is None:
        return set()
    cls = getattr(importlib.import_module(f"timm.models.{module}"), m.group(1), None)
    return set(accepted_options(cls) or ()) if isinstance(cls, type) else set()


build_timm_model.check_options = check_timm_options  # type: ignore[attr-defined]
