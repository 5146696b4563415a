"""A one-stream VideoMAE tracker: template and search tokens through one transformers VideoMAE encoder.

The backbone is transformers' ``VideoMAEModel`` (held as ``videomae``, so the ``videomae`` adapter
names its groups). Each crop is a static clip: its tubelet embedding (``Conv3d`` over
``tubelet_size`` frames) of a still image equals a ``Conv2d`` with the kernel summed over time,
which is what runs. Template and search tokens get their own learned position grids
(``videomae.embeddings.{template,search}_position_embeddings``; VideoMAE's own sinusoid table is for
fixed-size clips), are concatenated and go through the encoder together (OSTrack's one-stream
design); the search tokens' map feeds a centre/size head (``box_head``: score map, size map, offset).

Starting weights (``pretrained``): ``None`` (random); a VideoMAE folder (``from_pretrained``); a VideoMAEv2
``.pth`` (``weights_only=True``); or a DINOv2 folder, inflated (see :func:`inflate_dinov2`).
:func:`load_report` lists every backbone tensor left random and every checkpoint tensor not used;
``strict_pretrained=True`` makes a tensor left random an error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recipes.options import check_keys
from recipes.train.registry import MODELS

log = logging.getLogger("recipes.tracking")


def _conv_branch(dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dim, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, hidden // 2, 3, padding=1),
                         nn.GELU(), nn.Conv2d(hidden // 2, out, 1))  # fmt: skip


class CenterHead(nn.Module):
    """OSTrack-style centre head: a score map, a size map (w, h in [0, 1]) and a sub-cell offset."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.score, self.size, self.offset = (_conv_branch(dim, hidden, k) for k in (1, 2, 2))
        nn.init.constant_(self.score[-1].bias, -2.19)  # prior 0.1, as CenterNet's focal-loss heads

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": self.score(feat), "size": self.size(feat).sigmoid(), "offset": self.offset(feat).sigmoid()}


def decode_boxes(out: dict[str, torch.Tensor], score: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4) cx, cy, w, h in [0, 1] of the search crop, at the peak of ``score`` (default: the head's)."""
    score = out["score"] if score is None else score
    b, _, h, w = score.shape
    idx = score.flatten(1).argmax(1)
    iy, ix = idx // w, idx % w
    ar = torch.arange(b, device=score.device)
    off, size = out["offset"][ar, :, iy, ix], out["size"][ar, :, iy, ix]
    return torch.stack([(ix + off[:, 0]) / w, (iy + off[:, 1]) / h, size[:, 0], size[:, 1]], dim=1)


class VideoMAETracker(nn.Module):
    def __init__(self, config: Any, template_size: int, search_size: int, head_dim: int = 128) -> None:
        super().__init__()
        from transformers import VideoMAEModel

        self.videomae = VideoMAEModel(config)
        p, dim = config.patch_size, config.hidden_size
        for key, side in (("template_size", template_size), ("search_size", search_size)):
            if isinstance(side, bool) or not isinstance(side, int) or side < 1:
                raise ValueError(f"task.{key} must be a whole number > 0 (pixels, a multiple of the patch size {p}), "
                                 f"got {side!r}")  # fmt: skip
        if template_size % p or search_size % p:
            raise ValueError(f"template_size {template_size} and search_size {search_size} must be multiples of the "
                             f"patch size {p}")  # fmt: skip
        self.grid = (template_size // p, search_size // p)
        emb = self.videomae.embeddings
        for name, g in zip(("template", "search"), self.grid, strict=True):
            emb.register_parameter(f"{name}_position_embeddings", nn.Parameter(torch.randn(1, g * g, dim) * 0.02))
        self.box_head = CenterHead(dim, head_dim)

    def embed(self, img: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        proj = self.videomae.embeddings.patch_embeddings.projection  # Conv3d over a static clip = Conv2d, summed kernel
        x = F.conv2d(img, proj.weight.sum(2), proj.bias, stride=proj.stride[1:])
        return x.flatten(2).transpose(1, 2) + pos

    def forward(self, template: torch.Tensor, search: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.videomae.embeddings
        z = self.embed(template, emb.template_position_embeddings)
        x = self.embed(search, emb.search_position_embeddings)
        h = self.videomae.encoder(torch.cat([z, x], dim=1)).last_hidden_state
        if self.videomae.layernorm is not None:
            h = self.videomae.layernorm(h)
        g = self.grid[1]
        feat = h[:, z.shape[1] :].transpose(1, 2).reshape(h.shape[0], -1, g, g)
        return self.box_head(feat)


def resize_grid(pos: torch.Tensor, size: int) -> torch.Tensor:
    """(1, g*g, C) position grid resampled to (1, size*size, C), bicubic as timm's resample_abs_pos_embed."""
    g = int(math.isqrt(pos.shape[1]))
    grid = pos.reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    out = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False, antialias=size < g)
    return out.permute(0, 2, 3, 1).reshape(1, size * size, -1)


@torch.no_grad()
def inflate_dinov2(tracker: VideoMAETracker, dino: nn.Module) -> dict[str, list[str]]:
    """Copy a transformers ``Dinov2Model`` into the tracker's VideoMAE backbone (the standard inflation).

    The 2-D patch kernel is spread evenly over the tubelet's frames (``w / T`` per frame, so a static clip
    gives the image's features), resampled with FlexiViT's pseudo-inverse resize when the patch size
    differs; the 37x37 position grid is interpolated to the template and search grids (the class token's
    position is dropped with the token). DINOv2's layer scales are folded into the attention output and
    fc2 weights; its key bias is dropped, which changes nothing (softmax is invariant to a per-query
    constant). Returns ``{"loaded": [...], "unused": [...]}`` (tracker names / DINOv2 names).
    """
    vm, cfg = tracker.videomae, tracker.videomae.config
    loaded, unused = [], ["embeddings.cls_token", "embeddings.mask_token"]
    proj = vm.embeddings.patch_embeddings.projection
    k2 = dino.embeddings.patch_embeddings.projection.weight
    if k2.shape[-1] != cfg.patch_size:
        from timm.layers import resample_patch_embed

        k2 = resample_patch_embed(k2.float(), [cfg.patch_size, cfg.patch_size])
    t = proj.weight.shape[2]
    proj.weight.copy_(k2.unsqueeze(2).expand(-1, -1, t, -1, -1) / t)
    proj.bias.copy_(dino.embeddings.patch_embeddings.projection.bias)
    loaded += ["embeddings.patch_embeddings.projection.weight", "embeddings.patch_embeddings.projection.bias"]
    pos = dino.embeddings.position_embeddings[:, 1:]
    for name, g in zip(("template", "search"), tracker.grid, strict=True):
        getattr(vm.embeddings, f"{name}_position_embeddings").copy_(resize_grid(pos, g))
        loaded.append(f"embeddings.{name}_position_embeddings")
    if len(dino.encoder.layer) < len(vm.encoder.layer):
        raise ValueError(f"DINOv2 has {len(dino.encoder.layer)} blocks, the tracker {len(vm.encoder.layer)}; set "
                         f"model.num_hidden_layers <= {len(dino.encoder.layer)}")  # fmt: skip
    for i, (src, dst) in enumerate(zip(dino.encoder.layer, vm.encoder.layer, strict=False)):
        a, sa = src.attention, dst.attention.attention
        pairs = [(sa.query, a.q_proj), (sa.value, a.v_proj), (dst.layernorm_before, src.norm1),
                 (dst.layernorm_after, src.norm2), (dst.intermediate.dense, src.mlp.fc1)]  # fmt: skip
        for d, s in pairs:
            d.weight.copy_(s.weight)
            d.bias.copy_(s.bias)
        sa.key.weight.copy_(a.k_proj.weight)
        for d, s, ls in ((dst.attention.output.dense, a.o_proj, src.layer_scale1), (dst.output.dense, src.mlp.fc2,
                                                                                    src.layer_scale2)):  # fmt: skip
            d.weight.copy_(s.weight * ls.lambda1[:, None])
            d.bias.copy_(s.bias * ls.lambda1)
        loaded += [f"encoder.layer.{i}.{n}" for n, _ in dst.named_parameters()]
        unused.append(f"encoder.layer.{i}.attention.k_proj.bias (dropped: no effect)")
    unused += [f"encoder.layer.{i}.*" for i in range(len(vm.encoder.layer), len(dino.encoder.layer))]
    if vm.layernorm is not None:
        vm.layernorm.load_state_dict(dino.layernorm.state_dict())
        loaded += ["layernorm.weight", "layernorm.bias"]
    return {"loaded": ["videomae." + n for n in loaded], "unused": unused}


def videomaev2_to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a VideoMAEv2 / original VideoMAE state dict (``blocks.i.attn.qkv`` ...) to transformers' names."""
    sd = {k.removeprefix("module.").removeprefix("encoder."): v for k, v in sd.get("module", sd).items()}
    out: dict[str, torch.Tensor] = {}
    ren = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
           "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}  # fmt: skip
    for k, v in sd.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            pre = f"encoder.layer.{i}."
            if rest == "attn.qkv.weight":
                for n, part in zip(("query", "key", "value"), v.chunk(3), strict=True):
                    out[f"{pre}attention.attention.{n}.weight"] = part
                continue
            if rest in ("attn.q_bias", "attn.v_bias"):
                out[f"{pre}attention.attention.{'query' if 'q_' in rest else 'value'}.bias"] = v
                continue
            for a, b in ren.items():
                if rest.startswith(a + "."):
                    rest = b + rest[len(a) :]
            out[pre + rest] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.rsplit(".", 1)[1]] = v
        elif k.startswith(("norm.", "fc_norm.")):
            out["layernorm." + k.rsplit(".", 1)[1]] = v
        else:
            out[k] = v  # reported as unused
    return out


@torch.no_grad()
def load_backbone_state(tracker: VideoMAETracker, sd: dict[str, torch.Tensor], side: int) -> dict[str, list[str]]:
    """Copy a VideoMAE state dict; the position grids start from VideoMAE's fixed sinusoid table for one
    frame of a ``side`` x ``side`` patch grid (what the checkpoint was pretrained with), interpolated."""
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    own = tracker.videomae.state_dict()
    use = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    tracker.videomae.load_state_dict(use, strict=False)
    table = get_sinusoid_encoding_table(side * side, tracker.videomae.config.hidden_size).float()
    emb = tracker.videomae.embeddings
    for name, g in zip(("template", "search"), tracker.grid, strict=True):
        getattr(emb, f"{name}_position_embeddings").copy_(resize_grid(table, g))
    pos = [f"embeddings.{n}_position_embeddings" for n in ("template", "search")]
    return {"loaded": ["videomae." + k for k in [*use, *pos]], "unused": sorted(set(sd) - set(use))}


def load_report(tracker: VideoMAETracker, loaded: list[str]) -> list[str]:
    """Backbone tensors the initialisation left random (the head is always new)."""
    done = set(loaded)
    return [n for n, _ in tracker.named_parameters() if n.startswith("videomae.") and n not in done]


def initialise(tracker: VideoMAETracker, pretrained: str | None, strict: bool) -> dict[str, list[str]]:
    if pretrained is None:
        return {"loaded": [], "unused": [], "random": load_report(tracker, [])}
    path = Path(pretrained).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        import json

        kind = json.loads((path / "config.json").read_text()).get("model_type")
        if kind == "dinov2":
            from transformers import Dinov2Model

            result = inflate_dinov2(tracker, Dinov2Model.from_pretrained(str(path)).float())
        elif kind == "videomae":
            from transformers import VideoMAEModel

            src = VideoMAEModel.from_pretrained(str(path))
            side = src.config.image_size // src.config.patch_size
            result = load_backbone_state(tracker, src.state_dict(), side)
        else:
            raise ValueError(
                f"model.pretrained: {path}/config.json has model_type {kind!r}; expected 'dinov2' or 'videomae'"
            )
    elif path.is_file():
        from recipes.train.checkpoint import safe_load

        sd = safe_load(path, "model.pretrained")  # tensors only: a crafted file is refused before anything runs
        side = 224 // tracker.videomae.config.patch_size  # VideoMAEv2 pretrains at 224 px
        result = load_backbone_state(tracker, videomaev2_to_transformers(sd.get("model", sd)), side)
    else:
        raise FileNotFoundError(f"model.pretrained: {path} is neither a model folder with config.json nor a .pth file")
    result["random"] = load_report(tracker, result["loaded"])
    if result["random"]:
        msg = f"model.pretrained {path}: {len(result['random'])} backbone tensors left random, e.g. {result['random'][:3]}"
        if strict:
            raise ValueError(
                msg + "; check the checkpoint matches model.* (sizes, patch size), or strict_pretrained=False"
            )
        log.warning(msg)
    return result


@MODELS.register_module("videomae_tracker")
def build_videomae_tracker(template_size: int = 112, search_size: int = 224, pretrained: str | None = None,
                           strict_pretrained: bool = True, head_dim: int = 128, **config: Any) -> VideoMAETracker:  # fmt: skip
    """A :class:`VideoMAETracker`; ``config`` goes to ``VideoMAEConfig`` (hidden_size, num_hidden_layers...).

    With a DINOv2 ``pretrained``, the width, heads, MLP size and epsilon follow its config.json (a different value
    given is an error); give them too, so that the same config rebuilds the model without ``pretrained``.
    """
    from transformers import VideoMAEConfig

    if pretrained is not None and (Path(pretrained) / "config.json").is_file():
        import json

        src = json.loads((Path(pretrained) / "config.json").read_text())
        if src.get("model_type") == "dinov2":
            src["intermediate_size"] = int(src["hidden_size"] * src["mlp_ratio"])
            for k in ("hidden_size", "num_attention_heads", "layer_norm_eps", "hidden_act", "intermediate_size"):
                if config.setdefault(k, src[k]) != src[k]:
                    raise ValueError(f"model.{k}={config[k]} but the DINOv2 in {pretrained} has {k}={src[k]}; "
                                     f"remove model.{k} or match it")  # fmt: skip
            config.setdefault("num_hidden_layers", src["num_hidden_layers"])  # fewer: the first blocks
            config.setdefault("patch_size", src["patch_size"])  # another size: the kernel is resampled
    config.setdefault("use_mean_pooling", False)
    config.setdefault("image_size", search_size)
    cfg = VideoMAEConfig(**config)
    tracker = VideoMAETracker(cfg, template_size, search_size, head_dim)
    tracker.init_report = initialise(tracker, pretrained, strict_pretrained)
    return tracker


def check_tracker_options(model: dict[str, Any]) -> None:
    """``model.*``: this builder's keys and ``VideoMAEConfig``'s (which would keep an unknown key silently)."""
    import inspect

    from transformers import VideoMAEConfig

    own = set(inspect.signature(build_videomae_tracker).parameters) - {"config"}
    check_keys("model.", model, own | set(VideoMAEConfig().to_dict()))


build_videomae_tracker.check_options = check_tracker_options  # type: ignore[attr-defined]
