"""diffusers denoisers: from a local pipeline folder, a named preset or a config dict.

``pretrained=DIR`` loads a diffusers pipeline folder (``model_index.json`` plus one subfolder per
component) through diffusers' own ``from_pretrained``; ``load_pipeline`` gives the whole pipeline
(the diffusion task trains its denoiser), ``build_diffusers_model`` only the denoiser. Otherwise
random weights, never a download: ``device="meta"`` builds the full-size tree without memory, which
is all ``tools/show_lr.py`` and the tests need. The presets are the ``config.json`` values of the
released checkpoints (read from their model cards / diffusers docs) that differ from the class
defaults of diffusers 0.42.1; ``tiny-*`` presets are small configs for CPU tests.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from recipes.train.registry import MODELS

_SDXL = dict(
    sample_size=128, cross_attention_dim=2048, block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)  # fmt: skip
_SD35 = dict(
    qk_norm="rms_norm", caption_projection_dim=2432, num_layers=38, num_attention_heads=38, pos_embed_max_size=192
)

#: preset name -> (diffusers class, config overrides on the class defaults)
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "flux1-dev": ("FluxTransformer2DModel", dict(guidance_embeds=True)),  # 19 double + 38 single
    "flux1-schnell": ("FluxTransformer2DModel", {}),
    "flux2-dev": ("Flux2Transformer2DModel", {}),  # 8 double + 48 single, 48 heads
    "flux2-klein-4b": (
        "Flux2Transformer2DModel",
        dict(
            num_layers=5, num_single_layers=20, num_attention_heads=24, joint_attention_dim=7680, guidance_embeds=False
        ),
    ),  # fmt: skip
    "flux2-klein-9b": (
        "Flux2Transformer2DModel",
        dict(
            num_layers=8, num_single_layers=24, num_attention_heads=32, joint_attention_dim=12288, guidance_embeds=False
        ),
    ),  # fmt: skip
    "sd15": ("UNet2DConditionModel", dict(sample_size=64, cross_attention_dim=768)),
    "sdxl": ("UNet2DConditionModel", _SDXL),
    "sd3-medium": (
        "SD3Transformer2DModel",
        dict(num_layers=24, num_attention_heads=24, caption_projection_dim=1536, pos_embed_max_size=192),
    ),  # fmt: skip
    "sd35-medium": (
        "SD3Transformer2DModel",
        dict(
            _SD35,
            num_layers=24,
            num_attention_heads=24,
            caption_projection_dim=1536,
            pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)),
        ),
    ),  # fmt: skip
    "sd35-large": ("SD3Transformer2DModel", _SD35),
    "wan21-t2v-14b": ("WanTransformer3DModel", {}),  # 40 blocks, dim 5120
    "wan21-t2v-1.3b": ("WanTransformer3DModel", dict(num_attention_heads=12, ffn_dim=8960, num_layers=30)),
    "wan22-t2v-a14b": ("WanTransformer3DModel", {}),  # each of the two experts has Wan 2.1 14B's layout
    "wan21-i2v-14b": ("WanTransformer3DModel", dict(in_channels=36, image_dim=1280, added_kv_proj_dim=5120)),
    "ltx-video": ("LTXVideoTransformer3DModel", {}),  # 2B, 28 blocks
    "ltx2": ("LTX2VideoTransformer3DModel", {}),  # 19B, 48 audio-video blocks
    "qwen-image": ("QwenImageTransformer2DModel", {}),  # 20B, 60 blocks
    "zimage-turbo": ("ZImageTransformer2DModel", {}),  # 6B: 2 + 2 refiner, 30 main blocks
    "zimage-omni": ("ZImageTransformer2DModel", dict(siglip_feat_dim=1152)),  # + SigLIP image-condition refiner
    "chroma": ("ChromaTransformer2DModel", {}),  # 19 double + 38 single
    "hunyuan-video": ("HunyuanVideoTransformer3DModel", {}),  # 13B: 2 refiner + 20 double + 40 single
    "pixart-sigma": (
        "PixArtTransformer2DModel",
        dict(caption_channels=4096, interpolation_scale=2, use_additional_conditions=False),
    ),  # fmt: skip
    "pixart-alpha-1024": ("PixArtTransformer2DModel", dict(caption_channels=4096, use_additional_conditions=True)),
    "sana-1600m": ("SanaTransformer2DModel", dict(sample_size=32)),  # 20 blocks, dim 2240
    "sana-600m": (
        "SanaTransformer2DModel",
        dict(
            num_attention_heads=36,
            num_layers=28,
            num_cross_attention_heads=16,
            cross_attention_head_dim=72,
            cross_attention_dim=1152,
        ),
    ),  # fmt: skip
}


DTYPES = ("float32", "bfloat16", "float16")
DENOISERS = ("transformer", "unet")  # the pipeline component that trains, by subfolder name


def _torch_dtype(dtype: str | None) -> Any:
    import torch

    if dtype is None:
        return None
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {DTYPES}, got {dtype!r}")
    return getattr(torch, dtype)


def read_pipeline_index(pretrained: str | Path) -> dict[str, Any]:
    """``model_index.json`` of a pipeline folder, after checking that every component's subfolder exists."""
    root = Path(pretrained)
    index = root / "model_index.json"
    if not index.is_file():
        what = "does not exist" if not root.exists() else "has no model_index.json"
        raise FileNotFoundError(f"model.pretrained={str(root)!r} {what}; give a diffusers pipeline folder "
                                "(as written by pipeline.save_pretrained)")  # fmt: skip
    info = json.loads(index.read_text())
    for name, spec in info.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (root / name).is_dir():
            raise FileNotFoundError(f"model.pretrained={str(root)!r}: component {name!r} ({spec[1]}) is listed in "
                                    f"model_index.json but the folder {str(root / name)!r} is missing")  # fmt: skip
    from recipes.train.diffusion.weight_files import check_weight_files

    check_weight_files(root, [n for n, s in info.items() if not n.startswith("_") and isinstance(s, list) and s[0]])
    return info


#: ``model.base_precision``: the frozen base's weights. None / "bf16": not quantized (kept in ``model.dtype``);
#: the others through diffusers' / transformers' quantization configs: (package, runs without CUDA)
BASE_PRECISIONS = {
    "bf16": ("", True),
    "fp8": ("torchao", True),
    "int8": ("torchao", True),
    "nf4": ("bitsandbytes", False),
}


def check_base_precision(precision: str | None, dtype: str | None, cuda: bool) -> None:
    """A value the installed packages cannot run on this machine is an error naming the value and the package."""
    import importlib.util

    if precision is None:
        return
    if precision not in BASE_PRECISIONS:
        near = difflib.get_close_matches(str(precision), BASE_PRECISIONS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(
            f"model.base_precision: unknown value {precision!r}.{hint} Known: {', '.join(BASE_PRECISIONS)}"
        )
    if precision == "bf16" and dtype not in (None, "bfloat16"):
        raise ValueError(f"model.base_precision='bf16' contradicts model.dtype={dtype!r}; drop one of them")
    package, cpu_ok = BASE_PRECISIONS[precision]
    if package and importlib.util.find_spec(package) is None:
        raise ValueError(f"model.base_precision={precision!r} needs the {package} package, which is not installed "
                         f"(pip install 'zoo-recipes[lowp]', the extra with torchao and bitsandbytes; or pip install "
                         f"{package})")  # fmt: skip
    if not (cpu_ok or cuda):
        raise ValueError(f"model.base_precision={precision!r} ({package} through diffusers) runs on CUDA only and this "
                         "machine has no CUDA device; use 'int8' or 'fp8' (torchao, runs on the CPU too)")  # fmt: skip


def quantization_config(precision: str | None, components: Mapping[str, bool], dtype: str | None) -> Any:
    """diffusers' ``PipelineQuantizationConfig`` quantizing ``components`` (name -> is a transformers model), or None."""
    if precision in (None, "bf16") or not components:
        return None
    import diffusers
    import transformers

    compute = _torch_dtype(dtype) or _torch_dtype("bfloat16")
    mapping = {}
    for name, is_transformers in components.items():
        lib = transformers if is_transformers else diffusers
        if precision == "nf4":
            mapping[name] = lib.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_compute_dtype=compute)  # fmt: skip
        else:
            from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

            ao = Int8WeightOnlyConfig() if precision == "int8" else Float8WeightOnlyConfig()
            mapping[name] = lib.TorchAoConfig(quant_type=ao)
    return diffusers.PipelineQuantizationConfig(quant_mapping=mapping)


def pipeline_quantization(m: Mapping[str, Any], lora: bool, cached: bool, device: Any) -> tuple[Any, str | None]:
    """``model.base_precision`` of a pipeline folder: the quantization config of its denoiser (and of its text
    encoders, unless the text embeddings are cached: then they run once and are dropped), and the dtype to load
    in (``model.dtype``; bfloat16 for ``"bf16"``)."""
    precision = m.get("base_precision")
    check_base_precision(precision, m.get("dtype"), device.type == "cuda")
    if precision not in (None, "bf16") and not lora:
        raise ValueError(f"model.base_precision={precision!r} freezes a quantized base, but a full fine-tune "
                         "(policy.type='full', or no policy) trains every denoiser weight; set "
                         "policy=dict(type='lora_only') or drop model.base_precision")  # fmt: skip
    listed = {n: s[0] for n, s in read_pipeline_index(m["pretrained"]).items() if isinstance(s, list) and s[0]}
    parts = {n: False for n in DENOISERS if n in listed}
    if not cached:
        parts |= {n: True for n, lib in listed.items() if n.startswith("text_encoder") and lib == "transformers"}
    dtype = m.get("dtype") or ("bfloat16" if precision == "bf16" else None)
    return quantization_config(precision, parts, dtype), dtype


def group_offload(model: nn.Module, m: Mapping[str, Any], device: Any) -> None:
    """``model.offload=True``: diffusers' leaf-level group offloading of the frozen denoiser, turned on BEFORE the
    adapter is added. Each leaf module (a Linear, a norm) keeps its weights on the CPU and copies them to the GPU
    for its own forward; the engine's ``.to(device)`` then leaves the model in place (diffusers' ``to`` is a no-op
    on an offloaded model) and ``resident_trainable`` puts the adapter on the GPU.

    Why not block level: a group's hooks pin and move every tensor its modules hold when the forward runs. An
    adapter added after the hooks is missing from their tables (diffusers' ``KeyError`` on the first step, seen
    on an H200); added before, it is moved too: its gradients stay on the GPU while the tensors go back to stale
    CPU copies, so updates are lost. Leaf groups hold the base layers alone (peft wraps each one: the LoRA tensors
    are new leaves, outside every group). No CUDA stream: the prefetch order a stream needs is the first
    forward's, which gradient checkpointing's recomputation does not follow."""
    import torch

    offload = m.get("offload", False)
    if not isinstance(offload, bool):
        raise ValueError(f"model.offload must be True or False, got {offload!r}")
    if not offload:
        return
    if device.type != "cuda":
        raise ValueError("model.offload=True moves the denoiser's layers between the CPU and a CUDA device; this run is on "
                         "the CPU, where the whole denoiser already lives; remove model.offload")  # fmt: skip
    if m.get("base_precision") == "nf4":
        raise ValueError("model.offload=True with base_precision='nf4': bitsandbytes 4-bit weights are not moved by "
                         "group offloading; use 'int8' / 'fp8' or drop model.offload")  # fmt: skip
    onload = device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    offload_leaves(model, onload)


def offload_leaves(model: nn.Module, onload: Any) -> None:
    """Leaf-level group offloading to the CPU, synchronous (see ``group_offload``)."""
    import torch

    model.enable_group_offload(onload, torch.device("cpu"), offload_type="leaf_level", use_stream=False)


def resident_trainable(model: nn.Module, device: Any) -> nn.Module:
    """Every trainable tensor (the adapter added after ``offload_leaves``) on ``device``, where it stays."""
    for p in model.parameters():
        if p.requires_grad and p.device != device:
            p.data = p.data.to(device)
    return model


def load_pipeline(pretrained: str | Path, dtype: str | None = None, quantization: Any = None) -> Any:
    """The diffusers pipeline in a local folder (its class from ``model_index.json``), on the CPU;
    ``quantization``: a ``PipelineQuantizationConfig`` (see ``quantization_config``)."""
    import diffusers

    info = read_pipeline_index(pretrained)
    klass = getattr(diffusers, info.get("_class_name", ""), None)
    if klass is None:
        raise ValueError(f"model.pretrained={str(pretrained)!r}: diffusers {diffusers.__version__} has no pipeline "
                         f"class {info.get('_class_name')!r}")  # fmt: skip
    extra = {"quantization_config": quantization} if quantization is not None else {}
    try:
        return klass.from_pretrained(str(pretrained), torch_dtype=_torch_dtype(dtype), **extra)
    except OSError as e:  # diffusers' "Unable to load weights from checkpoint file ..." (a damaged .bin)
        raise ValueError(f"model.pretrained={str(pretrained)!r}: {e}; the file is damaged or incomplete, copy or "
                         "download it again") from None  # fmt: skip


def _load_denoiser(pretrained: str, preset: str | None, cls: str | None, dtype: str | None) -> nn.Module:
    import diffusers

    info = read_pipeline_index(pretrained)
    name = next((d for d in DENOISERS if isinstance(info.get(d), list) and info[d][0]), None)
    if name is None:
        raise ValueError(f"model.pretrained={pretrained!r}: the pipeline has no {' or '.join(DENOISERS)} component")
    found = info[name][1]
    expected = _resolve(preset, cls)[0] if (preset or cls) else found
    if expected != found:
        raise ValueError(f"model: preset/cls names a {expected} but {pretrained!r} holds a {found}; "
                         "drop model.preset / model.cls or fix model.pretrained")  # fmt: skip
    return getattr(diffusers, found).from_pretrained(pretrained, subfolder=name, torch_dtype=_torch_dtype(dtype))


@MODELS.register_module("diffusers")
def build_diffusers_model(
    preset: str | None = None,
    cls: str | None = None,
    config: Mapping[str, Any] | None = None,
    device: str | None = None,
    pretrained: str | None = None,
    dtype: str | None = None,
    base_precision: str | None = None,
    offload: bool = False,
) -> nn.Module:
    """A diffusers denoiser: ``pretrained`` (a pipeline folder), or random weights from ``preset`` / ``cls``.

    ``config`` overrides the preset's values (or the class defaults when no preset is given).
    With ``pretrained``, a ``preset`` or ``cls`` given must name the class the folder holds.
    ``base_precision`` / ``offload`` act where the diffusion task loads its pipeline (``pipeline_quantization``,
    ``group_offload``); here they are accepted on the meta device only (``tools/show_lr.py``: the groups do not
    depend on them) and are an error anywhere else, where nothing would quantize or offload.

    >>> model = build_diffusers_model("flux1-dev", device="meta")
    >>> len(model.single_transformer_blocks)
    38
    """
    import diffusers
    import torch

    if (base_precision is not None or offload) and device != "meta":
        raise ValueError("model.base_precision / model.offload act on the pipeline the diffusion task loads from "
                         "model.pretrained (task.type='diffusion'); this denoiser alone is not quantized or offloaded")  # fmt: skip
    if pretrained is not None:
        if config or device:
            raise ValueError("model: `config` and `device` apply to random weights; with `pretrained` remove them "
                             "(the folder's config.json is used; the engine moves the model to train.device)")  # fmt: skip
        return _load_denoiser(str(pretrained), preset, cls, dtype)
    cls_name, values = _resolve(preset, cls)
    klass = getattr(diffusers, cls_name, None)
    if klass is None:
        raise KeyError(f"model.cls: diffusers {diffusers.__version__} has no class {cls_name!r}; check the spelling")
    values = {**values, **dict(config or {})}
    with torch.device(device) if device else contextlib.nullcontext():
        model = klass(**values)
    return model.to(_torch_dtype(dtype)) if dtype else model


def _resolve(preset: str | None, cls: str | None) -> tuple[str, dict[str, Any]]:
    if preset is None:
        if cls is None:
            raise ValueError(f"model: give `preset` (one of {sorted(PRESETS)}) or `cls` (a diffusers class name)")
        return cls, {}
    if preset not in PRESETS:
        near = difflib.get_close_matches(preset, PRESETS, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise KeyError(f"model.preset: unknown diffusers preset {preset!r}.{hint} Known: {', '.join(sorted(PRESETS))}")
    preset_cls, values = PRESETS[preset]
    if cls is not None and cls != preset_cls:
        raise ValueError(f"model: preset {preset!r} is a {preset_cls}, but cls={cls!r}; drop `cls` or the preset")
    return preset_cls, dict(values)
