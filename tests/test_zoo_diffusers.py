"""The diffusers adapters on the real diffusers 0.42.1 classes: full-size trees on the meta device.

Coverage (every parameter has a layer id and a component, catch-alls hold exactly what they
declare), multi-stack depth, LoRA / DoRA / LoRA+, the per-component x depth example configs, a third-party adapter.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

import pytest
import torch

from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.registry import ADAPTERS
from recipes.report import format_lr_grid
from recipes.strategies import depth_factor
from recipes.train.config import load_config
from recipes.train.models.diffusers import PRESETS, build_diffusers_model
from recipes.train.registry import MODELS

pytest.importorskip("diffusers")
peft = pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[1]

# preset -> adapter, and the top-level modules left in each catch-all component (exactly)
E, H, M = "embed", "head", "modulation"
_FLUX2 = (
    "flux2",
    {
        E: {"context_embedder", "time_guidance_embed", "x_embedder"},
        H: {"norm_out", "proj_out"},
        M: {"double_stream_modulation_img", "double_stream_modulation_txt", "single_stream_modulation"},
    },
)
_SD3 = ("sd3", {E: {"context_embedder", "pos_embed", "time_text_embed"}, H: {"norm_out", "proj_out"}})
_WAN = ("wan", {E: {"condition_embedder", "patch_embedding"}, H: {"proj_out", "scale_shift_table"}})
_PIXART = (
    "pixart",
    {E: {"caption_projection", "pos_embed"}, H: {"proj_out", "scale_shift_table"}, M: {"adaln_single"}},
)
_SANA = (
    "sana",
    {E: {"caption_norm", "caption_projection", "patch_embed"}, H: {"proj_out", "scale_shift_table"}, M: {"time_embed"}},
)
_FLUX1 = ("flux", {E: {"context_embedder", "time_text_embed", "x_embedder"}, H: {"norm_out", "proj_out"}})
EXPECTED = {
    "flux1-dev": _FLUX1,
    "flux1-schnell": _FLUX1,
    "flux2-dev": _FLUX2,
    "flux2-klein-4b": _FLUX2,
    "flux2-klein-9b": _FLUX2,
    "sd15": ("unet", {E: {"conv_in", "time_embedding"}, H: {"conv_norm_out", "conv_out"}}),
    "sdxl": ("unet", {E: {"add_embedding", "time_embedding"}, H: {"conv_norm_out", "conv_out"}}),
    "sd3-medium": _SD3,
    "sd35-medium": _SD3,
    "sd35-large": _SD3,
    "wan21-t2v-14b": _WAN,
    "wan21-t2v-1.3b": _WAN,
    "wan21-i2v-14b": _WAN,
    "wan22-t2v-a14b": _WAN,
    "ltx-video": ("ltx_video", {E: {"caption_projection", "proj_in", "time_embed"}, H: {"proj_out", "scale_shift_table"}}),
    "ltx2": ("ltx2", {
        E: {"audio_caption_projection", "audio_proj_in", "audio_time_embed", "caption_projection", "proj_in", "time_embed"},
        H: {"audio_proj_out", "audio_scale_shift_table", "proj_out", "scale_shift_table"},
        M: {"av_cross_attn_audio_scale_shift", "av_cross_attn_audio_v2a_gate", "av_cross_attn_video_a2v_gate",
            "av_cross_attn_video_scale_shift"}}),
    "qwen-image": ("qwen_image", {E: {"img_in", "time_text_embed", "txt_in", "txt_norm"}, H: {"norm_out", "proj_out"}}),
    "zimage-turbo": ("zimage", {E: {"all_x_embedder", "cap_embedder", "cap_pad_token", "t_embedder", "x_pad_token"},
                                H: {"all_final_layer"}}),
    "zimage-omni": ("zimage", {E: {"all_x_embedder", "cap_embedder", "cap_pad_token", "t_embedder", "x_pad_token",
                                   "siglip_embedder", "siglip_pad_token"}, H: {"all_final_layer"}}),
    "chroma": ("chroma", {E: {"context_embedder", "x_embedder"}, H: {"proj_out"}, M: {"distilled_guidance_layer"}}),
    "hunyuan-video": ("hunyuan_video", {E: {"context_embedder", "time_text_embed", "x_embedder"}, H: {"norm_out", "proj_out"}}),
    "pixart-sigma": _PIXART,
    "pixart-alpha-1024": _PIXART,
    "sana-1600m": _SANA,
    "sana-600m": _SANA,
}  # fmt: skip
FAMILIES = sorted({a for a, _ in EXPECTED.values()})


@functools.cache
def meta_model(preset: str) -> torch.nn.Module:
    return build_diffusers_model(preset, device="meta")


def test_every_preset_is_checked():
    assert set(EXPECTED) == set(PRESETS)


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_full_size_coverage(preset):
    model = meta_model(preset)
    adapter_name, catch = EXPECTED[preset]
    adp = resolve_adapter(model)  # auto: exactly one adapter claims it
    assert adp.name == adapter_name
    mmap = adp.describe(model)
    assert mmap.unmatched == []
    assert len(mmap.params) == sum(1 for _ in model.parameters())
    left: dict[str, set[str]] = {}
    for name, info in mmap.params.items():
        assert 0 <= info.layer_id <= mmap.num_layers + 1
        if info.component in adp.catch_all:
            assert info.stack is None, f"{name}: a block parameter in a catch-all"
            left.setdefault(info.component, set()).add(name.split(".")[0])
    assert left == catch


def test_adapters_do_not_import_diffusers_at_import_time():
    for family in FAMILIES:
        src = Path(sys.modules[ADAPTERS.get(family).__module__].__file__).read_text()
        assert not re.search(r"^\s*(?:import|from) diffusers", src, re.M), family


def test_auto_rejects_an_unknown_model():
    with pytest.raises(ValueError, match="no registered adapter recognises"):
        resolve_adapter(torch.nn.Linear(2, 2))


def test_unet_index_is_kohyas_slots():
    adp = resolve_adapter(meta_model("sd15"))
    mmap = adp.describe(meta_model("sd15"))
    ids = {n.rsplit(".", 1)[0]: i.layer_id for n, i in mmap.params.items()}
    assert (ids["conv_in"], ids["down_blocks.0.resnets.0.conv1"], ids["down_blocks.0.downsamplers.0.conv"]) == (0, 1, 3)
    assert (ids["down_blocks.3.resnets.1.conv1"], ids["mid_block.attentions.0.proj_in"]) == (11, 12)  # IN11, MID
    assert (ids["up_blocks.0.resnets.0.conv1"], ids["up_blocks.3.attentions.2.proj_out"], ids["conv_out"]) == (
        13,
        24,
        25,
    )
    assert mmap.num_layers + 1 == 25  # ids 0..24 = kohya's 25 block weights, 25 = out
    sdxl = adp.describe(meta_model("sdxl"))
    assert sdxl.num_layers == 21  # ids 0..22 = kohya's 23 block_lr slots: see zoo/unet.py
    with pytest.raises(ValueError, match=r"without the model's geometry; use describe\(model\)"):
        ADAPTERS.get("unet")().stack_of("mid_block.resnets.0.conv1.weight")
    unet = sys.modules[ADAPTERS.get("unet").__module__]
    names = list(mmap.params)
    placed = ADAPTERS.get("unet")(unet.unet_geometry(names))  # per-name queries: the geometry as an argument
    assert placed.stack_of("mid_block.resnets.0.conv1.weight") == ("unet", 11)  # slot 11: layer id 12, MID
    assert ADAPTERS.get("unet")().describe(meta_model("sd15")).params == mmap.params  # nothing kept between calls


def _lr_of(groups, name):
    lrs = {g["lr"] for g in groups if name in g["param_names"]}
    assert len(lrs) == 1
    return lrs.pop()


def test_flux_depth_per_stack_restarts_and_global_counts_on():
    model = meta_model("flux1-dev")
    base = dict(type="component_depth", component_lr={"self_attn": 1.0, "ffn": 0.5}, default_lr=0.25)
    per = build_param_groups(model, dict(base, depth_scope="per_stack"))
    glob = build_param_groups(model, dict(base, depth_scope="global"))
    first_single = "single_transformer_blocks.0.attn.to_q.weight"
    assert _lr_of(per, "transformer_blocks.0.attn.to_q.weight") == 1.0
    assert _lr_of(per, "transformer_blocks.18.attn.to_q.weight") == pytest.approx(0.3)
    assert _lr_of(per, first_single) == 1.0  # restarts
    assert _lr_of(per, "single_transformer_blocks.37.proj_mlp.weight") == pytest.approx(0.5 * 0.3)
    assert _lr_of(glob, first_single) == pytest.approx(depth_factor("linear", 19, 57, 0.3))
    assert _lr_of(glob, "single_transformer_blocks.37.attn.to_q.weight") == pytest.approx(0.3)
    assert _lr_of(glob, "x_embedder.weight") == 0.25  # catch-alls get default_lr


def test_zimage_three_stacks_restart():
    groups = build_param_groups(
        meta_model("zimage-turbo"), dict(type="component_depth", component_lr={"self_attn": 1.0})
    )
    for stack in ("noise_refiner", "context_refiner", "layers"):
        assert _lr_of(groups, f"{stack}.0.attention.to_q.weight") == 1.0
        assert _lr_of(groups, f"{stack}.1.attention.to_q.weight") < 1.0


def _inject_lora(model, targets, rank=4, use_dora=False):
    """Minimal stand-in for the trainable-policy engine: peft LoRA, every other weight frozen."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, use_dora=use_dora)
    with torch.device(next(model.parameters()).device):
        inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return model


def _block_linears(model, adp) -> list[str]:
    """Every nn.Linear inside a block (the "LoRA on every linear layer" target list)."""
    params = adp.describe(model).params
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and params[n + ".weight"].stack]


@pytest.mark.parametrize("preset", ["flux1-dev", "flux2-klein-4b", "sd15", "sd35-medium", "wan21-i2v-14b", "ltx-video",
                                    "ltx2", "qwen-image", "zimage-turbo", "chroma", "hunyuan-video", "pixart-sigma", "sana-600m"])  # fmt: skip
def test_lora_takes_the_wrapped_modules_place(preset):
    model = build_diffusers_model(preset, device="meta")  # a fresh tree: peft modifies it
    adp = resolve_adapter(model)
    base = adp.describe(model)
    _inject_lora(model, _block_linears(model, adp))
    strategy = dict(
        type="component_depth", component_lr={"self_attn": 4.0, "cross_attn": 2.0, "ffn": 1.0}, loraplus_ratio=16
    )
    groups = build_param_groups(model, dict(strategy, default_lr=1.0))
    names = [n for g in groups for n in g["param_names"]]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(names) == sorted(trainable) and len(names) == len(set(names))  # frozen left out, each once
    lora = resolve_adapter(model).describe(model)
    for n, info in base.params.items():
        if n in lora.params:
            assert (lora.params[n].layer_id, lora.params[n].component) == (info.layer_id, info.component)
    for n in trainable:
        if ".lora_A." in n:
            b = n.replace(".lora_A.", ".lora_B.")
            assert _lr_of(groups, b) == pytest.approx(16 * _lr_of(groups, n))


def test_tiny_flux_lora_dora_and_loraplus_compose_with_layer_decay():
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel(num_layers=2, num_single_layers=2, attention_head_dim=8, num_attention_heads=2,
                                   joint_attention_dim=16, pooled_projection_dim=8, in_channels=4, axes_dims_rope=(2, 2, 4))  # fmt: skip
    _inject_lora(model, ["to_q", "to_k", "to_v", "proj_mlp", "add_q_proj"], use_dora=True)
    mag = "single_transformer_blocks.1.attn.to_q.lora_magnitude_vector.default.weight"
    assert mag in dict(model.named_parameters())
    mmap = resolve_adapter(model).describe(model)
    info = mmap.params["single_transformer_blocks.1.attn.to_q.weight"]
    assert (info.layer_id, info.component, info.stack_index) == (4, "self_attn", 1)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, loraplus_ratio=8))
    # 4 blocks: layer id 4 -> 0.5 ** (5 - 4); B matrices x 8; A and the DoRA magnitude x 1
    assert _lr_of(groups, "single_transformer_blocks.1.attn.to_q.lora_A.default.weight") == 0.5
    assert _lr_of(groups, "single_transformer_blocks.1.attn.to_q.lora_B.default.weight") == 4.0
    assert _lr_of(groups, mag) == 0.5
    assert _lr_of(groups, "transformer_blocks.0.attn.add_q_proj.lora_B.default.weight") == 8 * 0.5**4
    cd = build_param_groups(model, dict(type="component_depth", component_lr={"cross_attn": 0.5}, default_lr=1.0,
                                        loraplus_ratio=8, depth_strategy="flat"))  # fmt: skip
    assert _lr_of(cd, "transformer_blocks.1.attn.add_q_proj.lora_B.default.weight") == 4.0


SEED_CONFIGS = sorted((ROOT / "configs").glob("diffusion/*.py"))
#: configs whose LoRA (``policy``) the diffusion task adds: full size, built on the meta device as show_lr does
TASK_LORA = {p.stem for p in SEED_CONFIGS if load_config(p).get("task")}


def _apply_policy(model, policy):
    from recipes.policies import apply_policy

    return apply_policy(model, policy)


def _grid_line(grid: str, groups, param: str) -> str:
    """The printed grid line of the group holding ``param``."""
    name = next(g["name"] for g in groups if param in g["param_names"])
    return next(line for line in grid.splitlines() if line.split()[:1] == [name])


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in TASK_LORA else p for p in SEED_CONFIGS],
    ids=[p.stem for p in SEED_CONFIGS],
)
def test_diffusion_config_grid(path):
    """The shallowest and deepest trained block of the first stack print component_lr x depth factor."""
    cfg = load_config(path)
    assert (
        path.read_text().startswith("#")
        and f"python tools/show_lr.py configs/diffusion/{path.name}" in path.read_text()
    )
    if path.stem in TASK_LORA:  # the task adds the LoRA: the run's own build path, without weights or data
        from recipes.train.build import prepare_run

        cfg.merge_from_dict({"model.device": "meta", "model.pretrained": None})
        plan = prepare_run(cfg, data=False)
        model, groups = plan.model, plan.groups
    else:
        model = MODELS.build(cfg.model)
        if cfg.get("policy"):
            _apply_policy(model, cfg.policy)
        groups = build_param_groups(model, cfg.strategy, adapter=cfg.adapter)
    grid = format_lr_grid(groups, model, title=path.stem)
    assert "coverage: " in grid and f"[{path.stem}] groups=" in grid
    r, mmap = cfg.strategy, resolve_adapter(model).describe(model)
    stack, n = next(iter(mmap.stack_sizes.items()))
    comp = "self_attn" if "self_attn" in r["component_lr"] else "ffn"
    trained = sorted(
        (info.stack_index, full)
        for full, p in model.named_parameters()
        if p.requires_grad and (info := mmap.params.get(re.sub(r"\.(?:lora_\w+\.default|base_layer)", "", full)))
        and info.stack == stack and info.component == comp
    )  # fmt: skip
    for idx, full in (trained[0], trained[-1]):
        factor = depth_factor(r["depth_strategy"], idx, n, r["min_depth_factor"], r.get("peak_position", 0.5))
        lr = float(re.search(r"lr=(\S+)", _grid_line(grid, groups, full)).group(1))
        assert lr == pytest.approx(r["component_lr"][comp] * factor, rel=1e-5), (full, idx)
    if r["depth_strategy"] == "linear" and trained[-1][0] == n - 1:  # deepest block: component_lr x min factor
        assert _lr_of(groups, trained[-1][1]) == pytest.approx(r["component_lr"][comp] * r["min_depth_factor"])
    if trained[0][0] == 0 and r["depth_strategy"] != "inverted_u":  # first block: component_lr exactly
        assert _lr_of(groups, trained[0][1]) == pytest.approx(r["component_lr"][comp], rel=1e-12)


def test_third_party_adapter_through_custom_imports(registries):
    try:
        cfg = load_config(ROOT / "tests" / "third_party_config.py")  # imports tests.third_party_adapter
        model = MODELS.build(cfg.model)
        groups = build_param_groups(model, cfg.strategy, adapter=cfg.adapter)
        assert _lr_of(groups, "layers.0.attn.weight") == 4e-4
        assert _lr_of(groups, "layers.2.mlp.weight") == pytest.approx(2e-4 * 0.5)
        assert _lr_of(groups, "out.weight") == 1e-4
    finally:  # the registries fixture drops its entries; the module goes too, so a rerun registers again
        sys.modules.pop("tests.third_party_adapter", None)


def test_builder_errors_say_what_to_do():
    with pytest.raises(KeyError, match="Did you mean 'flux1-dev'"):
        build_diffusers_model("flux1-deb", device="meta")
    with pytest.raises(ValueError, match="give `preset`"):
        build_diffusers_model()
    with pytest.raises(ValueError, match="drop `cls` or the preset"):
        build_diffusers_model("sd15", cls="FluxTransformer2DModel")
