"""A trained LoRA in kohya's key layout (``task.save_format="kohya"``), for every family this trainer saves.

kohya sd-scripts, musubi-tuner and ComfyUI name a LoRA module after the model's *original* checkpoint
(``lora_unet_`` + its module path with ``_`` for ``.``), where diffusers renamed and split modules:

- U-Net families (SD 1.5, SDXL) and Z-Image: the diffusers module path itself (diffusers' readers map it back);
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
SAME_PATH = ("sd15", "sdxl", "zimage")  # kohya (U-Nets) and musubi-tuner (Z-Image) use the diffusers module path


def original_path(family: str, module: str) -> tuple[str, int, tuple[str, ...] | None]:
    """``(original module path, part index, fused parts)`` of a diffusers LoRA module in ``family``."""
    if family in SAME_PATH:
        return module, 0, None
    if family not in RULES:
        raise ValueError(f"task.save_format='kohya': no kohya / ComfyUI key layout is known for the {family} family "
                         f"(known: {sorted([*RULES, *SAME_PATH])}); use save_format='diffusers'")  # fmt: skip
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


def kohya_modules(modules: dict[str, Any], family: str) -> dict[str, list[Any]]:
    """``{diffusers module path: value}`` grouped by kohya module (``{original path: [values of its parts]}``)."""
    groups: dict[str, dict[int, Any]] = {}
    parts_of: dict[str, tuple[str, ...] | None] = {}
    for module, value in modules.items():
        target, index, parts = original_path(family, module)
        groups.setdefault(target, {})[index] = value
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
    """Before training: every LoRA module of ``model`` (peft-injected) has a kohya name and one alpha."""
    lora_scale(model.peft_config["default"])
    kohya_modules({n: n for n, m in model.named_modules() if hasattr(m, "lora_A")}, family)


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
    out = {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": torch.block_diag(*[m["B"] for m in ordered]),
           f"{stem}.alpha": torch.tensor(scale * down.shape[0])}  # fmt: skip
    if "magnitude_vector" in ordered[0]:
        out[f"{stem}.dora_scale"] = torch.cat([m["magnitude_vector"] for m in ordered]).reshape(-1, 1)
    return out


def kohya_state(state: dict[str, torch.Tensor], family: str, config: Any) -> dict[str, torch.Tensor]:
    """peft's adapter state dict of a ``family`` denoiser (``<module>.lora_A.weight`` ...) in kohya's keys."""
    scale = lora_scale(config)
    out: dict[str, torch.Tensor] = {}
    for target, ordered in kohya_modules(_by_module(state), family).items():
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
