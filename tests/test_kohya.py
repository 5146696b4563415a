"""kohya sd-scripts' block LRs on the real diffusers U-Nets (full size, meta device).

kohya's sd-scripts is not on PyPI, so its rule is written here from its source (networks/lora.py
``get_block_index`` and ``get_block_lr_weight``, library/sdxl_model_util.py's diffusers -> SGM names,
sdxl_train.py's 23 ``--block_lr`` slots) and compared with the U-Net adapter's layer ids, module by module.
"""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch

from recipes.param_groups import build_param_groups, resolve_adapter
from recipes.train.models.diffusers import build_diffusers_model

_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")
KOHYA_TARGETS = ("Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D")  # with conv_dim set


@functools.cache
def unet(preset: str) -> torch.nn.Module:
    return build_diffusers_model(preset, device="meta")


def kohya_sd_index(module: str) -> int:
    """networks/lora.py ``get_block_index(lora_name, is_sdxl=False)`` (kohya's SD U-Net keeps diffusers' names)."""
    lora_name = "lora_unet_" + module.replace(".", "_")
    m = _UPDOWN.search(lora_name)
    if m:
        where, i, kind, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
        idx = 3 * i + (2 if kind in ("upsamplers", "downsamplers") else j)
        return 1 + idx if where == "down" else 12 + 1 + idx
    return 12 if "mid_block_" in lora_name else -1


def sgm_block(name: str) -> str:
    """library/sdxl_model_util.py: the SGM (kohya SDXL) name's leading block of a diffusers U-Net name."""
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.", name):
        return f"input_blocks.{3 * int(m.group(1)) + int(m.group(3)) + 1}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.", name):
        return f"input_blocks.{3 * (int(m.group(1)) + 1)}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.", name):
        return f"output_blocks.{3 * int(m.group(1)) + int(m.group(3))}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.", name):
        return f"output_blocks.{3 * int(m.group(1)) + 2}"
    if m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.", name):
        return f"middle_block.{1 if m.group(1) == 'attentions' else 2 * int(m.group(2))}"
    top = name.split(".")[0]
    return {"conv_in": "input_blocks.0", "time_embedding": "time_embed", "add_embedding": "label_emb",
            "conv_norm_out": "out", "conv_out": "out"}[top]  # fmt: skip


def kohya_sdxl_index(name: str) -> int:
    """``get_block_index(lora_name, is_sdxl=True)`` = sdxl_train.py's ``--block_lr`` slot, on SGM names."""
    sgm = "lora_unet_" + sgm_block(name).replace(".", "_") + "_"
    n = sgm[len("lora_unet_") :]
    if n.startswith(("time_embed_", "label_emb_")):
        return 0
    for prefix, base in (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13)):
        if n.startswith(prefix):
            return base + int(n.split("_")[2])
    return 22 if n.startswith("out_") else -1


def lora_modules(model) -> list[str]:
    """Every module kohya's LoRA (with ``conv_dim``) wraps: Linear / Conv2d inside its target classes."""
    out = []
    for name, mod in model.named_modules():
        if type(mod).__name__ in KOHYA_TARGETS:
            out += [
                f"{name}.{c}" for c, m in mod.named_modules() if c and isinstance(m, torch.nn.Linear | torch.nn.Conv2d)
            ]
    return out


@pytest.mark.parametrize("preset", ["sd15", "sdxl"])
def test_layer_ids_are_kohyas_block_index_on_every_lora_module(preset):
    model = unet(preset)
    mmap = resolve_adapter(model).describe(model)
    modules = lora_modules(model)
    assert len(modules) == (278 if preset == "sd15" else 788)  # Linear and Conv2d in kohya's target classes
    kohya = kohya_sd_index if preset == "sd15" else kohya_sdxl_index
    for m in modules:
        assert mmap.params[f"{m}.weight"].layer_id == kohya(m), m
    if preset == "sdxl":  # sdxl_train.py's --block_lr: every parameter, the 23 slots
        assert all(i.layer_id == kohya_sdxl_index(n) for n, i in mmap.params.items())
        assert mmap.max_layer_id + 1 == 23


def test_labels_are_kohyas_block_names():
    sd = resolve_adapter(unet("sd15")).describe(unet("sd15"))
    assert [sd.layer_label(i) for i in (0, 5, 11, 12, 13, 24, 25)] == [
        "IN00",
        "IN05",
        "IN11",
        "MID",
        "OUT00",
        "OUT11",
        "out",
    ]
    xl = resolve_adapter(unet("sdxl")).describe(unet("sdxl"))
    assert [xl.layer_label(i) for i in (0, 1, 9, 10, 11, 12, 13, 21, 22)] == [
        "emb", "IN00", "IN08", "MID0", "MID1", "MID2", "OUT00", "OUT08", "out"]  # fmt: skip
    # group names carry them (so the grid, CSV and TensorBoard columns read kohya's blocks, not stack indices)
    groups = build_param_groups(unet("sd15"), dict(type="layer_decay", lr=1.0, decay=0.9))
    where = {n: g["name"] for g in groups for n in g["param_names"]}
    assert where["down_blocks.1.attentions.1.proj_in.weight"].startswith("IN05.")
    assert where["mid_block.attentions.0.proj_in.weight"].startswith("MID.")
    assert where["up_blocks.0.resnets.0.conv1.weight"].startswith("OUT00.")


def kohya_weights(sdxl: bool, down, mid, up, zero_threshold=0.0) -> list[float]:
    """networks/lora.py ``get_block_lr_weight`` for lists (short ones padded with 1.0)."""
    n, n_mid = (9, 3) if sdxl else (12, 1)

    def fill(w, k):
        if w is None:
            return [1.0] * k
        w = list(w) + [1.0] * (k - len(w))
        return [x if x > zero_threshold else 0 for x in w]

    weights = fill(down, n) + fill(mid, n_mid) + fill(up, n)
    return [1.0, *weights, 1.0] if sdxl else weights


def _lr(groups) -> dict[str, float]:
    return {n: g["lr"] for g in groups for n in g["param_names"]}


@pytest.mark.parametrize("preset", ["sd15", "sdxl"])
def test_down_mid_up_lr_weight_as_kohya_applies_them(preset):
    sdxl = preset == "sdxl"
    down = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1][: 9 if sdxl else 12]
    mid = [2.0, 0.05, 3.0] if sdxl else [2.0]
    up = [1.5, 0.0, 0.02]  # short: padded with 1.0
    strategy = dict(type="kohya_blocks", lr=1e-4, down_lr_weight=down, mid_lr_weight=mid, up_lr_weight=up,
                    block_lr_zero_threshold=0.06)  # fmt: skip
    with pytest.warns(UserWarning, match="up_lr_weight: 3 of"):
        lr = _lr(build_param_groups(unet(preset), strategy))
    want = kohya_weights(sdxl, down, mid, up, zero_threshold=0.06)
    kohya = kohya_sdxl_index if sdxl else kohya_sd_index
    for m in lora_modules(unet(preset)):
        assert lr[f"{m}.weight"] == pytest.approx(1e-4 * want[kohya(m)], rel=1e-12), m


def test_kohya_presets_and_strings():
    n = 12
    got = _lr(build_param_groups(unet("sd15"), dict(type="kohya_blocks", lr=1.0, down_lr_weight="sine+0.5",
                                                    up_lr_weight="reverse_linear", mid_lr_weight="0.25")))  # fmt: skip
    sine = [math.sin(math.pi * (i / (n - 1)) / 2) + 0.5 for i in range(n)]  # kohya's "sine" with "+0.5"
    rev = [i / (n - 1) for i in reversed(range(n))]
    assert got["down_blocks.1.attentions.1.proj_in.weight"] == pytest.approx(sine[5])  # IN05
    assert got["up_blocks.3.attentions.2.proj_out.weight"] == pytest.approx(rev[11])  # OUT11
    assert got["mid_block.attentions.0.proj_in.weight"] == 0.25
    with pytest.warns(UserWarning, match="3 of 12 entries given; the rest are 1.0"):
        got = _lr(build_param_groups(unet("sd15"), dict(type="kohya_blocks", lr=1.0, down_lr_weight="1,,0.5")))
    assert got["down_blocks.0.resnets.0.conv1.weight"] == 0.0  # an empty entry is 0 (IN01)
    assert got["down_blocks.0.resnets.1.conv1.weight"] == 0.5


def test_sdxl_block_lr_gives_conv_in_and_each_mid_layer_its_own_lr():
    block_lr = [1e-6 * (i + 1) for i in range(23)]
    lr = _lr(build_param_groups(unet("sdxl"), dict(type="kohya_blocks", lr=1e-4, block_lr=block_lr)))
    assert lr["time_embedding.linear_1.weight"] == pytest.approx(1e-6)  # slot 0
    assert lr["conv_in.weight"] == pytest.approx(2e-6)  # slot 1: IN00
    assert lr["mid_block.resnets.0.conv1.weight"] == pytest.approx(11e-6)  # MID0
    assert lr["mid_block.attentions.0.proj_in.weight"] == pytest.approx(12e-6)  # MID1
    assert lr["mid_block.resnets.1.conv1.weight"] == pytest.approx(13e-6)  # MID2
    assert lr["conv_out.weight"] == pytest.approx(23e-6)  # slot 22: out
    # layer_decay's `scales` reads the same 23 slots
    scales = [b / 1e-4 for b in block_lr]
    lr2 = _lr(build_param_groups(unet("sdxl"), dict(type="layer_decay", lr=1e-4, scales=scales)))
    assert lr2["conv_in.weight"] == pytest.approx(2e-6) and lr2["mid_block.resnets.1.conv2.weight"] == pytest.approx(
        13e-6
    )


@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(block_lr=[1e-4] * 22), "block_lr has 22 entries but 'unet' has 23 blocks"),
        (dict(block_lr=[1e-4] * 23, up_lr_weight="cosine"), "not both"),
        (dict(down_lr_weight=[1.0] * 10), "10 entries but the model has 9"),
        (dict(mid_lr_weight="cosine"), "comma-separated numbers"),
        (dict(down_lr_weight="wave"), "kohya's presets"),
        ({}, "give down_lr_weight"),
    ],
)
def test_kohya_option_errors(opts, match):
    with pytest.raises(ValueError, match=match):
        build_param_groups(unet("sdxl"), dict(type="kohya_blocks", lr=1e-4, **opts))


def test_kohya_blocks_needs_kohya_block_names():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=8, depth=2, embed_dim=8, num_heads=2)
    with pytest.raises(ValueError, match="does not name kohya's IN / MID / OUT blocks"):
        build_param_groups(vit, dict(type="kohya_blocks", lr=1e-4, down_lr_weight="linear"))


def test_one_strategy_serves_two_models_and_keeps_nothing_of_either():
    """The per-block table is a function of the strategy's options and the model map, not stored state."""
    from recipes.param_groups import build_strategy

    spec = dict(type="kohya_blocks", lr=1.0, down_lr_weight="linear", mid_lr_weight="0.25")
    strategy = build_strategy(spec)
    before = dict(vars(strategy))
    sd = build_param_groups(unet("sd15"), strategy)
    with pytest.warns(UserWarning, match="mid_lr_weight: 1 of 3 entries"):  # pointing at this line
        xl = build_param_groups(unet("sdxl"), strategy)
    assert vars(strategy) == before
    assert _lr(sd) == _lr(build_param_groups(unet("sd15"), spec))  # built after the SDXL groups: still SD's
    sd_map, xl_map = sd.model_map, xl.model_map
    name = "down_blocks.1.attentions.1.proj_in.weight"  # IN05 on SD 1.5, IN05 on SDXL: other ramps
    assert strategy.lr_scale(sd_map.params[name], sd_map) == pytest.approx(5 / 11)
    assert strategy.lr_scale(xl_map.params[name], xl_map) == pytest.approx(5 / 8)
    assert type(strategy).__module__ == "zoo.unet"  # the core names no architecture
