"""A trained LoRA in kohya's key layout (``task.save_format="kohya"``), for every family this trainer saves.

kohya sd-scripts, musubi-tuner and ComfyUI name a LoRA module after the model's *original* checkpoint
(``lora_unet_`` + its module path with ``_`` for ``.``), where diffusers renamed and split modules:

- SD 1.5 and Z-Image: the diffusers module path itself (kohya's SD 1.5 U-Net, ``library/original_unet.py``, is a
  copy of diffusers 0.10.2's with its state-dict names; musubi-tuner names Z-Image's modules as diffusers does);
- SDXL (kohya ``library/sdxl_original_unet.py``, the original SGM layout kohya trains SDXL on): ``input_blocks``,
  ``middle_block``, ``output_blocks`` numbered from the U-Net's config (``sgm_blocks``):
  ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`` is diffusers' ``down_blocks.1.attentions.0...``;
- Flux.1 / Chroma / Flux.2 (BFL names, kohya ``networks/lora_flux.py``): ``double_blocks_N_img_attn_qkv``
  holds ``to_q``, ``to_k``, ``to_v`` fused, ``single_blocks_N_linear1`` Flux.1's ``to_q``, ``to_k``, ``to_v``
  and ``proj_mlp`` (Flux.2's ``to_qkv_mlp_proj`` is already one module);
- SD3 (``networks/lora_sd3.py``): ``joint_blocks_N_x_block_attn_qkv`` / ``context_block``;
- WAN 2.1 / 2.2 (musubi-tuner ``networks/lora_wan.py``): ``blocks_N_self_attn_q`` ... ``ffn_0``;
- LTX-2 (ltx-core / ComfyUI ``comfy/ldm/lightricks/av_model.py``, which ComfyUI's generic ``lora_unet_`` map
  reads): the blocks keep diffusers' names (``transformer_blocks_0_attn1_to_q``, ``..._audio_ff_net_2``); the
  top-level modules are renamed back (``patchify_proj``, ``adaln_single``, ``av_ca_*_adaln_single``), the inverse of
  diffusers' ``_convert_non_diffusers_ltx2_lora_to_diffusers``;
- SD 1.5 / SDXL text encoders (``policy.text_encoder``, kohya ``networks/lora.py``): ``lora_te_`` (SD 1.5),
  ``lora_te1_`` / ``lora_te2_`` (SDXL's ``text_encoder`` / ``text_encoder_2``) + the module's path in the
  transformers 4.44 CLIP models kohya loads (its ``requirements.txt``):
  ``lora_te1_text_model_encoder_layers_0_self_attn_q_proj``. transformers 5 flattened ``CLIPTextModel`` (no
  ``text_model.``), so that prefix is put back (``text_kohya_name``).

A fused module is written as one LoRA of rank ``n * r``: ``lora_down`` the parts' ``lora_A`` stacked,
``lora_up`` their ``lora_B`` on the block diagonal, so ``up @ down`` is the parts' deltas stacked on the
output rows (what kohya's and diffusers' converters split again). Each module gets ``.alpha`` with
``alpha / rank`` equal to the trained scale (alpha / r, or alpha / sqrt(r) with rsLoRA), and with DoRA its
magnitude as ``.dora_scale`` of shape ``(out, 1)``, the norm over the input of each output row (ComfyUI
``weight_decompose`` with ``wd_on_output_axis``; LyCORIS writes the same).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

_QKV = ("to_q", "to_k", "to_v")
_ADD_QKV = ("add_q_proj", "add_k_proj", "add_v_proj")
_BFL_EMBED = [  # Flux.1's embedders and output layer (diffusers' converter maps these back too)
    (r"x_embedder", "img_in", None),
    (r"context_embedder", "txt_in", None),
    (r"time_text_embed\.timestep_embedder\.linear_1", "time_in.in_layer", None),
    (r"time_text_embed\.timestep_embedder\.linear_2", "time_in.out_layer", None),
    (r"time_text_embed\.guidance_embedder\.linear_1", "guidance_in.in_layer", None),
    (r"time_text_embed\.guidance_embedder\.linear_2", "guidance_in.out_layer", None),
    (r"time_text_embed\.text_embedder\.linear_1", "vector_in.in_layer", None),
    (r"time_text_embed\.text_embedder\.linear_2", "vector_in.out_layer", None),
    (r"proj_out", "final_layer.linear", None),
]
_WAN_PROJ = (("to_q", "q"), ("to_k", "k"), ("to_v", "v"), (r"to_out\.0", "o"), ("add_k_proj", "k_img"),
             ("add_v_proj", "v_img"))  # fmt: skip
#: (full-match pattern of a diffusers module path, original path with ``{0}`` the block number, fused parts)
RULES: dict[str, list[tuple[str, str, tuple[str, ...] | None]]] = {
    "flux": [
        (r"transformer_blocks\.(\d+)\.attn\.(to_[qkv])", "double_blocks.{0}.img_attn.qkv", _QKV),
        (r"transformer_blocks\.(\d+)\.attn\.(add_[qkv]_proj)", "double_blocks.{0}.txt_attn.qkv", _ADD_QKV),
        (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", "double_blocks.{0}.img_attn.proj", None),
        (r"transformer_blocks\.(\d+)\.attn\.to_add_out", "double_blocks.{0}.txt_attn.proj", None),
        (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj", "double_blocks.{0}.img_mlp.0", None),
        (r"transformer_blocks\.(\d+)\.ff\.net\.2", "double_blocks.{0}.img_mlp.2", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj", "double_blocks.{0}.txt_mlp.0", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.net\.2", "double_blocks.{0}.txt_mlp.2", None),
        (r"transformer_blocks\.(\d+)\.norm1\.linear", "double_blocks.{0}.img_mod.lin", None),
        (r"transformer_blocks\.(\d+)\.norm1_context\.linear", "double_blocks.{0}.txt_mod.lin", None),
        (
            r"single_transformer_blocks\.(\d+)\.(attn\.to_[qkv]|proj_mlp)",
            "single_blocks.{0}.linear1",
            ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
        ),  # fmt: skip
        (r"single_transformer_blocks\.(\d+)\.proj_out", "single_blocks.{0}.linear2", None),
        (r"single_transformer_blocks\.(\d+)\.norm\.linear", "single_blocks.{0}.modulation.lin", None),
        *_BFL_EMBED,
    ],
    "flux2": [
        (r"transformer_blocks\.(\d+)\.attn\.(to_[qkv])", "double_blocks.{0}.img_attn.qkv", _QKV),
        (r"transformer_blocks\.(\d+)\.attn\.(add_[qkv]_proj)", "double_blocks.{0}.txt_attn.qkv", _ADD_QKV),
        (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", "double_blocks.{0}.img_attn.proj", None),
        (r"transformer_blocks\.(\d+)\.attn\.to_add_out", "double_blocks.{0}.txt_attn.proj", None),
        (r"transformer_blocks\.(\d+)\.ff\.linear_in", "double_blocks.{0}.img_mlp.0", None),
        (r"transformer_blocks\.(\d+)\.ff\.linear_out", "double_blocks.{0}.img_mlp.2", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.linear_in", "double_blocks.{0}.txt_mlp.0", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.linear_out", "double_blocks.{0}.txt_mlp.2", None),
        (r"single_transformer_blocks\.(\d+)\.attn\.to_qkv_mlp_proj", "single_blocks.{0}.linear1", None),
        (r"single_transformer_blocks\.(\d+)\.attn\.to_out", "single_blocks.{0}.linear2", None),
    ],
    "sd3": [
        (r"transformer_blocks\.(\d+)\.attn\.(to_[qkv])", "joint_blocks.{0}.x_block.attn.qkv", _QKV),
        (r"transformer_blocks\.(\d+)\.attn\.(add_[qkv]_proj)", "joint_blocks.{0}.context_block.attn.qkv", _ADD_QKV),
        (r"transformer_blocks\.(\d+)\.attn\.to_out\.0", "joint_blocks.{0}.x_block.attn.proj", None),
        (r"transformer_blocks\.(\d+)\.attn\.to_add_out", "joint_blocks.{0}.context_block.attn.proj", None),
        (r"transformer_blocks\.(\d+)\.attn2\.(to_[qkv])", "joint_blocks.{0}.x_block.attn2.qkv", _QKV),
        (r"transformer_blocks\.(\d+)\.attn2\.to_out\.0", "joint_blocks.{0}.x_block.attn2.proj", None),
        (r"transformer_blocks\.(\d+)\.ff\.net\.0\.proj", "joint_blocks.{0}.x_block.mlp.fc1", None),
        (r"transformer_blocks\.(\d+)\.ff\.net\.2", "joint_blocks.{0}.x_block.mlp.fc2", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.net\.0\.proj", "joint_blocks.{0}.context_block.mlp.fc1", None),
        (r"transformer_blocks\.(\d+)\.ff_context\.net\.2", "joint_blocks.{0}.context_block.mlp.fc2", None),
    ],
    "wan": [
        *[
            (rf"blocks\.(\d+)\.{attn}\.{diffusers}", f"blocks.{{0}}.{wan_attn}.{wan}", None)
            for attn, wan_attn in (("attn1", "self_attn"), ("attn2", "cross_attn"))
            for diffusers, wan in _WAN_PROJ
        ],
        (r"blocks\.(\d+)\.ffn\.net\.0\.proj", "blocks.{0}.ffn.0", None),
        (r"blocks\.(\d+)\.ffn\.net\.2", "blocks.{0}.ffn.2", None),
    ],
}
#: LTX-2's top-level modules diffusers renamed (``scripts/convert_ltx2_to_diffusers.py``): (diffusers, original)
_LTX2_RENAMED = (("audio_proj_in", "audio_patchify_proj"), ("proj_in", "patchify_proj"),
                 ("audio_time_embed", "audio_adaln_single"), ("time_embed", "adaln_single"),
                 ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
                 ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
                 ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
                 ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
                 ("audio_prompt_adaln", "audio_prompt_adaln_single"), ("prompt_adaln", "prompt_adaln_single"))  # fmt: skip
RULES["ltx2"] = [
    (r"(transformer_blocks\.\d+\..+)", "{0}", None),
    *[(rf"{d}(\..+)?", o + "{0}", None) for d, o in _LTX2_RENAMED],
    (r"((?:audio_)?(?:caption_projection\..+|proj_out))", "{0}", None),
]
_NOT_IN_CHROMA = ("mod", "time_in.", "guidance_in.", "vector_in.")  # its modulation comes from one approximator
RULES["chroma"] = [r for r in RULES["flux"] if not any(w in r[1] for w in _NOT_IN_CHROMA)]
RULES["wan22"] = RULES["wan"]
SAME_PATH = ("sd15", "zimage")  # kohya's SD 1.5 U-Net and musubi-tuner's Z-Image use the diffusers module path
SGM = ("sdxl",)  # kohya's SDXL U-Net (library/sdxl_original_unet.py) has the original SGM layout

# --- SDXL: diffusers' U-Net blocks in the SGM layout of kohya's SDXL U-Net -----------------------------------------
#: a ResnetBlock2D's layers: diffusers name -> SGM name (kohya ``ResnetBlock2D``: ``in_layers`` = GroupNorm, SiLU,
#: Conv2d; ``emb_layers`` = SiLU, Linear; ``out_layers`` = GroupNorm, SiLU, Identity, Conv2d); ComfyUI
#: ``comfy/utils.py`` ``UNET_MAP_RESNET`` is the same table
SGM_RESNET = {"conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "conv2": "out_layers.3",
              "conv_shortcut": "skip_connection"}  # fmt: skip
_BLOCK = r"(?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions)\.\d+|mid_block\.(?:resnets|attentions)\.\d+"
_SAMPLER = r"down_blocks\.\d+\.downsamplers\.0\.conv|up_blocks\.\d+\.upsamplers\.0\.conv"
_DOWN, _UP, _MID = (
    ("DownBlock2D", "CrossAttnDownBlock2D"),
    ("UpBlock2D", "CrossAttnUpBlock2D"),
    "UNetMidBlock2DCrossAttn",
)


def sgm_blocks(unet: Any) -> dict[str, str]:
    """``{diffusers block path: SGM block path}`` of a diffusers ``UNet2DConditionModel`` config (a mapping, or the
    model), walked as the original U-Net is built: ``input_blocks.0`` is ``conv_in``; each down level's layers
    follow as ``input_blocks.N.0`` (resnet) / ``.1`` (attention), then its downsampler's ``input_blocks.N.0.op``;
    ``middle_block.0`` / ``.1`` / ``.2`` = resnet, attention, resnet; each up level's ``layers_per_block + 1`` layers
    as ``output_blocks.N.0`` / ``.1``, its upsampler ``output_blocks.N.1.conv`` (``.2`` after an attention). The same
    walk as ComfyUI's ``unet_to_diffusers`` and diffusers' ``_maybe_map_sgm_blocks_to_diffusers`` in reverse."""
    cfg = getattr(unet, "config", unet)
    down, up, per = list(cfg["down_block_types"]), list(cfg["up_block_types"]), cfg["layers_per_block"]
    per = [per] * len(down) if isinstance(per, int) else list(per)
    odd = [t for t in down if t not in _DOWN] + [t for t in up if t not in _UP]
    if odd or cfg.get("mid_block_type", _MID) != _MID or len(up) != len(down) or len(per) != len(down):
        raise ValueError(f"task.save_format='kohya': this U-Net's blocks ({down}, {cfg.get('mid_block_type')}, {up}) "
                         "are not the SDXL layout kohya's SGM names are known for; use save_format='diffusers'")  # fmt: skip
    blocks, n = {}, 1
    for i, kind in enumerate(down):
        for j in range(per[i]):
            blocks[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{n}.0"
            if kind.startswith("CrossAttn"):
                blocks[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{n}.1"
            n += 1
        if i < len(down) - 1:  # every level but the last halves the resolution
            blocks[f"down_blocks.{i}.downsamplers.0.conv"], n = f"input_blocks.{n}.0.op", n + 1
    blocks |= {"mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
               "mid_block.resnets.1": "middle_block.2"}  # fmt: skip
    n = 0
    for i, (kind, layers) in enumerate(zip(up, per[::-1], strict=True)):
        attention = kind.startswith("CrossAttn")
        for j in range(layers + 1):
            blocks[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{n}.0"
            if attention:
                blocks[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{n}.1"
            n += 1
        if i < len(up) - 1:  # the upsampler sits in the level's last output block, after its resnet (and attention)
            blocks[f"up_blocks.{i}.upsamplers.0.conv"] = f"output_blocks.{n - 1}.{2 if attention else 1}.conv"
    return blocks


def sgm_path(module: str, blocks: dict[str, str]) -> str:
    """kohya's SDXL module path of a diffusers U-Net module (``blocks``: ``sgm_blocks`` of the U-Net): inside an
    attention (kohya's ``Transformer2DModel``) the names are diffusers' own (``proj_in``,
    ``transformer_blocks.0.attn1.to_q``, ``ff.net.0.proj``); a resnet's layers are renamed (``SGM_RESNET``)."""
    m = re.fullmatch(rf"({_BLOCK})(?:\.(.+))?|({_SAMPLER})", module)
    block = m and (m.group(1) or m.group(3))
    if block not in blocks or (m.group(1) and m.group(2) is None):
        raise ValueError(f"task.save_format='kohya': the LoRA module {module!r} is not in kohya's SDXL network "
                         "(networks/lora.py wraps the Linear and Conv2d layers of Transformer2DModel, ResnetBlock2D, "
                         "Downsample2D and Upsample2D); leave it out of policy.targets or use "
                         "save_format='diffusers'")  # fmt: skip
    rest = m.group(2)
    if ".resnets." in block:
        if rest not in SGM_RESNET:
            raise ValueError(f"task.save_format='kohya': the resnet layer {module!r} has no SGM name (known: "
                             f"{sorted(SGM_RESNET)}); leave it out of policy.targets or use save_format='diffusers'")  # fmt: skip
        rest = SGM_RESNET[rest]
    return blocks[block] + (f".{rest}" if rest else "")


def original_path(family: str, module: str, unet: Any = None) -> tuple[str, int, tuple[str, ...] | None]:
    """``(original module path, part index, fused parts)`` of a diffusers LoRA module in ``family`` (``unet``: the
    U-Net or its config, whose block counts number SDXL's SGM blocks)."""
    if family in SAME_PATH:
        return module, 0, None
    if family in SGM:
        if unet is None:
            raise ValueError(f"kohya's names of the {family} U-Net's modules follow its config: pass the U-Net")
        return sgm_path(module, sgm_blocks(unet)), 0, None
    if family not in RULES:
        raise ValueError(f"task.save_format='kohya': no kohya / ComfyUI key layout is known for the {family} family "
                         f"(known: {sorted([*RULES, *SAME_PATH, *SGM])}); use save_format='diffusers'")  # fmt: skip
    for pattern, target, parts in RULES[family]:
        m = re.fullmatch(pattern, module)
        if m:
            return target.format(*[g or "" for g in m.groups()[:1]]), parts.index(m.group(2)) if parts else 0, parts
    raise ValueError(f"task.save_format='kohya': the LoRA module {module!r} has no name in kohya's {family} layout; "
                     "leave it out of policy.targets or use save_format='diffusers'")  # fmt: skip


def lora_scale(config: Any) -> float:
    """The trained LoRA scale of a peft ``LoraConfig``: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    if getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
        raise ValueError("task.save_format='kohya' writes one alpha per module from lora.r and lora.alpha; this "
                         "LoRA has per-module rank_pattern / alpha_pattern: use save_format='diffusers'")  # fmt: skip
    r, alpha = int(config.r), float(config.lora_alpha)
    return alpha / math.sqrt(r) if config.use_rslora else alpha / r


def kohya_modules(modules: dict[str, Any], family: str, unet: Any = None) -> dict[str, list[Any]]:
    """``{diffusers module path: value}`` grouped by kohya module (``{original path: [values of its parts]}``);
    ``unet``: the U-Net or its config (SDXL)."""
    groups: dict[str, dict[int, Any]] = {}
    parts_of: dict[str, tuple[str, ...] | None] = {}
    for module, value in modules.items():
        target, index, parts = original_path(family, module, unet)
        if index in groups.setdefault(target, {}):
            raise ValueError(f"task.save_format='kohya': two LoRA modules, {module!r} and another, have the one kohya "
                             f"name {target!r}")  # fmt: skip
        groups[target][index] = value
        parts_of[target] = parts
    for target, members in groups.items():
        parts = parts_of[target]
        if parts and len(members) != len(parts):
            missing = [p for i, p in enumerate(parts) if i not in members]
            raise ValueError(f"task.save_format='kohya': {target} is one module in kohya's {family} layout, fused from "
                             f"{list(parts)}; the LoRA lacks {missing}: add them to policy.targets or use "
                             "save_format='diffusers'")  # fmt: skip
    return {target: [members[i] for i in sorted(members)] for target, members in groups.items()}


def check_kohya_layout(model: Any, family: str) -> None:
    """Before training: every LoRA module of the denoiser ``model`` (peft-injected) has a kohya name and one alpha."""
    lora_scale(model.peft_config["default"])
    text = tuple(f"{n}." for n in ("text_encoder", "text_encoder_2"))  # attached encoders: their own names
    lora = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and not n.startswith(text)]
    kohya_modules({n: n for n in lora}, family, model)


def _by_module(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """peft's ``<module>.lora_A.weight`` ... keys grouped: ``{module: {"A": ..., "B": ..., "magnitude_vector": ...}}``."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".lora_")
        modules.setdefault(module, {})[kind.split(".")[0]] = value
    return modules


def _kohya_module(stem: str, ordered: list[dict[str, torch.Tensor]], scale: float) -> dict[str, torch.Tensor]:
    """One kohya module from its parts' LoRA (one part unless fused), with ``.alpha`` = scale x its rank."""
    down = torch.cat([m["A"] for m in ordered])
    up = ordered[0]["B"] if len(ordered) == 1 else torch.block_diag(*[m["B"] for m in ordered])  # a conv's B is 4-D
    out = {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up,
           f"{stem}.alpha": torch.tensor(scale * down.shape[0])}  # fmt: skip
    if "magnitude_vector" in ordered[0]:
        out[f"{stem}.dora_scale"] = torch.cat([m["magnitude_vector"] for m in ordered]).reshape(-1, 1)
    return out


def kohya_state(state: dict[str, torch.Tensor], family: str, config: Any, unet: Any = None) -> dict[str, torch.Tensor]:
    """peft's adapter state dict of a ``family`` denoiser (``<module>.lora_A.weight`` ...) in kohya's keys
    (``unet``: the U-Net or its config, SDXL)."""
    scale = lora_scale(config)
    out: dict[str, torch.Tensor] = {}
    for target, ordered in kohya_modules(_by_module(state), family, unet).items():
        out |= _kohya_module("lora_unet_" + target.replace(".", "_"), ordered, scale)
    return out


# --- text encoders (policy.text_encoder, SD 1.5 / SDXL) ----------------------------------------------------------
#: kohya sd-scripts ``networks/lora.py`` ``LoRANetwork``: ``LORA_PREFIX_TEXT_ENCODER`` ("lora_te") with one text
#: encoder, ``LORA_PREFIX_TEXT_ENCODER1`` / ``2`` ("lora_te1" / "lora_te2") with SDXL's two; ComfyUI
#: ``comfy/lora.py`` ``model_lora_keys_clip`` reads the same (``lora_te_`` / ``lora_te1_`` for CLIP-L,
#: ``lora_te2_`` for SDXL's CLIP-G)
TEXT_PREFIXES = {
    "sd15": {"text_encoder": "lora_te"},
    "sdxl": {"text_encoder": "lora_te1", "text_encoder_2": "lora_te2"},
}
#: the Linear layers kohya wraps in a CLIP text encoder (the children of ``TEXT_ENCODER_TARGET_REPLACE_MODULE``
#: ``CLIPAttention`` and ``CLIPMLP``); ComfyUI's ``LORA_CLIP_MAP`` lists the same six
TEXT_LINEARS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
#: a LoRA module of a CLIP text encoder as transformers 5 names it; ``text_model.`` is absent in ``CLIPTextModel``
#: (flattened in transformers 5) and present in ``CLIPTextModelWithProjection``
_TEXT_MODULE = r"(?:text_model\.)?(encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12]))"


def text_kohya_name(family: str, encoder: str, module: str) -> str:
    """kohya's name of a LoRA module of a pipeline's text encoder: its prefix, then the module's path in the
    transformers 4 ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` kohya loads (both under ``text_model.``),
    ``_`` for ``.``: ``text_encoder_2`` + ``encoder.layers.0.self_attn.q_proj`` ->
    ``lora_te2_text_model_encoder_layers_0_self_attn_q_proj``."""
    prefix = TEXT_PREFIXES.get(family, {}).get(encoder)
    if prefix is None:
        raise ValueError(f"task.save_format='kohya': no kohya text-encoder prefix for {encoder!r} of the {family} "
                         f"family (known: {TEXT_PREFIXES})")  # fmt: skip
    m = re.fullmatch(_TEXT_MODULE, module)
    if m is None:
        raise ValueError(f"task.save_format='kohya': the {encoder} LoRA module {module!r} has no name in kohya's "
                         f"text-encoder layout (the {list(TEXT_LINEARS)} layers of each encoder layer); leave it out "
                         "of policy.text_encoder.targets or use save_format='diffusers'")  # fmt: skip
    return f"{prefix}_text_model_{m.group(1)}".replace(".", "_")


def check_text_targets(targets: list[str]) -> None:
    """Before training: every ``policy.text_encoder.targets`` suffix names one of kohya's text-encoder layers."""
    stray = [t for t in targets if not isinstance(t, str) or t.rpartition(".")[2] not in TEXT_LINEARS]
    if stray:
        raise ValueError(f"task.save_format='kohya': policy.text_encoder.targets {stray} are not in kohya's "
                         f"text-encoder layout (networks/lora.py wraps the Linear layers {list(TEXT_LINEARS)} of "
                         "CLIPAttention and CLIPMLP); target those or use save_format='diffusers'")  # fmt: skip


def kohya_text_state(state: dict[str, torch.Tensor], family: str, encoder: str, config: Any) -> dict[str, torch.Tensor]:
    """peft's adapter state dict of the pipeline's text encoder ``encoder`` (``encoder.layers.0.self_attn.q_proj.
    lora_A.weight`` ...) in kohya's keys (``lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight``
    ...), each module with its ``.alpha`` (the encoder's own alpha / r)."""
    scale = lora_scale(config)
    out: dict[str, torch.Tensor] = {}
    for module, parts in _by_module(state).items():
        out |= _kohya_module(text_kohya_name(family, encoder, module), [parts], scale)
    return out
