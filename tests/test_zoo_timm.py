"""The generic timm adapter against timm itself: per-parameter parity with ``param_groups_layer_decay``.

Full-size models on the meta device. The default suite sweeps one architecture per timm module
(``timm.list_modules()``); the slow test sweeps every name ``timm.create_model`` accepts.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from recipes.adapter import Adapter
from recipes.param_groups import build_param_groups, resolve_adapter

timm = pytest.importorskip("timm")
from bench.timm_sweep import (  # noqa: E402
    DECAY,
    WEIGHT_DECAY,
    architectures,
    check,
    deprecated_names,
    differences,
    meta_model,
    timm_per_param,
)

# One architecture per timm 1.0.31 module: the one quickest to build on meta (bench/timm_sweep.py).
PER_MODULE = {
    "beit": "beit_base_patch16_384",
    "byoanet": "sebotnet33ts_256",
    "byobnet": "test_byobnet",
    "cait": "cait_s24_384",
    "coat": "coat_lite_mini",
    "convit": "convit_small",
    "convmixer": "convmixer_1536_20",
    "convnext": "test_convnext3",
    "cpubone": "cpubone_nano",
    "crossvit": "crossvit_9_240",
    "csatv2": "csatv2",
    "cspnet": "sedarknet21",
    "cspnext": "cspnext_tiny",
    "davit": "davit_tiny",
    "deepseek_vit": "deepseek_vit_412m_enc",
    "deit": "deit_base_patch16_224",
    "densenet": "densenet121",
    "dla": "dla34",
    "dpn": "dpn48b",
    "edgenext": "edgenext_xx_small",
    "efficientformer": "efficientformer_l1",
    "efficientformer_v2": "efficientformerv2_s1",
    "efficientnet": "test_efficientnet_evos",
    "efficientvim": "efficientvim_m3",
    "efficientvit_mit": "efficientvit_b0",
    "efficientvit_msra": "efficientvit_m1",
    "eva": "vit_tiny_patch16_dinov3_qkvb",
    "fasternet": "fasternet_t1",
    "fastvit": "fastvit_t8",
    "focalnet": "focalnet_tiny_srf",
    "gcvit": "gcvit_xxtiny",
    "gemma4_vit": "gemma4_vit_167m_enc",
    "ghostnet": "ghostnet_130",
    "hardcorenas": "hardcorenas_a",
    "hgnet": "hgnetv2_b0",
    "hiera": "hiera_tiny_224",
    "hieradet_sam2": "sam2_hiera_tiny",
    "hrnet": "hrnet_w18_small",
    "iformer": "iformer_s",
    "inception_next": "inception_next_atto",
    "inception_resnet_v2": "inception_resnet_v2",
    "inception_v3": "inception_v3",
    "inception_v4": "inception_v4",
    "lcnetv2": "lcnetv2_small",
    "levit": "levit_conv_512",
    "lowformer": "lowformer_e1",
    "mambaout": "test_mambaout",
    "maxxvit": "test_coatnet",
    "metaformer": "poolformerv2_s12",
    "mlp_mixer": "resmlp_12_224",
    "mobilenetv3": "tf_mobilenetv3_small_minimal_100",
    "mobilenetv5": "mobilenetv5_base",
    "mobilevit": "mobilevitv2_050",
    "mvitv2": "mvitv2_tiny",
    "naflexvit": "naflexvit_base_patch16_par_gap",
    "nasnet": "nasnetalarge",
    "nest": "nest_tiny_jx",
    "nextvit": "nextvit_small",
    "nfnet": "test_nfnet",
    "pit": "pit_xs_224",
    "pnasnet": "pnasnet5large",
    "pvt_v2": "pvt_v2_b1",
    "qwen3_vit": "qwen3_vit_88m_enc",
    "rdnet": "rdnet_tiny",
    "regnet": "regnetx_006",
    "repghost": "repghostnet_200",
    "repvit": "repvit_m2",
    "res2net": "res2net50_48w_2s",
    "resnest": "resnest14d",
    "resnet": "test_resnet",
    "resnetv2": "resnetv2_18d",
    "rexnet": "rexnet_100",
    "selecsls": "selecsls42",
    "senet": "legacy_seresnet18",
    "sequencer": "sequencer2d_s",
    "shvit": "shvit_s1",
    "sknet": "skresnet18",
    "starnet": "starnet_s050",
    "swiftformer": "swiftformer_xs",
    "swin_transformer": "swin_s3_tiny_224",
    "swin_transformer_v2": "swinv2_tiny_window16_256",
    "swin_transformer_v2_cr": "swinv2_cr_tiny_224",
    "tiny_vit": "tiny_vit_5m_224",
    "tnt": "tnt_b_patch16_224",
    "tresnet": "tresnet_m",
    "twins": "twins_svt_small",
    "vgg": "vgg11",
    "visformer": "visformer_small",
    "vision_transformer": "vit_xsmall_patch16_clip_224",
    "vision_transformer_hybrid": "vit_tiny_r_s16_p8_224",
    "vision_transformer_relpos": "vit_srelpos_small_patch16_224",
    "vision_transformer_sam": "samvit_base_patch16",
    "vitamin": "vitamin_base_224",
    "volo": "volo_d1_224",
    "vovnet": "vovnet39a",
    "xception": "legacy_xception",
    "xception_aligned": "xception41p",
    "xcit": "xcit_small_12_p8_384",
}  # fmt: skip


def test_every_timm_module_has_one_architecture():
    assert set(PER_MODULE) == set(timm.list_modules())
    for module, name in PER_MODULE.items():
        assert name in timm.list_models(module=module)


@pytest.mark.parametrize("name", sorted(PER_MODULE.values()))
def test_parity_one_architecture_per_module(name):
    model = meta_model(name)
    assert resolve_adapter(model).name in ("timm", "timm_vit")
    assert differences(model) == []


@pytest.mark.slow
def test_parity_every_architecture():
    records = [check(name) for name in architectures()]
    excluded = [r for r in records if r["status"] == "timm_error"]
    groupable = len(records) - len(excluded)
    parity = [r for r in records if r["status"] == "parity"]
    old = deprecated_names()  # aliases that build one of the current architectures
    print(f"timm parity: {len(parity)} of {groupable} ({len(records)} names, {len(excluded)} timm cannot group);")
    print(f"with the {len(old)} deprecated aliases: {len(parity) + len(old)} of {groupable + len(old)}")
    assert [(r["name"], r.get("error")) for r in records if r["status"] not in ("parity", "timm_error")] == []
    assert set(old.values()) <= {r["name"] for r in parity}


def _per_param(groups) -> dict[str, tuple[float, float]]:
    return {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}


def _info(name: str):
    model = meta_model(name)
    return model, resolve_adapter(model).describe(model).params


# (model, parameter, layer id, component, stack) on CNNs and hierarchical models
PLACES = [
    ("resnet50", "conv1.weight", 0, "embed", None),
    ("resnet50", "layer1.0.conv2.weight", 1, "conv", "blocks"),
    ("resnet50", "layer1.0.bn2.weight", 1, "norm", "blocks"),
    ("resnet50", "layer1.0.downsample.0.weight", 1, "downsample", "blocks"),
    ("resnet50", "layer4.2.conv3.weight", 16, "conv", "blocks"),
    ("resnet50", "fc.weight", 17, "head", None),
    ("swin_tiny_patch4_window7_224", "layers.1.downsample.reduction.weight", 3, "downsample", "blocks"),
    ("swin_tiny_patch4_window7_224", "layers.1.blocks.0.attn.qkv.weight", 3, "self_attn", "blocks"),
    ("swin_tiny_patch4_window7_224", "layers.3.blocks.1.mlp.fc2.weight", 12, "ffn", "blocks"),
    ("swin_tiny_patch4_window7_224", "norm.weight", 12, "norm", None),  # joins the last block
    ("swin_tiny_patch4_window7_224", "head.fc.weight", 13, "head", None),
    ("convnext_tiny", "stem.0.weight", 0, "embed", None),
    ("convnext_tiny", "stages.0.blocks.0.conv_dw.weight", 1, "conv", "blocks"),
    ("convnext_tiny", "stages.0.blocks.0.mlp.fc1.weight", 1, "ffn", "blocks"),
    ("convnext_tiny", "stages.0.blocks.0.gamma", 1, "block", "blocks"),
    ("convnext_tiny", "stages.1.downsample.1.weight", 4, "downsample", "blocks"),
    ("convnext_tiny", "head.norm.weight", 19, "head", None),
    ("efficientnet_b0", "blocks.1.0.conv_pw.weight", 2, "conv", "blocks"),
    ("efficientnet_b0", "conv_head.weight", 16, "conv", None),
    ("efficientnet_b0", "classifier.weight", 17, "head", None),
    ("maxvit_tiny_tf_224", "stages.0.blocks.0.attn_block.mlp.fc1.weight", 1, "ffn", "blocks"),
    ("maxvit_tiny_tf_224", "stages.0.blocks.0.attn_grid.attn.qkv.weight", 1, "self_attn", "blocks"),
    ("xcit_nano_12_p16_224", "cls_attn_blocks.1.attn.q.weight", 14, "self_attn", "cls_attn_blocks"),
    ("cait_xxs24_224", "blocks_token_only.1.attn.q.weight", 24, "self_attn", "blocks"),
]


@pytest.mark.parametrize(("model", "name", "layer_id", "component", "stack"), PLACES)
def test_layer_ids_components_and_stacks(model, name, layer_id, component, stack):
    info = _info(model)[1][name]
    assert (info.layer_id, info.component, info.stack) == (layer_id, component, stack)


def test_weight_decay_as_timm_where_the_generic_names_differ():
    """timm decays vit_relpos's rel-pos MLP weights and Hiera's pos_embed_win (no_weight_decay() omits them)."""
    strategy = dict(type="layer_decay", lr=1.0, decay=0.75, weight_decay=0.05)
    relpos = meta_model("vit_relpos_base_patch16_224")
    assert _per_param(build_param_groups(relpos, strategy))["blocks.0.attn.rel_pos.mlp.fc1.weight"][1] == 0.05
    hiera = meta_model("hiera_small_abswin_256")
    assert resolve_adapter(hiera).name == "timm"  # blocks with a proj: not the ViT table's
    assert _per_param(build_param_groups(hiera, strategy))["pos_embed_win"][1] == 0.05
    assert differences(relpos) == differences(hiera) == []


def test_component_lrs_on_a_cnn():
    model = meta_model("resnet18")
    strategy = dict(type="layer_decay", lr=1.0, decay=1.0, component_scale={"conv": 0.5, "norm": 0.1})
    got = _per_param(build_param_groups(model, strategy))
    assert got["layer1.0.conv1.weight"][0] == 0.5 and got["layer1.0.bn1.weight"][0] == 0.1
    assert got["fc.weight"][0] == got["conv1.weight"][0] == 1.0
    depth = dict(type="component_depth", default_lr=1.0, component_lr={"conv": 1.0}, min_depth_factor=0.5)
    got = _per_param(build_param_groups(model, depth))
    assert got["layer1.0.conv1.weight"][0] == 1.0 and got["layer4.1.conv2.weight"][0] == 0.5


def test_frozen_stem_keeps_the_depth():
    model = meta_model("convnext_tiny")
    before = _per_param(build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5)))
    for p in model.stem.parameters():
        p.requires_grad_(False)
    after = _per_param(build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5)))
    assert set(before) - set(after) == {n for n, _ in model.stem.named_parameters(prefix="stem")}
    assert all(before[n] == v for n, v in after.items())
    assert differences(model) == []  # timm counts frozen parameters in its layer map too


def test_without_group_matcher_timm_fallback():
    """A model without group_matcher gets timm's auto_group_layers (runs of 12, classifier last)."""
    base = type(meta_model("resnet18"))

    class NoMatcher(base):
        group_matcher = property(lambda self: (_ for _ in ()).throw(AttributeError("none")))

    with torch.device("meta"):
        model = NoMatcher(block=timm.models.resnet.BasicBlock, layers=(2, 2, 2, 2))
    model.pretrained_cfg = {"classifier": "fc"}
    assert not hasattr(model, "group_matcher") and resolve_adapter(model).name == "timm"  # a subclass
    assert differences(model) == []
    assert resolve_adapter(model).describe(model).params["fc.weight"].component == "head"


class _TimmIdsNoStacks(Adapter):
    """A custom adapter with the model's own layer ids but no block stack (the old IndexError)."""

    name = "custom"
    components = ((r".", "all"),)
    embed = (r".",)

    def layer_ids(self, model, names):
        from timm.models._manipulate import group_with_matcher

        return group_with_matcher(((n, None) for n in names), model.group_matcher(coarse=False), reverse=True)


@pytest.mark.parametrize(
    "name", ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "coatnet_0_rw_224", "efficientnet_b0"]
)
def test_custom_adapter_or_default_on_unmatched_is_no_index_error(name):
    model = meta_model(name)
    groups = build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5), _TimmIdsNoStacks())
    assert "layer_01.all.no_decay" in [g["name"] for g in groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = build_param_groups(
            model, dict(type="layer_decay", lr=1.0, on_unmatched="default", decay=0.5), "timm_vit"
        )
    assert sum(len(g["params"]) for g in groups) == sum(1 for _ in model.parameters())


def test_auto_picks_timm_vit_for_vits_and_timm_for_the_rest():
    assert resolve_adapter(meta_model("vit_tiny_patch16_224")).name == "timm_vit"
    for name in ("resnet18", "cait_xxs24_224", "xcit_nano_12_p16_224", "crossvit_tiny_240"):
        assert resolve_adapter(meta_model(name)).name == "timm", name


def test_a_module_added_to_a_timm_vit_is_named_and_timms_own_keep_parity():
    """auto: timm_vit (more specific than timm, which claims it too) names what its table does not know."""
    model = meta_model("vit_tiny_patch16_224")
    with torch.device("meta"):
        model.extra = torch.nn.Linear(8, 3)
    assert resolve_adapter(model).name == "timm_vit"
    with pytest.raises(ValueError, match=r"timm_vit: 2 trainable parameters .* \(e.g. 'extra.weight', 'extra.bias'\)"):
        build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5))
    strategy = dict(type="layer_decay", lr=1.0, decay=DECAY, weight_decay=WEIGHT_DECAY, on_unmatched="default")
    with pytest.warns(UserWarning, match=r"'extra.weight', 'extra.bias'\); they get the default LR"):
        groups = build_param_groups(model, strategy)
    ours = {n: (g["lr_scale"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    theirs = timm_per_param(model)
    own = [n for n in theirs if not n.startswith("extra.")]
    assert len(own) == 152 and {n: ours[n] for n in own} == {n: theirs[n] for n in own}  # timm's parity
    assert resolve_adapter(model, "timm").describe(model).unmatched == ["extra.weight", "extra.bias"]  # by name too


@pytest.mark.parametrize(
    ("name", "where"),
    [("resnet18", "extra"), ("convnext_tiny", "extra"), ("efficientnet_b0", "extra"), ("resnet18", "layer4.extra")],
)
def test_a_module_added_to_any_timm_model_is_named_and_timms_own_keep_parity(name, where):
    """auto on a CNN (the generic adapter): what timm's group_matcher leaves to the head and timm's own
    architecture does not have is named (timm puts it in the head group at full LR, unsaid)."""
    model = meta_model(name)
    parent = model.get_submodule(where.rpartition(".")[0])
    with torch.device("meta"):
        parent.add_module(where.rpartition(".")[2], torch.nn.Linear(8, 3))
    assert resolve_adapter(model).name == "timm"
    added = [f"{where}.weight", f"{where}.bias"]
    with pytest.raises(ValueError, match=rf"timm: 2 trainable parameters .* \(e.g. '{added[0]}', '{added[1]}'\)"):
        build_param_groups(model, dict(type="layer_decay", lr=1.0, decay=0.5))
    strategy = dict(type="layer_decay", lr=1.0, decay=DECAY, weight_decay=WEIGHT_DECAY, on_unmatched="default")
    with pytest.warns(UserWarning, match=rf"'{added[0]}', '{added[1]}'\); they get the default LR"):
        groups = build_param_groups(model, strategy)
    ours, theirs = _per_param(groups), timm_per_param(model)
    own = [n for n in theirs if n not in added]
    assert {n: ours[n] for n in own} == {n: theirs[n] for n in own}  # timm's parity on timm's own
    assert theirs[added[0]][0] == 1.0 and ours[added[0]][0] == 1.0  # timm: the head's scale; here: said, base LR


@pytest.mark.parametrize(
    ("name", "options"),
    [("convnext_tiny", dict(head_norm_first=True)), ("resnet18", dict(num_classes=0, stem_type="deep")),
     ("levit_128", dict(distilled=False)), ("efficientnet_b0", dict(num_classes=3))],
)  # fmt: skip
def test_options_of_timms_own_architectures_are_never_taken_for_added_modules(name, options):
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = timm.create_model(name, **options)
    assert resolve_adapter(model).describe(model).unmatched == []
    assert differences(model) == []


def test_a_subclass_of_a_timm_vit_class_goes_to_timm_vit_and_other_timm_models_to_timm():
    from timm.models.vision_transformer import VisionTransformer

    class MyViT(VisionTransformer):  # a user's own subclass, in a module of its own
        pass

    with torch.device("meta"):
        model = MyViT(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=3)
    assert resolve_adapter(model).name == "timm_vit"
    assert resolve_adapter(meta_model("resnet18")).name == "timm"
