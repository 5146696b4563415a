"""The text encoders' own layers in the LR grid (``policy.text_encoder`` on SD 1.5 / SDXL, zoo/unet.py): each encoder
is a tower of the U-Net's map with its own layer ids, ``strategy.tower_depth`` puts the strategy's depth inside it, and
without it every LR is what it was (one LR per encoder: kohya's ``--text_encoder_lr``).

Real upstream classes: a tiny SDXL-layout ``UNet2DConditionModel`` with tiny ``CLIPTextModel`` /
``CLIPTextModelWithProjection`` encoders of 3 and 4 layers (fast), and the releases' sizes on the meta device through
``tools/show_lr.py``'s path (slow).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

from recipes.param_groups import build_param_groups
from recipes.report import lr_grid, param_table
from recipes.strategies import depth_factor
from recipes.train.diffusion.text_lora import UNREACHED_LAYERS, attach_text_encoders, text_encoder_settings
from zoo.unet import UNet

LAYERS = {"text_encoder": 3, "text_encoder_2": 4}
TE_LR = {"text_encoder": 1e-5, "text_encoder_2": 3e-5}
DEPTH = dict(type="component_depth", component_lr={"self_attn": 1e-4, "cross_attn": 4e-5, **TE_LR},
             depth_strategy="linear", min_depth_factor=0.4, default_lr=2e-4)  # fmt: skip
UNET_DEPTH = dict(DEPTH, component_lr={"self_attn": 1e-4, "cross_attn": 4e-5})  # the same for the U-Net alone


def _unet(sdxl=True):
    """A tiny U-Net of SDXL's layout (``add_embedding``: kohya's 23-slot numbering) or SD 1.5's."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    extra = dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=6 * 8 + 16) if sdxl else {}  # fmt: skip
    return UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, norm_num_groups=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, **extra)  # fmt: skip


def _encoders():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def config(n):
        return CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=n,
                              num_attention_heads=2, max_position_embeddings=16, projection_dim=16,
                              bos_token_id=0, eos_token_id=1, pad_token_id=1)  # fmt: skip

    return type("Pipe", (), {"text_encoder": CLIPTextModel(config(LAYERS["text_encoder"])),
                             "text_encoder_2": CLIPTextModelWithProjection(config(LAYERS["text_encoder_2"]))})  # fmt: skip


def _lora_unet(sdxl=True):
    """The U-Net with LoRA on its attention, as the denoiser of a LoRA run (the base frozen)."""
    from peft import LoraConfig

    unet = _unet(sdxl).requires_grad_(False)
    unet.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    return unet


SETTINGS = dict(r=2, alpha=2, kind="lora", dora=False)


@pytest.fixture(scope="module")
def models():
    """(the LoRA U-Net alone, the same with both encoders' LoRA attached as training attaches them)."""
    bare = _lora_unet()
    return bare, attach_text_encoders(copy.deepcopy(bare), _encoders(), "sdxl", text_encoder_settings(True, SETTINGS))


def _lrs(groups, prefix=None):
    """{parameter name: lr} of every grouped parameter (those under ``prefix`` only, when given)."""
    return {n: g["lr"] for g in groups for n in g["param_names"] if prefix is None or n.startswith(prefix + ".")}


def _unet_part(groups):
    """The U-Net's groups as (name, lr, wd, parameter names), in order: what adding the encoders must not move."""
    return [(g["name"], g["lr"], g["weight_decay"], g["param_names"]) for g in groups
            if not g["param_names"][0].startswith("text_encoder")]  # fmt: skip


def test_each_encoder_is_a_tower_with_its_own_layer_ids_and_the_unets_ids_stay(models):
    bare, model = models
    mmap, alone = UNet().describe(model), UNet().describe(bare)
    assert mmap.towers == LAYERS and not alone.towers and not mmap.unmatched
    assert {n: i for n, i in mmap.params.items() if i.tower is None} == alone.params  # kohya's ids, components
    assert mmap.labels == alone.labels and mmap.stack_sizes == alone.stack_sizes
    for name, n in LAYERS.items():
        infos = {k: i for k, i in mmap.params.items() if k.startswith(name + ".")}
        assert {i.component for i in infos.values()} == {name} and {i.tower for i in infos.values()} == {name}
        for key, info in infos.items():
            block = re.search(r"\.encoder\.layers\.(\d+)\.", key)
            want = int(block.group(1)) + 1 if block else 0 if ".embeddings." in key else n + 1
            assert info.layer_id == want, key
        assert {mmap.param_label(i) for i in infos.values()} == {
            f"{name}.embed",
            *(f"{name}.{k:02d}" for k in range(n)),
            f"{name}.head",
        }


def test_without_tower_depth_each_encoder_keeps_its_one_lr_and_the_unets_groups_stay(models):
    bare, model = models
    groups = build_param_groups(model, DEPTH, UNet())
    for name, lr in TE_LR.items():
        assert sorted(set(_lrs(groups, name).values())) == pytest.approx(
            [lr]
        )  # kohya's --text_encoder_lr: the whole encoder
    assert _unet_part(groups) == _unet_part(build_param_groups(bare, UNET_DEPTH, UNet()))
    tower_groups = [g for g in groups if g["param_names"][0].startswith("text_encoder")]
    assert [g["name"] for g in tower_groups] == ["text_encoder.no_decay", "text_encoder_2.no_decay"]


def test_tower_depth_gives_each_encoder_layer_its_own_lr_by_the_strategys_depth(models):
    bare, model = models
    groups = build_param_groups(model, dict(DEPTH, tower_depth=True), UNet())
    mmap = groups.model_map
    for name, lr in TE_LR.items():
        n = LAYERS[name]
        trained = n - UNREACHED_LAYERS.get(("sdxl", name), 0)  # SDXL reads text_encoder's penultimate layer
        by_layer = {}
        for param, got in _lrs(groups, name).items():
            layer = int(re.search(r"\.encoder\.layers\.(\d+)\.", param).group(1))
            by_layer.setdefault(layer, set()).add(got)
        assert sorted(by_layer) == list(range(trained))
        for layer, got in by_layer.items():
            assert sorted(got) == pytest.approx([lr * depth_factor("linear", layer, n, 0.4)]), (name, layer)
        assert len({min(v) for v in by_layer.values()}) == trained  # one LR per layer: a row each in the grid
        names = {g["name"] for g in groups if g["param_names"][0].startswith(name + ".")}
        assert {f"{name}.{k:02d}.no_decay" for k in range(1, trained)} <= names
    assert _unet_part(groups) == _unet_part(build_param_groups(bare, UNET_DEPTH, UNet()))
    panels = lr_grid(groups, mmap)["panels"]
    assert panels["text_encoder_2"]["columns"] == [f"text_encoder_2.{k:02d}" for k in range(4)]
    rows = {r["name"]: r["layer"] for r in param_table(groups, model)}
    assert rows["text_encoder.encoder.layers.1.self_attn.q_proj.lora_A.default.weight"] == "text_encoder.01"


def test_layer_decay_with_tower_depth_decays_inside_each_encoder(models):
    _, model = models
    strategy = dict(type="layer_decay", lr=1e-4, decay=0.5, component_lr=TE_LR)
    flat = _lrs(build_param_groups(model, strategy, UNet()), "text_encoder_2")
    decayed = _lrs(build_param_groups(model, dict(strategy, tower_depth=True), UNet()), "text_encoder_2")
    n = LAYERS["text_encoder_2"]
    for param, lr in decayed.items():
        layer_id = int(re.search(r"\.encoder\.layers\.(\d+)\.", param).group(1)) + 1
        assert lr == pytest.approx(3e-5 * 0.5 ** (n + 1 - layer_id)), param
    unet_ids = UNet().describe(model).max_layer_id - 1  # without it: layer 0 of the U-Net, as before
    assert sorted(set(flat.values())) == pytest.approx([3e-5 * 0.5 ** (unet_ids + 1)])


def test_sd15_encoder_trains_every_layer_at_its_depth_and_the_unets_ids_stay():
    bare = _lora_unet(sdxl=False)
    encoder = type("Pipe", (), {"text_encoder": _encoders().text_encoder})
    model = attach_text_encoders(copy.deepcopy(bare), encoder, "sd15", text_encoder_settings(True, SETTINGS))
    mmap, alone = UNet().describe(model), UNet().describe(bare)
    assert mmap.towers == {"text_encoder": 3} and mmap.labels == alone.labels and "IN00" in mmap.labels.values()
    assert {n: i for n, i in mmap.params.items() if i.tower is None} == alone.params
    lrs = {k: v for k, v in DEPTH["component_lr"].items() if k != "text_encoder_2"}  # SD 1.5 has one encoder
    groups = build_param_groups(model, dict(DEPTH, component_lr=lrs, tower_depth=True), UNet())
    got = [(int(re.search(r"\.layers\.(\d+)\.", n).group(1)), lr) for n, lr in _lrs(groups, "text_encoder").items()]
    assert {layer for layer, _ in got} == {0, 1, 2}  # SD 1.5 reads the last layer: every one trains
    assert [lr for _, lr in got] == pytest.approx([1e-5 * depth_factor("linear", layer, 3, 0.4) for layer, _ in got])
    assert _unet_part(groups) == _unet_part(build_param_groups(bare, UNET_DEPTH, UNet()))


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        (dict(type="flat", lr=1e-4, tower_depth=True), "Flat has no depth mechanism"),
        (dict(type="layer_decay", lr=1e-4, scales=[1.0] * 3, tower_depth=True), "give `decay` instead"),
        (dict(type="component_depth", lr=1e-4, enabled=False, tower_depth=True), "enabled=False"),
        (dict(type="component_depth", component_lr={}, tower_depth="yes"), "expected True or False"),
    ],
)
def test_tower_depth_that_cannot_act_is_an_error(strategy, message):
    from recipes.param_groups import build_strategy

    with pytest.raises((TypeError, ValueError), match=re.escape(message)):
        build_strategy(strategy)


def test_tower_depth_on_a_model_without_towers_is_an_error(models):
    bare, _ = models
    with pytest.raises(ValueError, match=r"strategy.tower_depth=True: the model \('unet'\) has no tower"):
        build_param_groups(bare, dict(UNET_DEPTH, tower_depth=True), UNet())


# ------------------------------------------------------------------- the releases' sizes, as tools/show_lr.py draws them
def _plan(*options):
    from recipes.train.config import load_config
    from tests.test_diffusion_task import ROOT
    from tools.show_lr import on_meta_without_weights, plan_for

    cfg = load_config(ROOT / "configs" / "diffusion" / "sdxl_lora_te.py", ["model.device=meta", *options])
    on_meta_without_weights(cfg)
    return plan_for(cfg, 100)


@pytest.mark.slow  # builds full-size SDXL (3.4B parameters) and both CLIP encoders on the meta device three times
def test_sdxl_release_encoders_have_a_row_per_layer_and_leave_the_unet_alone():
    from recipes.train.diffusion.text_lora import CLIP_BIG_G, CLIP_L

    release = {"text_encoder": CLIP_L["num_hidden_layers"], "text_encoder_2": CLIP_BIG_G["num_hidden_layers"]}
    plain, deep = _plan(), _plan("strategy.tower_depth=True")
    with pytest.warns(UserWarning, match=r"\['text_encoder', 'text_encoder_2'\] match no component"):
        alone = _plan("policy.text_encoder=None")  # the U-Net alone: the encoders' LRs have nothing to act on
    assert deep.groups.model_map.towers == release
    trained = {n: k - UNREACHED_LAYERS.get(("sdxl", n), 0) for n, k in release.items()}  # 11 + 32
    for name, lr in (("text_encoder", 4e-5), ("text_encoder_2", 4e-5)):
        rows = {g["name"] for g in deep.groups if g["param_names"][0].startswith(name + ".")}
        layers = {layer for g in deep.groups for p in g["param_names"] if p.startswith(name + ".")
                  for layer in re.findall(r"\.encoder\.layers\.(\d+)\.", p)}  # fmt: skip
        assert len(layers) == trained[name] and len(rows) >= trained[name] - 1  # layer 0 of both share 4e-5
        assert sorted(set(_lrs(plain.groups, name).values())) == pytest.approx([lr])
    assert _unet_part(plain.groups) == _unet_part(alone.groups) == _unet_part(deep.groups)
