"""layer_decay: exact tables, parity with timm on real ViTs, coverage, frozen and tied parameters."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.optim import param_groups_layer_decay

from recipes import build_param_groups, format_lr_grid

TIMM_VITS = [
    "vit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "vit_giant_patch14_dinov2",
    "eva02_tiny_patch14_224",
    "beit_base_patch16_224",
    "vit_base_patch16_siglip_224",
    "vit_medium_patch16_rope_reg1_gap_256",
    "vit_base_patch16_clip_224",
]


def meta_model(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, num_classes=10, **kw)


def per_param(groups) -> dict[int, tuple[float, float]]:
    return {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


@pytest.mark.parametrize("name", TIMM_VITS)
@pytest.mark.parametrize("decay,wd", [(0.75, 0.05), (0.65, 0.0)])
def test_timm_parity(name, decay, wd):
    """Per parameter, lr_scale and weight decay equal timm.optim.param_groups_layer_decay's."""
    model = meta_model(name)
    ours = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=decay, weight_decay=wd))
    theirs = param_groups_layer_decay(
        model, weight_decay=wd, no_weight_decay_list=model.no_weight_decay(), layer_decay=decay
    )
    names = {id(p): n for n, p in model.named_parameters()}
    a, b = per_param(ours), per_param(theirs)
    assert a.keys() == b.keys()
    bad = {names[k]: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert not bad, list(bad.items())[:5]
    assert len(ours) <= len(theirs)


def tiny_vit(depth: int = 2, **kw) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=depth, num_classes=3, embed_dim=8, num_heads=2, **kw
    )


def test_exact_table_powers_of_two():
    """decay 0.5 with base lr 1: each parameter's (lr, weight decay) is an exact power of two."""
    model = tiny_vit(depth=2)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.125))
    got = {n: (g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    embed, b0, b1, head = 0.125, 0.25, 0.5, 1.0  # layer ids 0, 1, 2, 3 = N+1
    expected = {
        "cls_token": (embed, 0.0),
        "pos_embed": (embed, 0.0),
        "patch_embed.proj.weight": (embed, 0.125),
        "patch_embed.proj.bias": (embed, 0.0),
        "norm.weight": (b1, 0.0),  # timm: the final norm joins the last block
        "norm.bias": (b1, 0.0),
        "head.weight": (head, 0.125),
        "head.bias": (head, 0.0),
    }
    for i, lr in ((0, b0), (1, b1)):
        for sub in ("norm1", "norm2"):
            expected[f"blocks.{i}.{sub}.weight"] = (lr, 0.0)
            expected[f"blocks.{i}.{sub}.bias"] = (lr, 0.0)
        for sub in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            expected[f"blocks.{i}.{sub}.weight"] = (lr, 0.125)
            expected[f"blocks.{i}.{sub}.bias"] = (lr, 0.0)
    assert got == expected
    names = [g["name"] for g in groups]
    assert names == [
        "embed.no_decay",
        "embed.decay",
        "blocks.00.no_decay",
        "blocks.00.decay",
        "blocks.01.no_decay",
        "blocks.01.decay",
        "head.decay",
        "head.no_decay",
    ]


def test_weight_decay_zero_keeps_layer_decay():
    """The BEiT/MAE trap: with weight_decay=0 their builders dropped the layer scales."""
    groups = build_param_groups(tiny_vit(), dict(type="layer_decay", lr=1.0, decay=0.5, weight_decay=0.0))
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == [0.125, 0.25, 0.5, 1.0]
    assert all(g["weight_decay"] == 0.0 for g in groups)


def test_min_scale_scales_and_components():
    model = tiny_vit(depth=2)
    floor = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5, min_scale=0.3))
    assert min(g["lr_scale"] for g in floor) == 0.3
    explicit = build_param_groups(model, dict(type="layer_decay", lr=2.0, scales=[0.1, 0.2, 0.4, 1.0]))
    lr = {n: g["lr"] for g in explicit for n in g["param_names"]}
    assert lr["cls_token"] == pytest.approx(0.2) and lr["blocks.1.attn.qkv.weight"] == pytest.approx(0.8)
    comp = build_param_groups(
        model, dict(type="layer_decay", lr=1e-3, decay=0.5, component_scale={"ffn": 0.5}, component_lr={"head": 4e-3})
    )
    lr = {n: g["lr"] for g in comp for n in g["param_names"]}
    assert lr["blocks.1.mlp.fc1.weight"] == pytest.approx(1e-3 * 0.5 * 0.5)
    assert lr["blocks.1.attn.qkv.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr["head.weight"] == pytest.approx(4e-3)


def test_scales_wrong_length_is_a_clear_error():
    with pytest.raises(ValueError, match=r"4 entries: stem, 2 blocks, head"):
        build_param_groups(tiny_vit(), dict(type="layer_decay", lr=1.0, scales=[0.1, 0.2, 1.0]))


def test_frozen_excluded_and_depth_from_architecture():
    """Freezing the first block changes no other scale (timm #2691) and leaves it out."""
    model = tiny_vit(depth=3)
    all_groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5))
    for p in list(model.patch_embed.parameters()) + list(model.blocks[0].parameters()):
        p.requires_grad_(False)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5))
    before = {n: g["lr_scale"] for g in all_groups for n in g["param_names"]}
    after = {n: g["lr_scale"] for g in groups for n in g["param_names"]}
    assert not any(n.startswith(("blocks.0.", "patch_embed")) for n in after)
    assert all(before[n] == s for n, s in after.items())


def test_every_trainable_param_in_exactly_one_group_and_tied_once():
    model = tiny_vit()
    model.extra = torch.nn.Linear(8, 3)  # no adapter rule knows it
    with pytest.raises(
        ValueError, match=r"timm_vit: 2 trainable parameters match no layer/component rule \(e.g. 'extra.weight'"
    ):
        build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5), adapter="timm_vit")
    # auto now gives the generic `timm` adapter (timm's own rule: what its group_matcher leaves is head);
    # the ViT table is the strict one
    with pytest.warns(UserWarning, match="default LR"):
        recipe = dict(type="layer_decay", lr=1.0, decay=0.5, on_unmatched="default")
        groups = build_param_groups(model, recipe, adapter="timm_vit")
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(1 for p in model.parameters())
    # tied parameters (one tensor under two names) appear once
    tied = tiny_vit()
    tied.blocks[1].mlp.fc2.weight = tied.blocks[0].mlp.fc2.weight
    groups = build_param_groups(tied, dict(type="layer_decay", lr=1.0, decay=0.5))
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(tied.parameters()))


def test_groups_work_with_plain_torch_scheduler():
    """lr already equals base x lr_scale, so torch's own schedulers keep the layer decay (timm #2532)."""
    groups = build_param_groups(tiny_vit(), dict(type="layer_decay", lr=0.1, decay=0.5, weight_decay=0.05))
    opt = torch.optim.AdamW(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for _ in range(3):
        opt.step()
        sched.step()
    ratios = {round(g["lr"] / g["lr_scale"], 12) for g in opt.param_groups}
    assert len(ratios) == 1
    assert opt.param_groups[0]["param_names"]  # torch understands param_names


def test_lr_grid_report():
    model = tiny_vit()
    groups = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.5, weight_decay=0.05))
    text = format_lr_grid(groups, model, title="vit")
    lines = text.splitlines()
    assert lines[0].startswith("[vit] groups=8 tensors=")
    assert any(line.strip().startswith("blocks.01.decay") and "lr=0.0005 " in line for line in lines)
    assert "coverage: " in lines[-1] and "100.00%" in lines[-1]


@pytest.mark.parametrize(
    "recipe,match",
    [
        (dict(type="layer_decay", lr=1.0, decay=1.5), r"decay must lie in \(0, 1\]"),
        (dict(type="layer_decay", lr=1.0, decay=0.0), r"decay must lie in \(0, 1\]"),
        (dict(type="layer_decay", lr=-1.0, decay=0.5), r"must be >= 0"),
        (dict(type="layer_decay", lr=1.0), r"exactly one of `decay`"),
        (dict(type="layer_decay", lr=1.0, decay=0.5, decya=1), r"unknown keys \['decya'\]"),
        (dict(type="layer_dacay", lr=1.0), r"Did you mean 'layer_decay'"),
        (dict(type="flat", lr=1.0, on_unmatched="ignore"), r"on_unmatched must be"),
    ],
)
def test_bad_recipes(recipe, match):
    with pytest.raises((ValueError, KeyError, TypeError), match=match):
        build_param_groups(tiny_vit(), recipe)


def test_flat_keeps_the_no_decay_split():
    groups = build_param_groups(tiny_vit(), dict(type="flat", lr=1e-3, weight_decay=0.05))
    assert [(g["name"], g["weight_decay"]) for g in groups] == [("no_decay", 0.0), ("decay", 0.05)]


def test_recipe_as_a_dataclass():
    from dataclasses import dataclass

    @dataclass
    class MyRecipe:
        type: str = "layer_decay"
        lr: float = 1.0
        decay: float = 0.5
        weight_decay: float = 0.05

    groups = build_param_groups(tiny_vit(), MyRecipe())
    assert sorted({g["lr_scale"] for g in groups}) == [0.125, 0.25, 0.5, 1.0]


def test_a_strategy_subclass_overriding_role_factor_is_honoured():
    """The builder skips role_factor when no per-role LR is set, unless a subclass defines its own."""
    from recipes.strategies import LayerDecay

    class BiasesTwice(LayerDecay):
        def role_factor(self, name, info, lora, ndim):
            return 2.0 if name.endswith(".bias") else 1.0

    model = timm.create_model("vit_tiny_patch16_224", depth=2, num_classes=3)
    plain = build_param_groups(model, dict(type="layer_decay", lr=1e-3, decay=0.5))
    twice = build_param_groups(model, BiasesTwice(lr=1e-3, decay=0.5))
    scale = {n: g["lr_scale"] for g in plain for n in g["param_names"]}
    for g in twice:
        for n in g["param_names"]:
            assert g["lr_scale"] == scale[n] * (2.0 if n.endswith(".bias") else 1.0), n


def test_layer_labels_name_each_layer_id_for_reports():
    from recipes.param_groups import resolve_adapter

    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, depth=3, num_classes=3, embed_dim=8, num_heads=2
    )
    mmap = resolve_adapter(model).describe(model)
    assert [mmap.layer_label(i) for i in range(mmap.max_layer_id + 1)] == [
        "embed",
        "blocks.00",
        "blocks.01",
        "blocks.02",
        "head",
    ]
    assert mmap.labels == {}  # a ViT has no names of its own; the U-Net's are kohya's (tests/test_kohya.py)


def test_layer_decay_without_depth_says_how_to_give_it():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    with pytest.raises(ValueError, match=r"LayerDecay needs the model's depth.*adapter=<name>.*prefix="):
        build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.75))
    with pytest.raises(ValueError, match="layer_decay: give exactly one of"):  # option errors come first
        build_param_groups(model, dict(type="layer_decay", lr=1.0))


def test_the_strategy_argument_and_its_old_name():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match="`recipe` is now called `strategy`"):
        build_param_groups(model, recipe=dict(type="flat", lr=1.0))
    with pytest.raises(TypeError, match=r"unexpected arguments \['strategey'\]"):
        build_param_groups(model, strategey=dict(type="flat", lr=1.0))
    groups = build_param_groups(model, strategy=dict(type="flat", lr=1.0))
    assert isinstance(groups, list) and groups.model_map.adapter == "any" and groups.adapter is None
