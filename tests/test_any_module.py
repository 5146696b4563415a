"""Any nn.Module: ``flat`` and LoRA+ without an adapter, a clear error for depth, and ``prefix`` for a
backbone inside a bigger model (mmdet / mmpretrain layout)."""

from __future__ import annotations

import pytest
import timm
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from recipes.param_groups import build_param_groups


class Detector(nn.Module):
    """A backbone under ``backbone.`` (mmdet / mmpretrain), a neck and a head of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _vit()
        self.neck = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16))
        self.bbox_head = nn.Linear(16, 4)


def _vit():
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=16, depth=3, num_classes=0, embed_dim=16, num_heads=2
    )


def _plain():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))


def _by_name(groups):
    return {n: (g["lr"], g["weight_decay"], g["name"]) for g in groups for n in g["param_names"]}


def test_flat_on_a_model_no_adapter_knows():
    groups = build_param_groups(_plain(), dict(type="flat", lr=1e-3, weight_decay=0.05, lr_norm=1e-4))
    got = _by_name(groups)
    assert got["0.weight"][:2] == (1e-3, 0.05) and got["0.bias"][:2] == (1e-3, 0.0)
    assert got["1.weight"][:2] == (1e-4, 0.0)  # BatchNorm2d: lr_norm, no decay
    assert got["3.weight"][:2] == (1e-3, 0.05)
    assert {g["name"] for g in groups} == {"model.other.decay", "model.other.no_decay", "model.norm.no_decay"}


def test_loraplus_on_a_peft_model_no_adapter_knows():
    model = get_peft_model(_plain(), LoraConfig(r=2, target_modules=["3"], modules_to_save=["1"]))
    got = _by_name(build_param_groups(model, dict(type="flat", lr=1e-3, loraplus_ratio=16)))
    assert got["base_model.model.3.lora_B.default.weight"][0] == 16e-3
    assert got["base_model.model.3.lora_A.default.weight"][0] == 1e-3


@pytest.mark.parametrize(
    "strategy",
    [
        dict(type="layer_decay", lr=1e-3, decay=0.75),
        dict(type="component_depth", component_lr={"ffn": 1e-4}),
    ],
)
def test_depth_without_an_adapter_says_how_to_give_one(strategy):
    with pytest.raises(ValueError, match=r"needs the model's depth.*adapter=<name>.*prefix='backbone\.'.*type='flat'"):
        build_param_groups(_plain(), strategy)


@pytest.mark.parametrize("prefix", ["backbone.", "backbone"])
def test_a_headless_backbone_under_a_prefix_follows_mmpretrains_rule(prefix):
    """Alone, a headless timm ViT follows timm's rule (its last block and final norm at lr x 1.0). Under a
    prefix it sits one level deeper, as mmpretrain's LearningRateDecayOptimWrapperConstructor has it: the
    last block at lr x decay, the final norm with the rest of the model (neck, head) at lr."""
    torch.manual_seed(0)
    det = Detector()
    recipe = dict(type="layer_decay", lr=1e-3, decay=0.65, weight_decay=0.05)
    alone = _by_name(build_param_groups(det.backbone, recipe))
    inside = _by_name(build_param_groups(det, dict(recipe, prefix=prefix)))
    assert set(inside) == {n for n, _ in det.named_parameters()}
    for n, (lr, wd, _) in alone.items():
        want = 1e-3 if n.startswith("norm.") else lr * 0.65
        assert inside[f"backbone.{n}"][:2] == pytest.approx((want, wd), rel=1e-12), n
    assert alone["blocks.2.attn.qkv.weight"][0] == 1e-3  # timm's headless rule
    assert inside["backbone.blocks.2.attn.qkv.weight"][0] == pytest.approx(1e-3 * 0.65)
    assert inside["backbone.blocks.2.attn.qkv.weight"][2] == "blocks.02.decay"  # its own group, named
    assert inside["bbox_head.weight"][:2] == (1e-3, 0.05) and inside["bbox_head.bias"][:2] == (1e-3, 0.0)
    assert inside["neck.1.weight"][:2] == (1e-3, 0.0)  # the neck's LayerNorm: no decay, head LR
    other = _by_name(build_param_groups(det, dict(recipe, prefix=prefix, decay=0.5)))
    assert other["backbone.blocks.0.attn.qkv.weight"][0] == 1e-3 * 0.5**3  # the option acts


def test_prefix_inside_a_wrapper_and_with_peft():
    outer = nn.Module()
    outer.model = Detector()
    recipe = dict(type="layer_decay", lr=1.0, decay=0.5)
    alone = _by_name(build_param_groups(_vit(), recipe))
    got = _by_name(build_param_groups(outer, dict(recipe, prefix="model.backbone.")))
    assert got["model.backbone.blocks.0.attn.qkv.weight"][0] == alone["blocks.0.attn.qkv.weight"][0] * 0.5
    assert got["model.bbox_head.weight"][0] == 1.0
    peft_model = get_peft_model(Detector(), LoraConfig(r=2, target_modules=["qkv", "bbox_head"]))
    got = _by_name(build_param_groups(peft_model, dict(recipe, prefix="backbone.", loraplus_ratio=4)))
    assert (
        got["base_model.model.backbone.blocks.0.attn.qkv.lora_B.default.weight"][0] == 0.5**3 * 4
    )  # 3 blocks, the head one past the last
    assert got["base_model.model.bbox_head.lora_B.default.weight"][0] == 4.0


def test_prefix_errors():
    with pytest.raises(ValueError, match=r"no submodule 'encoder' \(top level: \['backbone', 'bbox_head', 'neck'\]\)"):
        build_param_groups(Detector(), dict(type="flat", lr=1.0, prefix="encoder."))
    with pytest.raises(ValueError, match="needs the model's depth"):  # a prefix whose module no adapter knows
        build_param_groups(Detector(), dict(type="layer_decay", lr=1.0, decay=0.5, prefix="neck."))
    flat = _by_name(build_param_groups(Detector(), dict(type="flat", lr=1.0, prefix="neck.")))
    assert set(flat) == {n for n, _ in Detector().named_parameters()}
