"""component_depth (the per-component x depth recipe): depth factors, the per_layer_lr JSON block, scopes, bad input."""

from __future__ import annotations

import json
import math

import pytest
import timm

from recipes import build_param_groups
from recipes.strategies import depth_factor

SEED_BLOCK = json.loads("""{
    "enabled": true,
    "component_lr": {"self_attn": 0.0004, "cross_attn": 0.0002, "ffn": 0.0003, "norm": 0.00005},
    "depth_strategy": "linear",
    "min_depth_factor": 0.3,
    "peak_position": 0.5,
    "default_lr": 0.0003
}""")


def vit(depth=4):
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=depth, num_classes=3, embed_dim=8, num_heads=2
    )


def test_linear_matches_the_seed_table():
    # the recipe's table: Block 0 5 10 15 19 -> 1.00 0.82 0.63 0.45 0.30 (its linear row follows its formula)
    got = [round(depth_factor("linear", i, 20, 0.3), 2) for i in (0, 5, 10, 15, 19)]
    assert got == [1.0, 0.82, 0.63, 0.45, 0.3]


def test_cosine_follows_the_formula_not_the_rounded_table():
    # the recipe's table says 0.65 at block 10 of 20; its formula gives 0.621
    assert depth_factor("cosine", 10, 20, 0.3) == pytest.approx(0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * 10 / 19)))
    assert round(depth_factor("cosine", 10, 20, 0.3), 3) == 0.621


def test_inverted_u_peak_and_both_ends():
    for peak in (0.5, 0.4, 0.0, 1.0):
        f = [depth_factor("inverted_u", i, 11, 0.3, peak) for i in range(11)]
        assert max(f) == 1.0 and f[round(peak * 10)] == 1.0
        assert f[0] == pytest.approx(0.3 if peak > 0 else 1.0) and f[-1] == pytest.approx(0.3 if peak < 1 else 1.0)
    assert depth_factor("flat", 3, 10, 0.3) == 1.0 and depth_factor("linear", 0, 1, 0.3) == 1.0


@pytest.mark.filterwarnings("ignore:component_depth.component_lr")  # a ViT has no cross_attn
def test_seed_block_verbatim_on_a_real_vit():
    groups = build_param_groups(vit(4), dict(type="component_depth", weight_decay=0.01, **SEED_BLOCK))
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    f = [depth_factor("linear", i, 4, 0.3) for i in range(4)]
    for i in range(4):
        assert lr[f"blocks.{i}.attn.qkv.weight"] == pytest.approx(4e-4 * f[i], rel=1e-12)
        assert lr[f"blocks.{i}.mlp.fc1.weight"] == pytest.approx(3e-4 * f[i], rel=1e-12)
        assert lr[f"blocks.{i}.norm1.weight"] == pytest.approx(5e-5 * f[i], rel=1e-12)
    assert lr["head.weight"] == lr["cls_token"] == 3e-4  # no component_lr entry -> default_lr
    # the base LR (lr_scale 1.0) is default_lr, and every group's lr = default_lr * lr_scale
    assert all(g["lr"] == pytest.approx(3e-4 * g["lr_scale"], rel=1e-12) for g in groups)
    assert any(g["name"] == "blocks.00.self_attn.decay" for g in groups)


def test_disabled_block_means_one_flat_lr():
    block = dict(SEED_BLOCK, enabled=False)
    groups = build_param_groups(vit(2), dict(type="component_depth", lr=4e-4, **block))
    assert {g["lr"] for g in groups} == {4e-4}


def test_unknown_key_in_the_block_is_an_error():
    with pytest.raises(KeyError, match=r"unknown keys \['depth_stratgy'\]"):
        build_param_groups(vit(2), dict(type="component_depth", depth_stratgy="linear", component_lr={}))


@pytest.mark.parametrize(
    "opts,match",
    [
        (dict(min_depth_factor=1.5), r"min_depth_factor must lie in \[0, 1\]"),
        (dict(peak_position=-0.1), r"must be >= 0"),
        (dict(depth_strategy="exp"), "depth_strategy must be one of"),
        (dict(depth_scope="stack"), "depth_scope"),
        (dict(component_lr={"ffn": -1e-4}), ">= 0"),
    ],
)
def test_bad_options(opts, match):
    cfg = dict(type="component_depth", component_lr={"self_attn": 1e-4}) | opts
    with pytest.raises((ValueError, TypeError), match=match):
        build_param_groups(vit(2), cfg)


def test_unused_component_warns():
    with pytest.warns(UserWarning, match=r"\['cross_attn'\] match no component"):
        build_param_groups(vit(2), dict(type="component_depth", component_lr={"self_attn": 1e-4, "cross_attn": 1e-4}))


def test_lr_is_rejected_while_enabled_and_acts_when_disabled():
    """With enabled=True component_lr / default_lr give every LR, so an `lr` would be ignored: an error."""
    with pytest.raises(ValueError, match=r"`lr` \(123\) is not read with enabled=True.*drop `lr`"):
        build_param_groups(vit(2), dict(type="component_depth", lr=123, component_lr={"self_attn": 1e-4}))
    off = dict(type="component_depth", enabled=False, component_lr={"self_attn": 1e-4})
    assert {g["lr"] for g in build_param_groups(vit(2), dict(off, lr=123))} == {123}
    assert {g["lr"] for g in build_param_groups(vit(2), dict(off, lr=7))} == {7}


def test_shipped_component_depth_configs_set_no_unread_lr():
    from pathlib import Path

    from recipes.train.config import load_config

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.py")):
        s = load_config(path).get("strategy") or {}
        if s.get("type") == "component_depth" and s.get("enabled", True):
            assert "lr" not in s, path.name
